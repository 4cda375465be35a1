"""The VAE's linear path (`vae.linear_path`): a linear map from each latent frame's pixels to its
latent and back, added to the convolutional encoder's mean and decoder's output.

A latent frame covers `t x s x s` pixels of each frame (t: the temporal stride, s: the spatial
stride; 4 x 8 x 8 x 3 = 768 numbers for Wan's layout). The best linear code of those pixels in
`z_dim` numbers is their principal components, which a fresh run fits from its training clips in
closed form (`fit_principal_patches`, `initialise`): the VAE then starts as that code, whitened
so that the normalised latents have mean 0 and std 1, and the convolutional nets, whose outputs
start at zero, learn what a linear code misses. On the demo's clips 16 components alone
reconstruct held-out identities at about 26 dB, a level the nets alone reach only after far more
CPU steps than a demo has (benchmarks/vae.py).

The first frame is a latent frame of its own: it is coded as a group of `t` copies of itself,
and decoded as the mean of its group's `t` frames.
"""
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def group_patches(video, time_stride, space_stride):
  """`[B, 1 + tk, H, W, C]` -> `[B, 1 + k, H/s, W/s, t*s*s*C]`: each latent position's pixels."""
  first = jnp.repeat(video[:, :1], time_stride, axis=1)
  x = jnp.concatenate([first, video[:, 1:]], axis=1)
  batch, frames, height, width, channels = x.shape
  t, s = time_stride, space_stride
  x = x.reshape(batch, frames // t, t, height // s, s, width // s, s, channels)
  x = x.transpose(0, 1, 3, 5, 2, 4, 6, 7)
  return x.reshape(batch, frames // t, height // s, width // s, t * s * s * channels)


def ungroup_patches(x, time_stride, space_stride):
  """The inverse of `group_patches`, the first frame the mean of its group."""
  batch, groups, rows, columns, width = x.shape
  t, s = time_stride, space_stride
  channels = width // (t * s * s)
  x = x.reshape(batch, groups, rows, columns, t, s, s, channels).transpose(0, 1, 4, 2, 5, 3, 6, 7)
  x = x.reshape(batch, groups * t, rows * s, columns * s, channels)
  return jnp.concatenate([jnp.mean(x[:, :t], axis=1, keepdims=True), x[:, t:]], axis=1)


class LinearPath(nnx.Module):

  def __init__(self, config, rngs):
    self.strides = (config.temporal_stride, config.spatial_stride)
    width = config.temporal_stride * config.spatial_stride ** 2 * 3
    normal = nnx.initializers.lecun_normal()
    self.encode_kernel = nnx.Param(normal(rngs.params(), (width, config.z_dim)))
    self.encode_bias = nnx.Param(jnp.zeros((config.z_dim,)))
    self.decode_kernel = nnx.Param(normal(rngs.params(), (config.z_dim, width)))
    self.decode_bias = nnx.Param(jnp.zeros((width,)))

  def encode(self, video):
    """Video `[B, 1 + tk, H, W, 3]` -> `[B, 1 + k, H/s, W/s, z]`."""
    return group_patches(video, *self.strides) @ self.encode_kernel[...] + self.encode_bias[...]

  def decode(self, latents):
    return ungroup_patches(latents @ self.decode_kernel[...] + self.decode_bias[...], *self.strides)

  def pixel_weights(self, latents_std):
    """Per latent channel, the squared pixel distance a unit step of the normalised latent moves
    a latent frame's decoding (after the first), over the channels' mean: the weights that make
    a squared error of normalised latents the squared error of the pixels they decode to."""
    squared = jnp.sum(jnp.square(self.decode_kernel[...]), axis=1) * jnp.square(jnp.asarray(latents_std))
    return squared / jnp.mean(squared)


def fit_principal_patches(clips, config, samples_per_clip=4096, seed=0):
  """The whitened principal components of the latent positions' pixels in `clips` (an iterable
  of `[T, H, W, 3]` arrays in [-1, 1]) as the linear path's weights (numpy): latents normalised
  by the config's `latents_mean/std` come out with mean 0 and std 1 per channel."""
  t, s = config.temporal_stride, config.spatial_stride
  rng = np.random.default_rng(seed)
  total, outer, count = 0.0, 0.0, 0
  for clip in clips:
    frames = 1 + (clip.shape[0] - 1) // t * t
    groups = np.asarray(group_patches(jnp.asarray(clip[None, :frames], jnp.float32), t, s), np.float64)
    groups = groups.reshape(-1, groups.shape[-1])
    if len(groups) > samples_per_clip:  # a bounded host cost for pod-sized frames
      groups = groups[rng.choice(len(groups), samples_per_clip, replace=False)]
    total, outer, count = total + groups.sum(axis=0), outer + groups.T @ groups, count + len(groups)
  mean = total / count
  covariance = outer / count - np.outer(mean, mean)
  variances, vectors = np.linalg.eigh(covariance)  # ascending
  variances = np.maximum(variances[::-1][:config.z_dim], 1e-12)
  components = vectors[:, ::-1][:, :config.z_dim].T  # [z, width]
  latents_mean, latents_std = np.asarray(config.latents_mean), np.asarray(config.latents_std)
  encode_kernel = components.T * (latents_std / np.sqrt(variances))
  decode_kernel = (np.sqrt(variances) / latents_std)[:, None] * components
  return {"encode_kernel": encode_kernel, "encode_bias": latents_mean - mean @ encode_kernel,
          "decode_kernel": decode_kernel, "decode_bias": mean - latents_mean @ decode_kernel}


def initialise(params, weights):
  """Writes `fit_principal_patches`' weights into a VideoVAE's `params` (an `nnx.State`, changed
  in place) and zeroes the convolutional nets' last layers (the quantisation conv's mean half and
  the decoder's output conv), so the VAE starts as the linear code exactly."""
  def put(variable, value):
    old, value = variable.value, np.asarray(value)
    variable.value = jax.make_array_from_callback(
        old.shape, old.sharding, lambda index: value[index].astype(old.dtype))

  # The VAE's weights are replicated: each process holds them whole on its first device.
  local = lambda variable: np.asarray(variable.value.addressable_data(0))
  for name, value in weights.items():
    put(params["linear_path"][name], value)
  quant = params["quant_conv"]
  z_dim = quant["bias"].value.shape[-1] // 2
  log_variance_only = np.r_[np.zeros(z_dim), np.ones(z_dim)]  # over the conv's outputs: mean, then log-variance
  put(quant["kernel"], local(quant["kernel"]) * log_variance_only)
  put(quant["bias"], local(quant["bias"]) * log_variance_only)
  for name in ("kernel", "bias"):
    put(params["decoder"]["conv_out"][name], np.zeros(params["decoder"]["conv_out"][name].value.shape))
