"""Rectified flow: the Euler sampler against the exact flow of a single point."""
import jax.numpy as jnp
import numpy as np

from fp_jax.diffusion import flow


def test_euler_on_the_exact_velocity_field_lands_on_the_data_point():
  # For data concentrated at x0 the flow's velocity is (x - x0) / s: paths are straight lines,
  # which Euler integrates exactly for any step count and shift.
  x0 = jnp.asarray(np.random.default_rng(0).standard_normal((2, 3, 4)), jnp.float32)
  noise = jnp.asarray(np.random.default_rng(1).standard_normal((2, 3, 4)), jnp.float32)
  for steps, shift in ((1, 1.0), (4, 3.0), (9, 5.0)):
    sigmas = flow.sampling_sigmas(steps, shift)
    assert float(sigmas[0]) == 1.0 and float(sigmas[-1]) == 0.0
    assert np.all(np.diff(np.asarray(sigmas)) < 0)
    got = flow.euler_sample(lambda x, s: (x - x0) / s, noise, sigmas)
    np.testing.assert_allclose(got, x0, atol=1e-5)
