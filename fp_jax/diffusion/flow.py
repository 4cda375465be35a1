"""Rectified flow as Wan trains it: `x_t = (1 - s) x_0 + s noise`, velocity `noise - x_0`.

Noise levels `s` in (0, 1) are drawn uniformly or logit-normally and then shifted towards noise,
`s' = shift * s / (1 + (shift - 1) * s)` (Wan's timestep shift); the DiT sees `1000 * s'`.
"""
import math

import jax
import jax.numpy as jnp

from data_pipeline.errors import require

NUM_TIMESTEPS = 1000.0
DISTRIBUTIONS = ("uniform", "logit_normal")


def shift_sigma(sigma, shift):
  # A shift <= 0 maps levels outside [0, 1] (0 gives NaN at s = 1): check_shift refuses it.
  return shift * sigma / (1.0 + (shift - 1.0) * sigma)


def check_shift(shift, name="diffusion.shift"):
  """`shift` as a float, refused in one line unless it is finite and above 0."""
  shift = float(shift)
  require(math.isfinite(shift) and shift > 0, f"{name} must be a number above 0, got {shift}")
  return shift


def sample_sigma(key, batch, distribution="logit_normal", shift=1.0):
  require(distribution in DISTRIBUTIONS, f"timestep distribution must be one of {DISTRIBUTIONS}")
  if distribution == "uniform":
    sigma = jax.random.uniform(key, (batch,), minval=1e-3, maxval=1.0 - 1e-3)
  else:
    sigma = jax.nn.sigmoid(jax.random.normal(key, (batch,)))
  return shift_sigma(sigma, shift)


def noisy_and_velocity(x0, noise, sigma):
  """(x_t, target velocity) for clean latents `x0` `[B, ...]` at noise levels `sigma` `[B]`."""
  s = sigma.reshape((-1,) + (1,) * (x0.ndim - 1))
  return (1.0 - s) * x0 + s * noise, noise - x0


def timesteps(sigma):
  return NUM_TIMESTEPS * sigma


def sampling_sigmas(steps, shift=1.0, start=1.0):
  """`steps + 1` noise levels from `start` (1: pure noise) to 0, shifted as in training; below 1
  the same schedule compressed into `[start, 0]`, as `diffusion.max_level` compresses training's."""
  require(steps >= 1, f"need at least one sampling step, got {steps}")
  shift = check_shift(shift, "the sampling shift")
  return start * shift_sigma(jnp.linspace(1.0, 0.0, steps + 1), shift)


def noised_start(base, noise, start):
  """The flow's state at noise level `start` on its way from `base` (SDEdit's start)."""
  return (1.0 - start) * base.astype(noise.dtype) + start * noise
