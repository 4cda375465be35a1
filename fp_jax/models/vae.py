"""Wan's causal video VAE in Flax NNX: 2.1's (8x spatial, 4x temporal, 16 latent channels) and 2.2's.

Wan 2.2's (`residual=True`, `patch_size=2`: 16x spatial, 48 channels at its published size) folds
2x2 pixels into channels before the encoder and back after the decoder, and wraps every
resampling block in a parameter-free shortcut (channels averaged down, or repeated up), so each
block learns a residual on a fixed resampling of its input.

`1 + 4k` frames map to `1 + k` latent frames. `encode`/`decode` run the whole clip at once, or
chunk by chunk with a feature cache (`chunked=True`: the first frame, then 4 frames at a time to
encode; one latent frame at a time to decode) in bounded memory; both give the same result.
Module and parameter names follow diffusers' `AutoencoderKLWan`, so its weights load directly
(`fp_jax/export/diffusers_vae.py`).
"""
import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from data_pipeline.errors import require
from fp_jax.models.vae_linear import LinearPath
from fp_jax.models.vae_layers import (AttentionBlock, CausalConv3d, Resample, ResidualBlock, RMSNorm, average_down,
                                     duplicate_up, patchify, unpatchify)

WAN_LATENTS_MEAN = (-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921)
WAN_LATENTS_STD = (2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
                   3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160)


@dataclasses.dataclass(frozen=True)
class VAEConfig:
  base_dim: int = 96
  z_dim: int = 16
  dim_mult: tuple = (1, 2, 4, 4)
  num_res_blocks: int = 2
  temporal_downsample: tuple = (False, True, True)
  latents_mean: tuple = WAN_LATENTS_MEAN
  latents_std: tuple = WAN_LATENTS_STD
  residual: bool = False  # Wan 2.2's down and up blocks, with parameter-free shortcuts
  patch_size: int = 1  # pixels folded into channels around the encoder and decoder (Wan 2.2: 2)
  decoder_base_dim: int = 0  # 0: base_dim (Wan 2.2's decoder is wider than its encoder)
  linear_path: bool = False  # a linear code beside the nets (fp_jax/models/vae_linear.py); not Wan's

  @property
  def spatial_stride(self):
    return self.patch_size * 2 ** (len(self.dim_mult) - 1)

  @property
  def temporal_stride(self):
    return 2 ** sum(bool(t) for t in self.temporal_downsample)


def residual_blocks(in_dim, out_dim, count, rngs):
  """`count` residual blocks, the first from `in_dim` to `out_dim` and the rest at `out_dim`."""
  return nnx.List([ResidualBlock(in_dim if i == 0 else out_dim, out_dim, rngs) for i in range(count)])


class MidBlock(nnx.Module):

  def __init__(self, dim, rngs):
    self.resnets = nnx.List([ResidualBlock(dim, dim, rngs), ResidualBlock(dim, dim, rngs)])
    self.attentions = nnx.List([AttentionBlock(dim, rngs)])

  def __call__(self, x, cache=None, first=True):
    x = self.resnets[0](x, cache)
    return self.resnets[1](self.attentions[0](x), cache)


class Encoder(nnx.Module):

  def __init__(self, config, rngs):
    dims = [config.base_dim * m for m in (1,) + tuple(config.dim_mult)]
    self.conv_in = CausalConv3d(3 * config.patch_size ** 2, dims[0], 3, rngs)
    blocks = []
    for level, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
      mode = None
      if level != len(config.dim_mult) - 1:
        mode = "downsample3d" if config.temporal_downsample[level] else "downsample2d"
      if config.residual:
        blocks.append(ResidualDownBlock(in_dim, out_dim, config.num_res_blocks, mode, rngs))
        continue
      for _ in range(config.num_res_blocks):
        blocks.append(ResidualBlock(in_dim, out_dim, rngs))
        in_dim = out_dim
      if mode:
        blocks.append(Resample(out_dim, mode, rngs))
    self.down_blocks = nnx.List(blocks)
    self.mid_block = MidBlock(dims[-1], rngs)
    self.norm_out = RMSNorm(dims[-1])
    self.conv_out = CausalConv3d(dims[-1], 2 * config.z_dim, 3, rngs)

  def __call__(self, x, cache=None, first=True):
    x = self.conv_in(x, cache)
    for block in self.down_blocks:
      x = block(x, cache, first)
    x = self.mid_block(x, cache)
    return self.conv_out(jax.nn.silu(self.norm_out(x)), cache)


