"""The `blockwise` attention kernel: values and gradients against softmax attention in float64
numpy (the analytic gradient), at uneven lengths, and O(L) memory in the backward pass."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fp_jax.models.dit_config import DiTConfig
from fp_jax.parallel import attention
from fp_jax.parallel.blockwise_attention import blockwise_attention


def numpy_attention_and_grads(q, k, v, d_out):
  """softmax(q k^T / sqrt(d)) v and its vjp with `d_out`, written out by hand in float64."""
  q, k, v, d_out = (np.asarray(a, np.float64) for a in (q, k, v, d_out))
  scale = q.shape[-1] ** -0.5
  scores = np.einsum("bqnd,bknd->bnqk", q, k) * scale
  weights = np.exp(scores - scores.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  out = np.einsum("bnqk,bknd->bqnd", weights, v)
  d_weights = np.einsum("bqnd,bknd->bnqk", d_out, v)
  d_scores = weights * (d_weights - np.sum(d_weights * weights, -1, keepdims=True))
  d_q = np.einsum("bnqk,bknd->bqnd", d_scores, k) * scale
  d_k = np.einsum("bnqk,bqnd->bknd", d_scores, q) * scale
  d_v = np.einsum("bnqk,bqnd->bknd", weights, d_out)
  return out, (d_q, d_k, d_v)


@pytest.mark.parametrize("q_len, k_len, block", [(100, 100, 32), (77, 50, 20), (64, 64, 64), (9, 40, 320)])
def test_values_and_gradients_match_softmax_attention(q_len, k_len, block):
  rng = np.random.default_rng(q_len)
  q = rng.standard_normal((2, q_len, 3, 16)).astype(np.float32)
  k, v = (rng.standard_normal((2, k_len, 3, 16)).astype(np.float32) for _ in range(2))
  d_out = rng.standard_normal(q.shape).astype(np.float32)
  want_out, want_grads = numpy_attention_and_grads(q, k, v, d_out)
  out, vjp = jax.vjp(lambda q, k, v: blockwise_attention(q, k, v, block), q, k, v)
  np.testing.assert_allclose(out, want_out, atol=2e-6, rtol=0)
  for got, want in zip(vjp(jnp.asarray(d_out)), want_grads):
    assert np.max(np.abs(got - want)) <= 1e-5 * np.max(np.abs(want))


def test_bfloat16_inputs_keep_their_dtype_and_stay_close():
  rng = np.random.default_rng(0)
  q, k, v = (jnp.asarray(rng.standard_normal((1, 48, 2, 16)), jnp.bfloat16) for _ in range(3))
  out, vjp = jax.vjp(lambda q, k, v: blockwise_attention(q, k, v, 16), q, k, v)
  grads = vjp(jnp.ones_like(out))
  assert out.dtype == jnp.bfloat16 and all(g.dtype == jnp.bfloat16 for g in grads)
  want, _ = numpy_attention_and_grads(*(np.asarray(a, np.float32) for a in (q, k, v)), np.ones(out.shape))
  assert np.max(np.abs(np.asarray(out, np.float32) - want)) < 0.05


def test_backward_memory_is_linear_in_the_sequence():
  """Doubling the tokens quadruples the einsum kernel's backward temporaries (whole [B, N, L, L]
  score tensors) but only doubles the blockwise kernel's (one [block, L] tile at a time)."""
  def temp_bytes(kernel, length):
    q = jax.ShapeDtypeStruct((1, length, 2, 32), jnp.float32)
    grad = jax.jit(jax.grad(lambda q, k, v: jnp.sum(kernel(q, k, v)), argnums=(0, 1, 2)))
    return grad.lower(q, q, q).compile().memory_analysis().temp_size_in_bytes

  blockwise = lambda q, k, v: blockwise_attention(q, k, v, 256)
  assert temp_bytes(attention.einsum_attention, 4096) / temp_bytes(attention.einsum_attention, 2048) > 3.5
  assert temp_bytes(blockwise, 4096) / temp_bytes(blockwise, 2048) < 2.5
  assert temp_bytes(blockwise, 4096) < 1 * 2 * 4096 * 4096 * 4 / 4  # a quarter of one score tensor


def test_remat_that_keeps_the_residuals_does_not_rerun_the_forward():
  """Under `offload_attention` the backward reuses the forward's output and log-sum-exp (kept in
  host memory); under `full` remat it runs the forward loops again. Same values either way."""
  rng = np.random.default_rng(0)
  q, k, v = (jnp.asarray(rng.standard_normal((1, 64, 2, 16)), jnp.float32) for _ in range(3))
  weight = jnp.asarray(rng.standard_normal((16, 16)), jnp.float32)
  layer = lambda q, k, v: jnp.sum(jnp.sin(blockwise_attention(q @ weight, k, v, 16)))
  loops, results = {}, {}
  for remat in ("full", "offload_attention"):
    policy = DiTConfig(dim=32, heads=2, layers=1, ffn_dim=32, remat=remat).remat_policy()
    step = jax.jit(jax.value_and_grad(jax.checkpoint(layer, policy=policy), argnums=(0, 1, 2)))
    loops[remat] = step.lower(q, k, v).compile().as_text().count(" while(")
    results[remat] = step(q, k, v)
  # The forward is two nested loops (heads, query tiles), as is the backward.
  assert loops == {"full": 6, "offload_attention": 4}
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), results["full"],
               results["offload_attention"])
