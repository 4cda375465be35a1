"""Attention kernels, chosen by name: `einsum`, `xla`, `splash` (TPU), `ulysses` (context parallel).

Every kernel takes q `[B, Lq, N, D]`, k and v `[B, Lk, N, D]` and returns `[B, Lq, N, D]`.
- `einsum`: einsum, fp32 softmax, einsum: the whole score tensor at once (simple; tiny shapes).
- `blockwise`: one (head, query block) tile of scores at a time, O(L) memory, recomputing
  backward (fp_jax/parallel/blockwise_attention.py); the fastest on CPU at video lengths. Under
  a mesh it runs per shard, as `splash` does.
- `xla`: `jax.nn.dot_product_attention` with XLA's own implementation (the score tensor whole,
  on any backend).
- `cudnn`: `jax.nn.dot_product_attention` with cuDNN's fused flash attention (GPU only; bf16: it
  takes no fp32, so fp32 inputs compute in bf16 and come back fp32). `ulysses_cudnn`: `ulysses`
  with it on the full sequences.
- `splash`: Pallas splash attention for TPU (`interpret=True` runs it on CPU for tests). A Mosaic
  kernel cannot be partitioned by XLA, so under a mesh it runs in a `shard_map` (`per_shard`):
  examples split over the batch axes, heads over `tensor`, queries over `context` (each shard's
  queries attend to every key: keys and values are gathered over `context`).
- `ulysses`: tokens sharded over the mesh's `context` axis; an all-to-all trades the token split
  for a head split, attention runs on full sequences, and a second all-to-all trades back.
- `ulysses_splash`: `ulysses` with splash attention on the full sequences (TPU).
"""
import functools
import math

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from data_pipeline.errors import InputError
from fp_jax.parallel.blockwise_attention import RESIDUALS as BLOCKWISE_RESIDUALS, blockwise_attention


def einsum_attention(q, k, v):
  scale = q.shape[-1] ** -0.5
  logits = jnp.einsum("bqnd,bknd->bnqk", q * jnp.asarray(scale, q.dtype), k,
                      preferred_element_type=jnp.float32)
  weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
  return jnp.einsum("bnqk,bknd->bqnd", weights, v)


def xla_attention(q, k, v):
  return jax.nn.dot_product_attention(q, k, v, implementation="xla")


def cudnn_attention(q, k, v):
  if jax.default_backend() != "gpu":
    raise InputError(f"attention 'cudnn' runs on GPUs only (this backend: {jax.default_backend()}); "
                     "choose 'xla', 'einsum' or 'blockwise'")
  dtype = q.dtype if q.dtype in (jnp.bfloat16, jnp.float16) else jnp.bfloat16
  out = jax.nn.dot_product_attention(q.astype(dtype), k.astype(dtype), v.astype(dtype),
                                     implementation="cudnn")
  return out.astype(q.dtype)


SPLASH_BLOCK = 128  # the smallest splash tile (a TPU lane width); sequences pad to whole tiles
# Largest tiles: queries, keys in the forward, keys in the fused backward. The fused backward keeps
# one partial dq per key tile (summed after the kernel), so its key tile is long; 2048 keys of a
# 128-d head is the longest whose tiles fit a v5p core's scoped VMEM (with padding segments).
SPLASH_MAX_BLOCKS = dict(q=512, kv=1024, kv_backward=2048)
# The checkpoint name of the splash and blockwise kernels' residuals (output and log-sum-exp): a
# remat policy that keeps them (`offload_attention`) spares the backward a second forward kernel.
ATTENTION_RESIDUALS = BLOCKWISE_RESIDUALS


