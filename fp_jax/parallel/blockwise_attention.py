"""Blockwise attention in plain XLA: the `blockwise` kernel, for backends without a fused one (CPU).

XLA:CPU runs `softmax(q k^T) v` as separate passes over the whole `[B, N, Lq, Lk]` score tensor,
and the backward pass reads and writes it several times more; at video lengths that tensor is far
larger than the caches, so attention runs at memory speed. Here the scores only ever exist one
tile at a time: a loop over (example, head), and within it over query blocks, keeps a
`[block, Lk]` tile in cache.

- Forward: each query block sees every key, so its softmax is exact in one pass (no running
  maximum, unlike FlashAttention's key loop); it keeps the output and the log-sum-exp per query.
- Backward (custom VJP): the probabilities are recomputed from the saved log-sum-exp, tile by
  tile; dk and dv accumulate over the query blocks of a head in the loop carry. Nothing of size
  `Lq x Lk` is saved between the passes, so the memory is O(L) rather than O(L^2).
- Each head is read from, and written back to, the `[B, L, N, D]` arrays in place by a dynamic
  slice: no heads-first transpose of q, k, v or the results ever crosses memory.

Queries are padded to whole blocks; padded queries attend normally and are dropped (their
output cotangent is zero, so they add nothing to dk and dv). Keys are never padded.
"""
import functools

import jax
from jax.ad_checkpoint import checkpoint_name
import jax.numpy as jnp

# Queries a tile: a [640, Lk] fp32 tile stays in cache at CPU video lengths. At the dit_step
# bench's shapes (1280 tokens, 8 heads of 64) 640 ran attention fwd+bwd 1.07x as fast as 320 and
# 1.06x as fast as 1280 (median of 25 interleaved rounds).
BLOCK = 640
# The checkpoint name of the output and log-sum-exp the backward needs (as splash names its own):
# a remat policy that keeps them spares the backward a second forward loop.
RESIDUALS = "attention_residuals"


def _pad_queries(x, block):
  return jnp.pad(x, ((0, 0), (0, -x.shape[1] % block)) + ((0, 0),) * (x.ndim - 2))


def _head_start(x, index):
  """Where head `index` (example-major) of `x [B, L, N, ...]` starts."""
  example, head = jnp.divmod(index, x.shape[2])
  return (example, 0, head) + (0,) * (x.ndim - 3)


def _read_head(x, index):
  """Head `index` of `x [B, L, N, ...]` as `[L, ...]`."""
  return jax.lax.dynamic_slice(x, _head_start(x, index), (1, x.shape[1], 1) + x.shape[3:])[0, :, 0]


def _write_head(x, index, value):
  return jax.lax.dynamic_update_slice(x, value[None, :, None].astype(x.dtype), _head_start(x, index))


def _scores(a, b):
  """a `[M, D]`, b `[N, D]` -> `[M, N]` fp32 (queries x keys, or keys x queries)."""
  return jnp.einsum("md,nd->mn", a, b, preferred_element_type=jnp.float32)


def _heads(x):
  return x.shape[0] * x.shape[2]


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def blockwise_attention(q, k, v, block=BLOCK):
  """q `[B, Lq, N, D]`, k and v `[B, Lk, N, D]` -> `[B, Lq, N, D]`."""
  return _forward(q, k, v, block)[0]


