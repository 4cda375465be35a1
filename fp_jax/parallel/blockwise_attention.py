"""Blockwise attention in plain XLA: the `blockwise` kernel, for backends without a fused one (CPU).

XLA:CPU runs `softmax(q k^T) v` as separate passes over the whole `[B, N, Lq, Lk]` score tensor,
and the backward pass reads and writes it several times more; at video lengths that tensor is far
larger than the caches, so attention runs at memory speed. Here the scores only ever exist one
tile at a time: a loop over (head, query block) keeps a `[block, Lk]` tile in cache.

- Forward: each query block sees every key, so its softmax is exact in one pass (no running
  maximum, unlike FlashAttention's key loop); it keeps the output and the log-sum-exp per query.
- Backward (custom VJP): the probabilities are recomputed from the saved log-sum-exp, tile by
  tile; dk and dv accumulate over the query blocks of a head in the loop carry. Nothing of size
  `Lq x Lk` is saved between the passes, so the memory is O(L) rather than O(L^2).

Queries are padded to whole blocks; padded queries attend normally and are dropped (their
output cotangent is zero, so they add nothing to dk and dv). Keys are never padded.
"""
import functools

import jax
import jax.numpy as jnp

BLOCK = 320  # queries a tile: a [320, Lk] fp32 tile stays in cache at CPU video lengths


def _heads_first(x):
  """[B, L, N, D] -> [B * N, L, D]."""
  batch, length, heads, dim = x.shape
  return x.transpose(0, 2, 1, 3).reshape(batch * heads, length, dim)


def _query_blocks(x, block):
  """[B, L, N, D] -> [B * N, L / block, block, D], padding L to whole blocks."""
  x = jnp.pad(x, ((0, 0), (0, -x.shape[1] % block), (0, 0), (0, 0)))
  h = _heads_first(x)
  return h.reshape(h.shape[0], -1, block, h.shape[-1])


def _from_blocks(x, shape):
  """[B * N, L / block, block, D] -> [B, L, N, D] of `shape`, dropping padded queries."""
  batch, length, heads, dim = shape
  x = x.reshape(batch, heads, -1, dim)[:, :, :length]
  return x.transpose(0, 2, 1, 3)


def _scores(a, b):
  """a `[M, D]`, b `[N, D]` -> `[M, N]` fp32 (queries x keys, or keys x queries)."""
  return jnp.einsum("md,nd->mn", a, b, preferred_element_type=jnp.float32)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def blockwise_attention(q, k, v, block=BLOCK):
  """q `[B, Lq, N, D]`, k and v `[B, Lk, N, D]` -> `[B, Lq, N, D]`."""
  return _forward(q, k, v, block)[0]


def _forward(q, k, v, block):
  block = min(block, q.shape[1])
  scale = q.shape[-1] ** -0.5
  q_blocks = _query_blocks(q * jnp.asarray(scale, q.dtype), block)

  def head(args):
    q_head, k_head, v_head = args

    def tile(q_block):
      scores = _scores(q_block, k_head)
      peak = jnp.max(scores, axis=-1, keepdims=True)
      weights = jnp.exp(scores - peak)
      total = jnp.sum(weights, axis=-1, keepdims=True)
      out = jnp.einsum("qk,kd->qd", weights.astype(v_head.dtype), v_head,
                       preferred_element_type=jnp.float32) / total
      return out.astype(q.dtype), (peak + jnp.log(total))[:, 0]

    return jax.lax.map(tile, q_head)

  out_blocks, logsumexp = jax.lax.map(head, (q_blocks, _heads_first(k), _heads_first(v)))
  out = _from_blocks(out_blocks, q.shape)
  return out, (q, k, v, out, logsumexp)


def _forward_rule(q, k, v, block):
  return _forward(q, k, v, block)


def _backward_rule(block, residuals, d_out):
  q, k, v, out, logsumexp = residuals
  block = min(block, q.shape[1])
  scale = q.shape[-1] ** -0.5
  q_blocks = _query_blocks(q * jnp.asarray(scale, q.dtype), block)
  d_out_blocks = _query_blocks(d_out, block)
  # Softmax backward's row term: sum_k p dp = sum_d out * d_out (per query).
  row_terms = jnp.sum(_query_blocks(d_out.astype(jnp.float32) * out.astype(jnp.float32), block), axis=-1)

  def head(args):
    q_head, d_out_head, logsumexp_head, row_head, k_head, v_head = args
    k_head_t = k_head.T

    # Tiles are key-major ([Lk, block]) so that every product contracts the last axis of its
    # left operand (dq is made transposed): XLA:CPU hands only those to its fast matmul library
    # (YNNPACK); a product contracting the left operand's first axis fell back to a slower one.
    def tile(carry, blocks):
      d_k, d_v = carry
      q_block, d_out_block, logsumexp_block, row_block = blocks
      weights_t = jnp.exp(_scores(k_head, q_block) - logsumexp_block[None, :])
      d_v = d_v + jnp.einsum("kq,qd->kd", weights_t, d_out_block, preferred_element_type=jnp.float32)
      d_weights_t = jnp.einsum("kd,qd->kq", v_head, d_out_block, preferred_element_type=jnp.float32)
      d_scores_t = weights_t * (d_weights_t - row_block[None, :])
      d_k = d_k + jnp.einsum("kq,qd->kd", d_scores_t, q_block, preferred_element_type=jnp.float32)
      d_q_t = jnp.einsum("dk,kq->dq", k_head_t, d_scores_t, preferred_element_type=jnp.float32)
      return (d_k, d_v), d_q_t

    zeros = jnp.zeros(k_head.shape, jnp.float32)
    (d_k, d_v), d_q_t = jax.lax.scan(tile, (zeros, zeros),
                                     (q_head, d_out_head, logsumexp_head, row_head))
    return d_q_t, d_k, d_v

  d_q_t, d_k, d_v = jax.lax.map(head, (q_blocks, d_out_blocks, logsumexp, row_terms,
                                       _heads_first(k), _heads_first(v)))
  # Transposed back outside the loops: inside, XLA folds the transpose into the product.
  d_q = d_q_t.swapaxes(-1, -2) * scale
  batch, k_len, heads, dim = k.shape
  from_heads = lambda x: x.reshape(batch, heads, k_len, dim).transpose(0, 2, 1, 3)
  return (_from_blocks(d_q, q.shape).astype(q.dtype), from_heads(d_k).astype(k.dtype),
          from_heads(d_v).astype(v.dtype))


blockwise_attention.defvjp(_forward_rule, _backward_rule)
