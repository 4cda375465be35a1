"""Flow-matching ODE solvers: integrate `dx/ds = v(x, s)` from noise (s = 1) to data (s = 0).

- `euler`: first order, one velocity per step.
- `multistep`: second-order Adams-Bashforth with variable step sizes; it reuses the previous
  step's velocity, so it costs one velocity per step like Euler (the first step is Euler's).

`update` is one step of either; `solve` scans it. The sampling command runs `update` inside its
own compiled step so it can show progress, with the same arithmetic.
"""
import jax
import jax.numpy as jnp

from data_pipeline.errors import require

SAMPLERS = ("euler", "multistep")


def check(sampler):
  require(sampler in SAMPLERS, f"sampler must be one of {SAMPLERS}, got {sampler!r}")


def update(sampler, x, velocity, sigma, next_sigma, previous_velocity=None, previous_step=None):
  """`x` at `next_sigma`. For `multistep`, `previous_step` is the last step's `next - sigma`
  (0 on the first step, which makes this an Euler step)."""
  step = next_sigma - sigma
  if sampler == "euler" or previous_velocity is None:
    return x + step * velocity
  ratio = jnp.where(previous_step == 0, 0.0, step / (2.0 * jnp.where(previous_step == 0, 1.0, previous_step)))
  return x + step * ((1.0 + ratio) * velocity - ratio * previous_velocity)


def solve(velocity_fn, noise, sigmas, sampler="euler"):
  """`x` at `sigmas[-1]` from `noise` at `sigmas[0]`, one compiled step scanned over the levels."""
  check(sampler)

  def step(carry, levels):
    x, previous_velocity, previous_step = carry
    sigma, next_sigma = levels
    velocity = velocity_fn(x, sigma)
    x = update(sampler, x, velocity, sigma, next_sigma, previous_velocity, previous_step)
    return (x, velocity, next_sigma - sigma), None

  start = (noise, jnp.zeros_like(noise), jnp.zeros((), sigmas.dtype))
  (x, _, _), _ = jax.lax.scan(step, start, (sigmas[:-1], sigmas[1:]))
  return x
