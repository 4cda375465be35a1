"""The DiT on 8 simulated devices equals the DiT on one; attention kernels agree."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fp_jax.models import layers
from fp_jax.models.build import create_dit
from fp_jax.models.dit_config import DiTConfig
from fp_jax.parallel import attention, global_batches, mesh as mesh_lib
from fp_jax.parallel.sharding import use_mesh

CONFIG = dict(dim=64, heads=4, layers=2, ffn_dim=128, text_dim=32, expression="both")


def inputs(seed=0, batch=4, frames=2, height=4, width=4):
  rng = np.random.default_rng(seed)
  video = 1 + 4 * (frames - 1)
  normal = lambda *shape: rng.standard_normal(shape).astype(np.float32)
  return dict(
      latents=normal(batch, frames, height, width, 16), timestep=rng.uniform(0, 1000, batch).astype(np.float32),
      context=normal(batch, 5, 32), reference=normal(batch, height, width, 16),
      normals=normal(batch, frames, height, width, 16), rays=normal(batch, frames, height, width, 4 * 8 * 8 * 6),
      expression=normal(batch, video, 512), head_pose=normal(batch, video, 10),
      target=normal(batch, frames, height, width, 16))


def loss_fn(model, batch):
  batch = dict(batch)
  target = batch.pop("target")
  out = model(batch.pop("latents"), batch.pop("timestep"), batch.pop("context"), **batch)
  return jnp.mean(jnp.square(out - target)), out


@nnx.jit
def loss_and_grads(model, batch):
  (loss, out), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model, batch)
  return loss, out, grads


def trained_like_params(config):
  """Parameters with the zero-initialised control weights moved away from zero."""
  model = create_dit(config, mesh_lib.make_mesh({"data": -1}, jax.devices()[:1]))
  state = nnx.state(model, nnx.Param)
  keys = iter(jax.random.split(jax.random.key(0), 1000))
  return jax.tree.map(lambda p: p + 0.02 * jax.random.normal(next(keys), p.shape), state)


def run(config, mesh_sizes, params, devices=None):
  mesh = mesh_lib.make_mesh(mesh_sizes, devices)
  model = create_dit(config, mesh)
  state = nnx.state(model, nnx.Param)
  nnx.update(model, jax.tree.map(lambda new, old: jax.device_put(new, old.sharding), params, state))
  batch = global_batches.to_global(inputs(), mesh)
  with use_mesh(mesh):
    loss, out, grads = loss_and_grads(model, batch)
  return np.asarray(out), jax.tree.map(np.asarray, nnx.state(grads, nnx.Param).to_pure_dict()), model


@pytest.fixture(scope="module")
def single_device():
  config = DiTConfig(**CONFIG)
  params = trained_like_params(config)
  out, grads, _ = run(config, {"data": -1}, params, jax.devices()[:1])
  return params, out, grads


def assert_close(got, want, tolerance=1e-5):
  assert np.max(np.abs(got - want)) <= tolerance * max(np.max(np.abs(want)), 1e-6)


@pytest.mark.parametrize("mesh_sizes, kernel, overrides", [
    ({"data": 2, "fsdp": 2, "tensor": 2}, "einsum", {}),
    ({"data": 2, "context": 2, "tensor": 2}, "ulysses", {"remat": "full"}),
    ({"fsdp": 4, "tensor": 2}, "xla", {"scan_layers": False, "remat": "save_matmuls"}),
    ({"fsdp": 2, "tensor": 4}, "einsum", {"remat": "offload_inputs"}),  # layer inputs in host memory
    ({"data": 2, "fsdp": 2, "tensor": 2}, "blockwise", {"remat": "offload_attention"}),  # a loop per shard
])
def test_sharded_outputs_and_gradients_equal_single_device(single_device, mesh_sizes, kernel, overrides):
  params, want_out, want_grads = single_device
  config = DiTConfig(**CONFIG, attention=kernel, **overrides)
  out, grads, model = run(config, mesh_sizes, params)
  assert_close(out, want_out)
  jax.tree.map(assert_close, grads, want_grads)
  # The weights really are split: FSDP on `embed`, tensor parallel on heads.
  kernel_sharding = model.blocks.attn1.to_q.kernel[...].sharding
  expected_embed = "fsdp" if mesh_sizes.get("fsdp", 1) > 1 else None
  assert kernel_sharding.spec[1:] in ((expected_embed, "tensor"), ("fsdp", "tensor"))


def test_attention_kernels_agree():
  rng = np.random.default_rng(0)
  q, k, v = (jnp.asarray(rng.standard_normal((2, 200, 2, 64)), jnp.float32) for _ in range(3))
  reference = np.asarray(attention.einsum_attention(q, k, v))
  # Independent check of the reference itself: softmax(q k^T / sqrt(d)) v in numpy.
  logits = np.einsum("bqnd,bknd->bnqk", np.asarray(q, np.float64), np.asarray(k, np.float64)) / 8.0
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  np.testing.assert_allclose(reference, np.einsum("bnqk,bknd->bqnd", weights, np.asarray(v, np.float64)),
                             atol=1e-5)
  np.testing.assert_allclose(attention.xla_attention(q, k, v), reference, atol=1e-5)
  splash = functools.partial(attention.splash_attention, interpret=True)
  np.testing.assert_allclose(splash(q, k[:, :150], v[:, :150]),
                             attention.einsum_attention(q, k[:, :150], v[:, :150]), atol=1e-5)


def equations(jaxpr):
  """Every equation of a jaxpr, those of nested jaxprs (scan bodies, remat) included."""
  for eqn in jaxpr.eqns:
    yield eqn
    for param in eqn.params.values():
      inner = getattr(param, "jaxpr", param)
      if hasattr(inner, "eqns"):
        yield from equations(inner)


def matmuls(jaxpr):
  return sum(eqn.primitive.name == "dot_general" for eqn in equations(jaxpr))


def test_remat_policies_that_keep_matmul_outputs_recompute_fewer_and_agree(single_device):
  """The backward of `full` remat reruns a layer's forward matmuls; `offload_attention` keeps the
  attention kernel's outputs (its loop matmuls not rerun), `offload_projections` the outputs of
  the self-attention's output projection and of the FFN's two matmuls as well. Values and
  gradients stay those of the model without remat."""
  params, want_out, want_grads = single_device
  batch = jax.tree.map(jnp.asarray, inputs())
  counts = {}
  for remat in ("none", "full", "offload_attention", "offload_projections"):
    config = DiTConfig(**CONFIG, attention="blockwise", remat=remat)
    graphdef, state = nnx.split(create_dit(config, mesh_lib.make_mesh({"data": -1}, jax.devices()[:1])))
    loss = lambda state: loss_fn(nnx.merge(graphdef, state), batch)[0]
    counts[remat] = matmuls(jax.make_jaxpr(jax.grad(loss))(state).jaxpr)
    if remat == "offload_projections":
      out, grads, _ = run(config, {"data": -1}, params, jax.devices()[:1])
      assert_close(out, want_out)
      jax.tree.map(assert_close, grads, want_grads)
  recomputed = {remat: count - counts["none"] for remat, count in counts.items()}
  # The self-attention loop's two forward matmuls (the short cross-attention runs as an einsum,
  # rerun under both policies).
  assert recomputed["full"] - recomputed["offload_attention"] == 2
  assert recomputed["offload_attention"] - recomputed["offload_projections"] == 3  # to_out, ffn_in, ffn_out


def scan_outputs(jaxpr, shape):
  """dtypes of the `shape`d outputs of every scan in a jaxpr (nested ones included)."""
  return {var.aval.dtype for eqn in equations(jaxpr) if eqn.primitive.name == "scan"
          for var in eqn.outvars if var.aval.shape == shape}


def test_bfloat16_layers_scan_over_weights_cast_once(monkeypatch):
  """Computing in bfloat16, the stacked Dense weights are cast before the layer scan, so the scan
  stacks the per-layer gradients in bfloat16 (half the memory); outputs and gradients are exactly
  those of casting inside each layer. Norm scales and modulation tables stay float32."""
  config = DiTConfig(**CONFIG, dtype="bfloat16")
  model = create_dit(config, mesh_lib.make_mesh({"data": -1}, jax.devices()[:1]))
  graphdef, state = nnx.split(model)
  batch = jax.tree.map(jnp.asarray, inputs())
  loss = lambda state: loss_fn(nnx.merge(graphdef, state), batch)
  cast = layers.dense_weights_cast(model.blocks, nnx.state(model.blocks), jnp.bfloat16)
  assert cast["ffn_in"]["kernel"].value.dtype == cast["attn1"]["to_q"]["bias"].value.dtype == jnp.bfloat16
  assert cast["norm2"]["bias"].value.dtype == cast["scale_shift_table"].value.dtype == jnp.float32
  kernel_stack = (config.layers, config.dim, config.ffn_dim)

  def gradients():
    """(output, gradients, dtypes of the scans' kernel-stack-shaped outputs)."""
    stacked = scan_outputs(jax.make_jaxpr(jax.grad(lambda s: loss(s)[0]))(state).jaxpr, kernel_stack)
    (_, out), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(state)
    return out, grads, stacked

  out, grads, stacked = gradients()
  monkeypatch.setattr(layers, "dense_weights_cast", lambda module, state, dtype: state)
  plain_out, plain_grads, plain_stacked = gradients()
  # Cast inside each layer, the backward scan stacks the kernel gradients in float32.
  assert stacked == {jnp.dtype(jnp.bfloat16)} and jnp.dtype(jnp.float32) in plain_stacked
  np.testing.assert_array_equal(out, plain_out)
  jax.tree.map(np.testing.assert_array_equal, grads, plain_grads)
