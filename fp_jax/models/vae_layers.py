"""Layers of Wan's causal video VAE, channels-last (`[B, T, H, W, C]`), with a feature cache.

A causal convolution sees only the present and past frames. Run chunk by chunk, each causal
layer keeps the last input frames it needs in `cache` (a dict, one entry per layer, threaded
through the calls), so a long video is processed in bounded memory and gives the same result
as the whole clip at once. An empty cache means zeros, exactly the causal padding.
"""
import itertools

import jax
import jax.numpy as jnp
from flax import nnx

_ids = itertools.count()


def conv(x, kernel, bias, stride=(1, 1, 1), spatial_padding=((0, 0), (0, 0))):
  """3D convolution (no time padding) of channels-last `x` with a `[kt, kh, kw, in, out]` kernel.

  Written as one 2D convolution over the time taps stacked along channels: the same numbers,
  and on XLA:CPU 7x faster forward and 4x faster forward+backward than its 3D convolution.
  """
  batch, frames, _, _, channels = x.shape
  taps, height, width, _, out_channels = kernel.shape
  out_frames = (frames - taps) // stride[0] + 1
  last = stride[0] * (out_frames - 1) + 1
  stacked = jnp.concatenate([x[:, t:t + last:stride[0]] for t in range(taps)], axis=-1)
  stacked = stacked.reshape(batch * out_frames, *x.shape[2:4], taps * channels)
  kernel_2d = kernel.transpose(1, 2, 0, 3, 4).reshape(height, width, taps * channels, out_channels)
  out = jax.lax.conv_general_dilated(stacked, kernel_2d, stride[1:], spatial_padding,
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return (out + bias).reshape(batch, out_frames, *out.shape[1:])


def he_normal(key, shape):
  """Kernels that keep the activations' scale through SiLU (std sqrt(2 / fan_in)). Training from
  scratch with PyTorch's default (uniform, 1/sqrt(fan_in)) shrank the signal at every plain conv
  of the decoder and made the VAE learn several times slower; converted checkpoints overwrite
  the initial weights anyway."""
  fan_in = 1
  for size in shape[:-1]:
    fan_in *= size
  return jax.random.normal(key, shape) * (2.0 / fan_in) ** 0.5


def newest_frame_normal(key, shape):
  """`he_normal` over one frame's taps, all on the newest frame: a causal video convolution that
  starts as the same image convolution on every frame (kernels "inflated" from 2D), so the young
  VAE learns each frame's content before it learns to mix frames."""
  return jnp.zeros(shape).at[-1].set(he_normal(key, shape[1:]))


def newest_frame_identity(shape):
  """A `[kt, 1, 1, C, k*C]` time kernel that copies the newest frame's channels into each of its
  k output groups: the temporal resamplers start as nearest resampling in time."""
  taps, _, _, channels, out_channels = shape
  copies = jnp.tile(jnp.eye(channels), (1, out_channels // channels))
  return jnp.zeros(shape).at[taps - 1, 0, 0].set(copies)


class CausalConv3d(nnx.Module):
  """Zero-pads time only in front (`kt - 1` frames, or the cached frames instead)."""

  def __init__(self, in_dim, out_dim, kernel, rngs, stride=(1, 1, 1), spatial_padding=None, causal=True,
               zero=False, copy_newest=False):
    kernel = (kernel,) * 3 if isinstance(kernel, int) else tuple(kernel)
    shape = (*kernel, in_dim, out_dim)
    if zero:
      initial = jnp.zeros(shape)
    elif copy_newest:
      initial = newest_frame_identity(shape)
    else:
      initial = newest_frame_normal(rngs.params(), shape)
    self.kernel = nnx.Param(initial)
    self.bias = nnx.Param(jnp.zeros((out_dim,)))
    self.stride = tuple(stride)
    pad = (kernel[1] // 2) if spatial_padding is None else spatial_padding
    self.spatial_padding = ((pad, pad), (pad, pad))
    self.history = kernel[0] - 1 if causal else 0  # not causal: the caller supplies the past
    self.key = f"conv{next(_ids)}"

  def __call__(self, x, cache=None):
    if self.history:
      past = None if cache is None else cache.get(self.key)
      if past is None:
        past = jnp.zeros((x.shape[0], self.history, *x.shape[2:]), x.dtype)
      x = jnp.concatenate([past, x], axis=1)
      if cache is not None:
        cache[self.key] = x[:, -self.history:]
    return conv(x, self.kernel[...], self.bias[...], self.stride, self.spatial_padding)


class RMSNorm(nnx.Module):
  """`x / |x|` over channels, times `sqrt(C) * gamma` (Wan's RMS_norm)."""

  def __init__(self, dim):
    self.gamma = nnx.Param(jnp.ones((dim,)))

  def __call__(self, x):
    norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True))
    return x / jnp.maximum(norm, 1e-12) * (x.shape[-1] ** 0.5) * self.gamma[...]


class ResidualBlock(nnx.Module):

  def __init__(self, in_dim, out_dim, rngs):
    self.norm1 = RMSNorm(in_dim)
    self.conv1 = CausalConv3d(in_dim, out_dim, 3, rngs)
    self.norm2 = RMSNorm(out_dim)
    # Zero: each residual block starts as its shortcut, so depth does not blur the signal early on.
    self.conv2 = CausalConv3d(out_dim, out_dim, 3, rngs, zero=True)
    self.conv_shortcut = nnx.data(CausalConv3d(in_dim, out_dim, 1, rngs) if in_dim != out_dim else None)

  def __call__(self, x, cache=None, first=True):
    del first
    shortcut = x if self.conv_shortcut is None else self.conv_shortcut(x)
    x = self.conv1(jax.nn.silu(self.norm1(x)), cache)
    x = self.conv2(jax.nn.silu(self.norm2(x)), cache)
    return x + shortcut


class AttentionBlock(nnx.Module):
  """Single-head self-attention over each frame's pixels."""

  def __init__(self, dim, rngs):
    self.norm = RMSNorm(dim)
    self.to_qkv = nnx.Linear(dim, 3 * dim, rngs=rngs)
    self.proj = nnx.Linear(dim, dim, rngs=rngs)

  def __call__(self, x, cache=None, first=True):
    del cache, first
    batch, frames, height, width, dim = x.shape
    h = self.to_qkv(self.norm(x).reshape(batch * frames, height * width, dim))
    q, k, v = jnp.split(h, 3, axis=-1)
    weights = jax.nn.softmax(jnp.einsum("bqc,bkc->bqk", q, k) / dim ** 0.5, axis=-1)
    out = self.proj(jnp.einsum("bqk,bkc->bqc", weights, v))
    return x + out.reshape(x.shape)


def _conv2d_per_frame(x, kernel, bias, stride, padding):
  batch, frames = x.shape[:2]
  out = jax.lax.conv_general_dilated(x.reshape(batch * frames, *x.shape[2:]), kernel, stride, padding,
                                     dimension_numbers=("NHWC", "HWIO", "NHWC")) + bias
  return out.reshape(batch, frames, *out.shape[1:])


class Resample(nnx.Module):
  """Spatial 2x down/up sampling, with Wan's causal 2x temporal step for the `3d` modes.

  Down (encoder): spatial stride-2 conv, then, for `downsample3d`, the first frame passes and the
  rest go through a stride-2 time conv that looks one frame back. Up (decoder): for `upsample3d`
  the first frame passes and every later frame becomes two (a causal time conv to 2C channels),
  then nearest 2x upsampling and a 3x3 conv to C/2 channels (`up_dim`: Wan 2.2's keep C).
  """

  def __init__(self, dim, mode, rngs, up_dim=None):
    self.mode = mode
    out_dim = (up_dim or dim // 2) if mode.startswith("up") else dim  # Wan 2.2's blocks keep `dim`
    self.resample = nnx.Param(he_normal(rngs.params(), (3, 3, dim, out_dim)))
    self.resample_bias = nnx.Param(jnp.zeros((out_dim,)))
    self.time_conv = nnx.data(None)
    if mode == "downsample3d":
      # It looks back through the explicit one-frame cache of `_halve_frames`, not zero padding.
      # Both time convolutions start as nearest resampling in time.
      self.time_conv = CausalConv3d(dim, dim, (3, 1, 1), rngs, stride=(2, 1, 1), spatial_padding=0,
                                    causal=False, copy_newest=True)
    elif mode == "upsample3d":
      self.time_conv = CausalConv3d(dim, 2 * dim, (3, 1, 1), rngs, spatial_padding=0, copy_newest=True)
    self.key = f"resample{next(_ids)}"

  def __call__(self, x, cache=None, first=True):
    if self.mode == "upsample3d":
      x = self._double_frames(x, cache, first)
    if self.mode.startswith("up"):
      x = jnp.repeat(jnp.repeat(x, 2, axis=2), 2, axis=3)
      x = _conv2d_per_frame(x, self.resample[...], self.resample_bias[...], (1, 1), ((1, 1), (1, 1)))
    else:
      x = _conv2d_per_frame(x, self.resample[...], self.resample_bias[...], (2, 2), ((0, 1), (0, 1)))
    if self.mode == "downsample3d":
      x = self._halve_frames(x, cache, first)
    return x

  def _halve_frames(self, x, cache, first):
    if first:
      rest = x
      head = x[:, :1]
    else:
      rest = jnp.concatenate([cache[self.key], x], axis=1)
      head = None
    if cache is not None:
      cache[self.key] = x[:, -1:]
    parts = [] if head is None else [head]
    if rest.shape[1] >= 3:
      parts.append(self.time_conv(rest))
    return jnp.concatenate(parts, axis=1)

  def _double_frames(self, x, cache, first):
    head, rest = (x[:, :1], x[:, 1:]) if first else (None, x)
    parts = [] if head is None else [head]
    if not rest.shape[1] and cache is not None:  # the next chunk's time conv starts from zeros
      cache[self.time_conv.key] = jnp.zeros((x.shape[0], 2, *x.shape[2:]), x.dtype)
    if rest.shape[1]:
      doubled = self.time_conv(rest, cache)  # [B, t, H, W, 2C]: (first, second) of each frame
      batch, frames, height, width, channels = doubled.shape
      doubled = doubled.reshape(batch, frames, height, width, 2, channels // 2)
      parts.append(doubled.transpose(0, 1, 4, 2, 3, 5).reshape(batch, 2 * frames, height, width, -1))
    return jnp.concatenate(parts, axis=1)


# -- Wan 2.2: parameter-free shortcuts around the resampling blocks, and pixel patches -----------


def average_down(x, out_dim, factor_t, factor_s):
  """Space- and time-to-channels by (`factor_t`, `factor_s`, `factor_s`), then the mean of each group
  of consecutive channels down to `out_dim` (diffusers' `AvgDown3D`). Time is zero-padded in front
  to a multiple of `factor_t`, so the first frame stands alone as the causal path's does."""
  pad = -x.shape[1] % factor_t
  if pad:
    x = jnp.pad(x, ((0, 0), (pad, 0), (0, 0), (0, 0), (0, 0)))
  batch, frames, height, width, channels = x.shape
  x = x.reshape(batch, frames // factor_t, factor_t, height // factor_s, factor_s, width // factor_s, factor_s,
                channels)
  x = x.transpose(0, 1, 3, 5, 7, 2, 4, 6)  # channel order (C, t, h, w), as diffusers flattens it
  x = x.reshape(*x.shape[:4], out_dim, -1)
  return jnp.mean(x, axis=-1)


def duplicate_up(x, out_dim, factor_t, factor_s, first):
  """The inverse layout of `average_down`: channels repeated, then spread over (time, height, width)
  (diffusers' `DupUp3D`). A clip's first latent frame becomes one frame, as on the causal path."""
  batch, frames, height, width, channels = x.shape
  x = jnp.repeat(x, out_dim * factor_t * factor_s * factor_s // channels, axis=-1)
  x = x.reshape(batch, frames, height, width, out_dim, factor_t, factor_s, factor_s)
  x = x.transpose(0, 1, 5, 2, 6, 3, 7, 4)
  x = x.reshape(batch, frames * factor_t, height * factor_s, width * factor_s, out_dim)
  return x[:, factor_t - 1:] if first else x


def patchify(video, patch):
  """`[B, T, H, W, C]` -> `[B, T, H/p, W/p, C*p*p]`, channel order (C, column offset, row offset)
  as diffusers' Wan 2.2 VAE folds pixels."""
  if patch == 1:
    return video
  batch, frames, height, width, channels = video.shape
  x = video.reshape(batch, frames, height // patch, patch, width // patch, patch, channels)
  x = x.transpose(0, 1, 2, 4, 6, 5, 3)
  return x.reshape(batch, frames, height // patch, width // patch, channels * patch * patch)


def unpatchify(x, patch):
  if patch == 1:
    return x
  batch, frames, height, width, channels = x.shape
  x = x.reshape(batch, frames, height, width, channels // (patch * patch), patch, patch)
  x = x.transpose(0, 1, 2, 6, 3, 5, 4)
  return x.reshape(batch, frames, height * patch, width * patch, -1)