class ResidualDownBlock(nnx.Module):
  """Wan 2.2: residual blocks and the downsampling, plus the input averaged down to the output's
  shape (time halved too for `downsample3d`)."""

  def __init__(self, in_dim, out_dim, num_res_blocks, mode, rngs):
    self.factors = (2 if mode == "downsample3d" else 1, 2 if mode else 1)
    folded = in_dim * self.factors[0] * self.factors[1] ** 2
    require(folded % out_dim == 0, f"a residual VAE level cannot average {folded} folded channels down to "
            f"{out_dim} (widths from vae.base_dim and vae.dim_mult)")
    self.out_dim = out_dim
    self.resnets = residual_blocks(in_dim, out_dim, num_res_blocks, rngs)
    self.downsampler = nnx.data(Resample(out_dim, mode, rngs) if mode else None)

  def __call__(self, x, cache=None, first=True):
    shortcut = average_down(x, self.out_dim, *self.factors)
    for resnet in self.resnets:
      x = resnet(x, cache)
    if self.downsampler is not None:
      x = self.downsampler(x, cache, first)
    return x + shortcut


class ResidualUpBlock(nnx.Module):
  """Wan 2.2: residual blocks and the upsampling (keeping the width), plus the input repeated up to
  the output's shape."""

  def __init__(self, in_dim, out_dim, num_res_blocks, mode, rngs):
    self.time_factor = 2 if mode == "upsample3d" else 1
    unfolded = out_dim * self.time_factor * 4
    require(not mode or unfolded % in_dim == 0, f"a residual VAE level cannot share {unfolded} unfolded channels "
            f"among {in_dim} (widths from vae.decoder_base_dim or base_dim, and vae.dim_mult)")
    self.out_dim = out_dim
    self.resnets = residual_blocks(in_dim, out_dim, num_res_blocks + 1, rngs)
    self.upsampler = nnx.data(Resample(out_dim, mode, rngs, up_dim=out_dim) if mode else None)

  def __call__(self, x, cache=None, first=True):
    shortcut = x
    for resnet in self.resnets:
      x = resnet(x, cache)
    if self.upsampler is None:
      return x
    return self.upsampler(x, cache, first) + duplicate_up(shortcut, self.out_dim, self.time_factor, 2, first)


class UpBlock(nnx.Module):

  def __init__(self, in_dim, out_dim, num_res_blocks, mode, rngs):
    self.resnets = residual_blocks(in_dim, out_dim, num_res_blocks + 1, rngs)
    self.upsamplers = nnx.data(nnx.List([Resample(out_dim, mode, rngs)]) if mode else None)

  def __call__(self, x, cache=None, first=True):
    for resnet in self.resnets:
      x = resnet(x, cache)
    return x if self.upsamplers is None else self.upsamplers[0](x, cache, first)