def splash_tile(length, cap=None):
  """The base tile for `length` tokens: a multiple of 128 up to `cap` (512); short sequences in one."""
  return min(cap or SPLASH_MAX_BLOCKS["q"], -(-length // SPLASH_BLOCK) * SPLASH_BLOCK)


def splash_padded_length(length, cap=None):
  """Tokens after padding to whole base tiles (what the kernel computes on)."""
  tile = splash_tile(length, cap)
  return -(-length // tile) * tile


def _longest_tile(padded, tile, cap):
  """The longest tile <= `cap`, `tile` times a power of two, that divides `padded` tokens."""
  while tile * 2 <= cap and padded % (tile * 2) == 0:
    tile *= 2
  return tile


def splash_block_sizes(q_len, k_len, max_blocks=None):
  """Splash's tiles for these lengths, each up to `max_blocks` (128 times powers of two), with
  the fused backward: one kernel for dq, dk and dv, which recomputes the logits once, not twice."""
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as kernel  # pylint: disable=g-import-not-at-top
  caps = {**SPLASH_MAX_BLOCKS, **(max_blocks or {})}
  q_tile, k_tile = splash_tile(q_len, caps["q"]), splash_tile(k_len, caps["q"])
  k_padded = splash_padded_length(k_len, caps["q"])
  return kernel.BlockSizes(
      block_q=q_tile, block_kv=_longest_tile(k_padded, k_tile, caps["kv"]), block_kv_compute=k_tile,
      block_q_dkv=q_tile, block_kv_dkv=_longest_tile(k_padded, k_tile, caps["kv_backward"]),
      block_kv_dkv_compute=k_tile, use_fused_bwd_kernel=True)


def _split(mesh, axes, size):
  """The mesh axes among `axes` as one PartitionSpec entry, if they split `size` evenly."""
  axes = tuple(a for a in axes if a in mesh.axis_names and mesh.shape[a] > 1)
  ways = math.prod(mesh.shape[a] for a in axes)
  if not axes or size % ways:
    return None
  return axes if len(axes) > 1 else axes[0]


def per_shard(local, q, k, v):
  """`local(q, k, v)` on each shard's own arrays (see above): a kernel XLA must not partition."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or mesh.size == 1 or mesh.are_all_axes_manual:  # one device, or inside a shard_map
    return local(q, k, v)
  batch = _split(mesh, ("data", "fsdp"), q.shape[0])
  heads = _split(mesh, ("tensor",), q.shape[2])
  q_spec = PartitionSpec(batch, _split(mesh, ("context",), q.shape[1]), heads, None)
  kv_spec = PartitionSpec(batch, None, heads, None)
  return jax.shard_map(local, in_specs=(q_spec, kv_spec, kv_spec), out_specs=q_spec, check_vma=False)(q, k, v)


def splash_attention(q, k, v, interpret=False, max_blocks=None):
  """Pallas splash attention; under a multi-device mesh, one kernel per shard (see above)."""
  return per_shard(functools.partial(splash_kernel, interpret=interpret, max_blocks=max_blocks), q, k, v)


def blockwise(q, k, v):
  """Blockwise attention (fp_jax/parallel/blockwise_attention.py), one loop per shard."""
  return per_shard(blockwise_attention, q, k, v)


def splash_kernel(q, k, v, interpret=False, max_blocks=None):
  """Pallas splash attention (non-causal) on local arrays, padding the tokens to whole tiles."""
  from jax.experimental.pallas.ops.tpu.splash_attention import (  # pylint: disable=g-import-not-at-top
      splash_attention_kernel as kernel, splash_attention_mask as masks)
  batch, q_len, heads, dim = q.shape
  k_len = k.shape[1]
  cap = (max_blocks or {}).get("q")
  q_pad, k_pad = splash_padded_length(q_len, cap) - q_len, splash_padded_length(k_len, cap) - k_len
  mask = masks.MultiHeadMask([masks.FullMask((q_len + q_pad, k_len + k_pad))])
  splash = kernel.make_splash_mha(mask, head_shards=1, q_seq_shards=1,
                                  block_sizes=splash_block_sizes(q_len, k_len, max_blocks),
                                  residual_checkpoint_name=ATTENTION_RESIDUALS, interpret=interpret)
  q_ids = jnp.concatenate([jnp.zeros(q_len, jnp.int32), jnp.ones(q_pad, jnp.int32)])
  k_ids = jnp.concatenate([jnp.zeros(k_len, jnp.int32), jnp.full(k_pad, 2, jnp.int32)])
  segments = kernel.SegmentIds(q=q_ids, kv=k_ids)  # padding attends to nothing real
  to_heads_first = lambda x, n: jnp.pad(x, ((0, 0), (0, n), (0, 0), (0, 0))).transpose(0, 2, 1, 3)
  qh = to_heads_first(q * jnp.asarray(dim ** -0.5, q.dtype), q_pad)
  kh, vh = to_heads_first(k, k_pad), to_heads_first(v, k_pad)
  # One kernel call per head: the fused backward's partial dq (one per key tile) then exist for
  # one head at a time (10 heads at 32k tokens would hold 1.3 GiB of them). The calls are
  # unrolled, not a loop: a remat policy may park their residuals in host memory, and the TPU
  # compiler slices host buffers along one axis only (the layers' scan), not a heads loop too.
  call = jax.vmap(lambda a, b, c: splash(a, b, c, segment_ids=segments))
  outs = [call(qh[:, i:i + 1], kh[:, i:i + 1], vh[:, i:i + 1]) for i in range(heads)]
  return jnp.concatenate(outs, axis=1).transpose(0, 2, 1, 3)[:, :q_len]


def ulysses_attention(q, k, v, inner=einsum_attention, axis="context"):
  """Context-parallel attention over the mesh axis `axis` (all-to-all, DeepSpeed-Ulysses)."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or axis not in mesh.axis_names or mesh.shape[axis] == 1:
    return inner(q, k, v)
  head_axis = "tensor" if "tensor" in mesh.axis_names else None
  ways = mesh.shape[axis] * (mesh.shape[head_axis] if head_axis else 1)
  if q.shape[2] % ways:
    raise InputError(f"ulysses attention: {q.shape[2]} heads do not split {ways} ways "
                     f"('{axis}' x 'tensor')")
  batch_axes = tuple(a for a in ("data", "fsdp") if a in mesh.axis_names)
  spec = PartitionSpec(batch_axes, axis, head_axis, None)

  @functools.partial(jax.shard_map, in_specs=(spec, spec, spec), out_specs=spec, check_vma=False)
  def attend(q, k, v):
    # Local: tokens/ways of every head -> all tokens of heads/ways.
    to_heads = lambda x: jax.lax.all_to_all(x, axis, split_axis=2, concat_axis=1, tiled=True)
    out = inner(to_heads(q), to_heads(k), to_heads(v))
    return jax.lax.all_to_all(out, axis, split_axis=1, concat_axis=2, tiled=True)

  return attend(q, k, v)


KERNELS = {
    "einsum": einsum_attention,
    "xla": xla_attention,
    "cudnn": cudnn_attention,
    "blockwise": blockwise,
    "splash": splash_attention,
    "ulysses": ulysses_attention,
    "ulysses_splash": functools.partial(ulysses_attention, inner=splash_kernel),
    "ulysses_cudnn": functools.partial(ulysses_attention, inner=cudnn_attention),
}


def get_kernel(name):
  if name not in KERNELS:
    raise InputError(f"unknown attention kernel {name!r}; choose from {sorted(KERNELS)}")
  return KERNELS[name]