def _forward(q, k, v, block):
  block = min(block, q.shape[1])
  scale = jnp.asarray(q.shape[-1] ** -0.5, q.dtype)
  q_padded = _pad_queries(q, block)
  batch, padded_len, heads, dim = q_padded.shape

  def tile(k_head, v_head, q_block):
    scores = _scores(q_block, k_head)
    peak = jnp.max(scores, axis=-1, keepdims=True)
    weights = jnp.exp(scores - peak)
    total = jnp.sum(weights, axis=-1, keepdims=True)
    out = jnp.einsum("qk,kd->qd", weights.astype(v_head.dtype), v_head,
                     preferred_element_type=jnp.float32) / total
    return out.astype(q.dtype), (peak + jnp.log(total))[:, 0]

  def head(index, carry):
    out, logsumexp = carry
    q_blocks = (_read_head(q_padded, index) * scale).reshape(-1, block, dim)
    tiles = functools.partial(tile, _read_head(k, index), _read_head(v, index))
    out_head, logsumexp_head = jax.lax.map(tiles, q_blocks)
    return (_write_head(out, index, out_head.reshape(padded_len, dim)),
            _write_head(logsumexp, index, logsumexp_head.reshape(padded_len)))

  out, logsumexp = jax.lax.fori_loop(
      0, _heads(q), head, (jnp.zeros_like(q_padded), jnp.zeros((batch, padded_len, heads), jnp.float32)))
  out = checkpoint_name(out[:, :q.shape[1]], RESIDUALS)
  return out, (q, k, v, out, checkpoint_name(logsumexp, RESIDUALS))


def _backward_rule(block, residuals, d_out):
  q, k, v, out, logsumexp = residuals
  block = min(block, q.shape[1])
  scale = q.shape[-1] ** -0.5
  q_padded, d_out_padded = _pad_queries(q, block), _pad_queries(d_out, block)
  dim = q.shape[-1]
  # Softmax backward's row term: sum_k p dp = sum_d out * d_out (per query).
  row_terms = _pad_queries(jnp.sum(d_out.astype(jnp.float32) * out.astype(jnp.float32), axis=-1), block)

  # Tiles are key-major ([Lk, block]) so that every product contracts the last axis of its left
  # operand (dq is made transposed): XLA:CPU hands only those to its fast matmul library
  # (YNNPACK); a product contracting the left operand's first axis fell back to a slower one.
  def tile(k_head, v_head, k_head_t, carry, blocks):
    d_k, d_v = carry
    q_block, d_out_block, logsumexp_block, row_block = blocks
    weights_t = jnp.exp(_scores(k_head, q_block) - logsumexp_block[None, :])
    d_v = d_v + jnp.einsum("kq,qd->kd", weights_t, d_out_block, preferred_element_type=jnp.float32)
    d_weights_t = jnp.einsum("kd,qd->kq", v_head, d_out_block, preferred_element_type=jnp.float32)
    d_scores_t = weights_t * (d_weights_t - row_block[None, :])
    d_k = d_k + jnp.einsum("kq,qd->kd", d_scores_t, q_block, preferred_element_type=jnp.float32)
    d_q_t = jnp.einsum("dk,kq->dq", k_head_t, d_scores_t, preferred_element_type=jnp.float32)
    return (d_k, d_v), d_q_t

  def head(index, carry):
    d_q, d_k, d_v = carry
    k_head, v_head = _read_head(k, index), _read_head(v, index)
    blocks = (_read_head(q_padded, index) * jnp.asarray(scale, q.dtype), _read_head(d_out_padded, index),
              _read_head(logsumexp, index), _read_head(row_terms, index))
    blocks = tuple(x.reshape(-1, block, *x.shape[1:]) for x in blocks)
    zeros = jnp.zeros(k_head.shape, jnp.float32)
    tiles = functools.partial(tile, k_head, v_head, k_head.T)
    (d_k_head, d_v_head), d_q_t = jax.lax.scan(tiles, (zeros, zeros), blocks)
    # Transposed back outside the tile loop: inside it, XLA folds the transpose into the product.
    d_q_head = d_q_t.swapaxes(1, 2).reshape(-1, dim) * scale
    return (_write_head(d_q, index, d_q_head), _write_head(d_k, index, d_k_head),
            _write_head(d_v, index, d_v_head))

  d_q, d_k, d_v = jax.lax.fori_loop(0, _heads(q), head,
                                    (jnp.zeros_like(q_padded), jnp.zeros_like(k), jnp.zeros_like(v)))
  return d_q[:, :q.shape[1]], d_k, d_v


blockwise_attention.defvjp(_forward, _backward_rule)