class Decoder(nnx.Module):

  def __init__(self, config, rngs):
    mult = tuple(config.dim_mult)
    dims = [(config.decoder_base_dim or config.base_dim) * m for m in (mult[-1],) + mult[::-1]]
    upsample = tuple(config.temporal_downsample)[::-1]
    self.conv_in = CausalConv3d(config.z_dim, dims[0], 3, rngs)
    self.mid_block = MidBlock(dims[0], rngs)
    blocks = []
    for level, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
      mode = None
      if level != len(mult) - 1:
        mode = "upsample3d" if upsample[level] else "upsample2d"
      if config.residual:
        blocks.append(ResidualUpBlock(in_dim, out_dim, config.num_res_blocks, mode, rngs))
      else:  # Wan 2.1's upsampling halves the width, so every level after the first starts at half
        blocks.append(UpBlock(in_dim // 2 if level > 0 else in_dim, out_dim, config.num_res_blocks, mode, rngs))
    self.up_blocks = nnx.List(blocks)
    self.norm_out = RMSNorm(dims[-1])
    self.conv_out = CausalConv3d(dims[-1], 3 * config.patch_size ** 2, 3, rngs)

  def __call__(self, z, cache=None, first=True):
    x = self.mid_block(self.conv_in(z, cache), cache)
    for block in self.up_blocks:
      x = block(x, cache, first)
    return self.conv_out(jax.nn.silu(self.norm_out(x)), cache)


INITIAL_LOGVAR = -6.0


class VideoVAE(nnx.Module):

  def __init__(self, config: VAEConfig, *, rngs: nnx.Rngs):
    require(len(config.temporal_downsample) == len(config.dim_mult) - 1,
            f"vae.temporal_downsample needs one entry per downsampling ({len(config.dim_mult) - 1} for "
            f"dim_mult {tuple(config.dim_mult)}), got {tuple(config.temporal_downsample)}")
    require(len(config.latents_mean) == config.z_dim and len(config.latents_std) == config.z_dim,
            f"vae.latents_mean and latents_std need z_dim = {config.z_dim} entries, got "
            f"{len(config.latents_mean)} and {len(config.latents_std)}")
    self.config = config
    self.encoder = Encoder(config, rngs)
    self.quant_conv = CausalConv3d(2 * config.z_dim, 2 * config.z_dim, 1, rngs)
    # The posterior starts narrow (std ~0.05): at log-variance 0 the sampled noise would drown
    # the young encoder's means, and a KL weight of 1e-6 lets the VAE learn that only slowly.
    self.quant_conv.bias[...] = jnp.zeros((2 * config.z_dim,)).at[config.z_dim:].set(INITIAL_LOGVAR)
    self.post_quant_conv = CausalConv3d(config.z_dim, config.z_dim, 1, rngs)
    self.decoder = Decoder(config, rngs)
    self.linear_path = nnx.data(LinearPath(config, rngs) if config.linear_path else None)

  # -- encode --------------------------------------------------------------------------------

  def encode(self, video, chunked=False):
    """Video in [-1, 1], `[B, 1 + 4k, H, W, 3]` -> (mean, logvar), each `[B, 1 + k, H/8, W/8, z]`
    (4 and 8: the config's temporal and spatial strides)."""
    require(video.ndim == 5 and video.shape[-1] == 3,
            f"video must be [B, T, H, W, 3], got shape {video.shape}")
    frames, time_stride, space_stride = video.shape[1], self.config.temporal_stride, self.config.spatial_stride
    require(frames >= 1 and (frames - 1) % time_stride == 0,
            f"video frame count must be 1 + {time_stride}k, got {frames}")
    require(video.shape[2] % space_stride == 0 and video.shape[3] % space_stride == 0,
            f"video height and width must be multiples of {space_stride}, got {video.shape[2]}x{video.shape[3]}")
    linear = None if self.linear_path is None else self.linear_path.encode(video)
    video = patchify(video, self.config.patch_size)
    if not chunked:
      moments = self.encoder(video)
    else:
      cache = {}
      first = self.encoder(video[:, :1], cache, first=True)
      if frames == 1:
        moments = first
      else:
        chunks = video[:, 1:].reshape(video.shape[0], -1, time_stride, *video.shape[2:]).swapaxes(0, 1)

        def step(cache, chunk):
          cache = dict(cache)
          return cache, self.encoder(chunk, cache, first=False)

        cache, rest = jax.lax.scan(step, cache, chunks)
        rest = rest.swapaxes(0, 1).reshape(video.shape[0], -1, *rest.shape[3:])
        moments = jnp.concatenate([first, rest], axis=1)
    moments = self.quant_conv(moments)
    mean, logvar = jnp.split(moments, 2, axis=-1)
    if linear is not None:
      mean = mean + linear
    return mean, jnp.clip(logvar, -30.0, 20.0)

  # -- decode --------------------------------------------------------------------------------

  def decode(self, latents, chunked=False, clip=True):
    """Latents `[B, 1 + k, h, w, z]` -> video `[B, 1 + 4k, 8h, 8w, 3]` (the config's strides), clipped to [-1, 1]
    (`clip=False` for training: clipping would stop the gradient of every saturated pixel)."""
    require(latents.ndim == 5 and latents.shape[-1] == self.config.z_dim,
            f"latents must be [B, F, h, w, {self.config.z_dim}], got shape {latents.shape}")
    z = self.post_quant_conv(latents)
    if not chunked:
      video = self.decoder(z)
    else:
      cache = {}
      first = self.decoder(z[:, :1], cache, first=True)
      if z.shape[1] == 1:
        video = first
      else:
        def step(cache, frame):
          cache = dict(cache)
          return cache, self.decoder(frame[:, None], cache, first=False)

        cache, rest = jax.lax.scan(step, cache, z[:, 1:].swapaxes(0, 1))
        rest = rest.swapaxes(0, 1).reshape(z.shape[0], -1, *rest.shape[3:])
        video = jnp.concatenate([first, rest], axis=1)
    video = unpatchify(video, self.config.patch_size)
    if self.linear_path is not None:
      video = video + self.linear_path.decode(latents)
    return jnp.clip(video, -1.0, 1.0) if clip else video

  # -- latent normalisation (what the DiT sees) ------------------------------------------------

  def normalize(self, mean):
    return (mean - jnp.asarray(self.config.latents_mean)) / jnp.asarray(self.config.latents_std)

  def denormalize(self, latents):
    return latents * jnp.asarray(self.config.latents_std) + jnp.asarray(self.config.latents_mean)
