"""How the network meets the flow: Wan's plain velocity, or a preconditioned one (opt-in).

Wan's network reads the noisy latents `x_s = (1 - s) x_0 + s n` and writes the velocity `n - x_0`
itself; at s = 1 that means copying its input noise to its output through every layer, and what a
small network fails to copy is left in the video as noise. Two DiTConfig fields change that:

- `reference_residual`: the flow runs on each frame's difference from the reference latent `r`
  (`x_0 - r`): the network reads `x_s - (1 - s) r` and the velocity is its answer minus `r`. The
  loss, the samplers and every caller keep the plain contract (velocity of the latents); only
  what the network must learn changes: motion away from the portrait, not the portrait itself.
  `r` is one latent frame `[B, h, w, C]` for every frame, or one per frame `[B, F, h, w, C]` (the
  DiT's `warped_reference`: the portrait already carried to each frame by the tracked mesh).
- `sigma_data` > 0: EDM's preconditioning (Karras et al. 2022) for rectified flow with data of
  that standard deviation `d` (of the differences, with `reference_residual`): the input is
  scaled to unit variance, `c_in = 1 / sqrt((1 - s)^2 d^2 + s^2)`, and the velocity is
  `c_skip x + c_out F` with `c_skip = (s - (1 - s) d^2) c_in^2`, the best linear guess of the
  velocity from `x`, and `c_out = d c_in`, the spread of what it leaves (so F's target has unit
  variance at every noise level). At s = 1 the skip term passes the noise through.

Both are off by default, which keeps a converted Wan checkpoint exactly Wan. A call without the
controls (no reference) runs the flow on the latents themselves.
"""
import jax.numpy as jnp

from fp_jax.diffusion.flow import NUM_TIMESTEPS  # Wan's timesteps are 1000 * s


def _sigma(timestep, ndim):
  """`[B]` or `[B, F]` timesteps as noise levels broadcastable over `[B, F, h, w, C]`."""
  sigma = jnp.asarray(timestep, jnp.float32) / NUM_TIMESTEPS
  return sigma.reshape(sigma.shape + (1,) * (ndim - sigma.ndim))


def is_plain(config):
  return not config.reference_residual and not config.sigma_data


def network_input(config, latents, timestep, reference):
  """What the network reads in place of the noisy latents `[B, F, h, w, C]`."""
  if is_plain(config):
    return latents
  sigma = _sigma(timestep, latents.ndim)
  x = _relative(config, latents, sigma, reference)
  return x * _c_in(config.sigma_data, sigma) if config.sigma_data else x


def velocity(config, output, latents, timestep, reference):
  """The latents' velocity from the network's `output` (both `[B, F, h, w, C]`)."""
  if is_plain(config):
    return output
  if config.sigma_data:
    sigma = _sigma(timestep, latents.ndim)
    x = _relative(config, latents, sigma, reference)
    d = config.sigma_data
    c_in = _c_in(d, sigma)
    output = (sigma - (1.0 - sigma) * d * d) * c_in * c_in * x + d * c_in * output
  if config.reference_residual and reference is not None:
    output = output - _per_frame(reference).astype(output.dtype)
  return output


def _per_frame(reference):
  return reference[:, None] if reference.ndim == 4 else reference


def _relative(config, latents, sigma, reference):
  """The noisy latents relative to the reference's share of them; a call without the controls
  (no reference) runs on the latents themselves, as Wan does."""
  if not config.reference_residual or reference is None:
    return latents
  return latents - (1.0 - sigma) * _per_frame(reference).astype(latents.dtype)


def _c_in(d, sigma):
  return jnp.reciprocal(jnp.sqrt(jnp.square((1.0 - sigma) * d) + jnp.square(sigma)))
