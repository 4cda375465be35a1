"""One Wan transformer block, plus the portrait controls' frame-aligned expression attention.

  x += gate     * SelfAttention(LN(x) * (1 + scale) + shift)        (3D RoPE, RMS-normed q, k)
  x += CrossAttention(LN_affine(x), text)                           (when a text context is given)
  x += keep     * FrameCrossAttention(LN_affine(x), expression)     (controls: each latent frame
                                                                     attends to its own tokens)
  x += c_gate   * FFN(LN(x) * (1 + c_scale) + c_shift)              (GELU, tanh approximation)

Modulation is per latent frame: `[B, F, 6, D]` (F = 1 when it does not vary over time). Tokens
are laid out on a `TokenGrid`; per-frame work happens on the grid view `[B, *grid.shape, D]`,
which keeps a `context` split of the sequence (fp_jax/models/token_grid.py).
"""
import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from fp_jax.models import layers, rope
from fp_jax.models.dit_config import FFN_HIDDEN, FFN_OUTPUT, SELF_ATTENTION_OUTPUT
from fp_jax.parallel.sharding import constrain


class Attention(nnx.Module):
  """Wan attention: q, k, v projections, RMS norm over all heads on q and k, output projection."""

  def __init__(self, dim, heads, eps, rngs, *, zero_out=False, dtype=None):
    self.heads = heads
    self.to_q = layers.linear(dim, dim, ("embed", "heads"), rngs, dtype=dtype)
    self.to_k = layers.linear(dim, dim, ("embed", "heads"), rngs, dtype=dtype)
    self.to_v = layers.linear(dim, dim, ("embed", "heads"), rngs, dtype=dtype)
    self.to_out = layers.linear(dim, dim, ("heads", "embed"), rngs, zero=zero_out, dtype=dtype)
    self.norm_q = layers.RMSNorm(dim, eps)
    self.norm_k = layers.RMSNorm(dim, eps)

  def project(self, x, context):
    split = lambda t: t.reshape(*t.shape[:-1], self.heads, -1)
    q = split(self.norm_q(self.to_q(x)))
    k = split(self.norm_k(self.to_k(context)))
    return q, k, split(self.to_v(context))

  def output(self, out):
    return self.to_out(out.reshape(*out.shape[:-2], -1))


class Block(nnx.Module):

  def __init__(self, config, rngs):
    dim, dtype = config.dim, config.compute_dtype
    self.config = config
    self.scale_shift_table = nnx.Param(jax.random.normal(rngs.params(), (6, dim)) / dim ** 0.5)
    self.attn1 = Attention(dim, config.heads, config.eps, rngs, dtype=dtype)
    self.norm2 = layers.AffineLayerNorm(dim, config.eps)
    self.attn2 = Attention(dim, config.heads, config.eps, rngs, dtype=dtype)
    if config.expression_cross_attention:
      self.expression_attn = Attention(dim, config.heads, config.eps, rngs, zero_out=True, dtype=dtype)
    self.ffn_in = layers.linear(dim, config.ffn_dim, ("embed", "mlp"), rngs, dtype=dtype)
    self.ffn_out = layers.linear(config.ffn_dim, dim, ("mlp", "embed"), rngs, dtype=dtype)

  def __call__(self, x, grid, modulation, rope_tables, context=None, expression=None,
               expression_keep=None):
    """x `[B, L, D]`; grid a `TokenGrid`; modulation `[B, F or 1, 6, D]`; expression tokens
    `[B, F, Te, D]`."""
    config = self.config
    batch, length, dim = x.shape
    mod = grid.per_frame(self.scale_shift_table[...][None, None] + modulation.astype(jnp.float32))
    # Each broadcasts over the grid view's rows and columns.
    shift, scale, gate, c_shift, c_scale, c_gate = (mod[..., i, :] for i in range(6))
    per_frame = lambda t: t.reshape(batch, *grid.shape, dim)
    flat = lambda t: t.reshape(batch, length, dim)
    x = constrain(x, ("batch", "length", "act_embed"))

    h = flat(layers.layer_norm(per_frame(x), config.eps) * (1 + scale) + shift).astype(x.dtype)
    q, k, v = self.attn1.project(h, h)
    q, k = rope.apply_rope(q, *rope_tables), rope.apply_rope(k, *rope_tables)
    q, k, v = (constrain(t, ("batch", "length", "act_heads", None)) for t in (q, k, v))
    out = checkpoint_name(self.attn1.output(config.self_attention(q, k, v)), SELF_ATTENTION_OUTPUT)
    x = flat(per_frame(x).astype(jnp.float32) + per_frame(out) * gate).astype(x.dtype)

    h = self.norm2(x).astype(x.dtype)
    if context is not None:
      q, k, v = self.attn2.project(h, context)
      x = x + self.attn2.output(config.cross_attention(q, k, v))
    if expression is not None:
      x = x + self._expression_attention(h, grid, expression, expression_keep)

    h = flat(layers.layer_norm(per_frame(x), config.eps) * (1 + c_scale) + c_shift).astype(x.dtype)
    hidden = constrain(checkpoint_name(self.ffn_in(h), FFN_HIDDEN), ("batch", "length", "act_mlp"))
    out = checkpoint_name(self.ffn_out(jax.nn.gelu(hidden, approximate=True)), FFN_OUTPUT)
    return flat(per_frame(x).astype(jnp.float32) + per_frame(out).astype(jnp.float32) * c_gate
                ).astype(x.dtype)

  def _expression_attention(self, h, grid, tokens, keep):
    """Each latent frame's queries attend to that frame's expression tokens only: one einsum
    over the per-frame view (a few dozen keys per frame; no kernel or reshuffle needed)."""
    batch, length, dim = h.shape
    frames, per_frame = tokens.shape[1], tokens.shape[2]
    q, k, v = self.expression_attn.project(h, tokens.reshape(batch, frames * per_frame, dim))
    heads, head_dim = q.shape[-2:]
    q = q.reshape(batch, *grid.shape, heads, head_dim)
    k, v = (t.reshape(batch, frames, per_frame, heads, head_dim) for t in (k, v))
    g = grid.letters()
    logits = jnp.einsum(f"b{g}nd,bftnd->b{g}nt", q * jnp.asarray(head_dim ** -0.5, q.dtype), k,
                        preferred_element_type=jnp.float32)
    weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    out = jnp.einsum(f"b{g}nt,bftnd->b{g}nd", weights, v).reshape(batch, length, heads, head_dim)
    return self.expression_attn.output(out) * keep.astype(h.dtype)[:, None, None]
