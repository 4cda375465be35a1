"""Rectified flow: the samplers against exact flows, guidance against its definition."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from data_pipeline.errors import InputError
from fp_jax.diffusion import flow, guidance, samplers


@pytest.mark.parametrize("sampler", samplers.SAMPLERS)
def test_samplers_on_the_exact_velocity_field_land_on_the_data_point(sampler):
  # For data concentrated at x0 the flow's velocity is (x - x0) / s: paths are straight lines,
  # which both solvers integrate exactly for any step count and shift.
  x0 = jnp.asarray(np.random.default_rng(0).standard_normal((2, 3, 4)), jnp.float32)
  noise = jnp.asarray(np.random.default_rng(1).standard_normal((2, 3, 4)), jnp.float32)
  for steps, shift in ((1, 1.0), (4, 3.0), (9, 5.0)):
    sigmas = flow.sampling_sigmas(steps, shift)
    assert float(sigmas[0]) == 1.0 and float(sigmas[-1]) == 0.0
    assert np.all(np.diff(np.asarray(sigmas)) < 0)
    got = samplers.solve(lambda x, s: (x - x0) / s, noise, sigmas, sampler)
    np.testing.assert_allclose(got, x0, atol=1e-5)


def _gaussian_flow(mean, std):
  """The exact velocity E[noise - x0 | x_s] for data ~ N(mean, std^2), and the exact ODE map
  from noise: x(0) = mean + std * x(1) (the flow of a Gaussian is affine)."""
  def velocity(x, s):
    variance = (1 - s) ** 2 * std ** 2 + s ** 2
    centred = x - (1 - s) * mean
    return s * centred / variance - (mean + (1 - s) * std ** 2 * centred / variance)
  return velocity, lambda noise: mean + std * noise


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_multistep_converges_at_second_order_and_euler_at_first(shift):
  velocity, exact = _gaussian_flow(mean=1.5, std=0.3)
  noise = jnp.linspace(-2.0, 2.0, 9, dtype=jnp.float32)
  want = exact(noise)
  errors = {}
  for sampler in samplers.SAMPLERS:
    errors[sampler] = [float(jnp.max(jnp.abs(
        samplers.solve(velocity, noise, flow.sampling_sigmas(n, shift), sampler) - want))) for n in (10, 20, 40)]
  euler, multistep = np.array(errors["euler"]), np.array(errors["multistep"])
  # Halving the step halves Euler's error and quarters the multistep solver's (a shift makes the
  # steps unequal: the orders hold, though at 10 steps the steep start costs the multistep more).
  np.testing.assert_allclose(euler[:-1] / euler[1:], 2.0, rtol=0.25)
  np.testing.assert_allclose(multistep[:-1] / multistep[1:], 4.0, rtol=0.3)
  if shift == 1.0:
    assert np.all(multistep < euler / 3)


def test_a_multistep_step_is_exact_for_a_velocity_linear_in_the_level_with_unequal_steps():
  # dx/ds = a + b s from s to s + h moves x by a h + b ((s + h)^2 - s^2) / 2; the second-order
  # Adams-Bashforth step is exact for it whatever the last step h_prev was (a ratio h_prev / 2h in
  # place of h / 2h_prev would be exact only when the two are equal).
  a, b = 0.7, -2.3
  for previous_sigma, sigma, next_sigma in ((0.95, 0.8, 0.7), (0.9, 0.85, 0.5), (0.3, 0.1, 0.0)):
    got = samplers.update("multistep", jnp.float32(0.0), jnp.float32(a + b * sigma), jnp.float32(sigma),
                          jnp.float32(next_sigma), jnp.float32(a + b * previous_sigma),
                          jnp.float32(sigma - previous_sigma))
    want = a * (next_sigma - sigma) + b * (next_sigma ** 2 - sigma ** 2) / 2
    np.testing.assert_allclose(float(got), want, rtol=1e-5, atol=1e-7)


def test_the_shift_and_the_sampling_levels_match_diffusers():
  from diffusers import UniPCMultistepScheduler  # pylint: disable=g-import-not-at-top

  def flow_sigmas(shift, steps=20):
    scheduler = UniPCMultistepScheduler(use_flow_sigmas=True, flow_shift=shift, prediction_type="flow_prediction")
    scheduler.set_timesteps(steps)
    return np.asarray(scheduler.sigmas, np.float64)

  unshifted, shifted = flow_sigmas(1.0), flow_sigmas(3.0)
  np.testing.assert_allclose(np.asarray(flow.shift_sigma(unshifted, 3.0)), shifted, rtol=1e-6)
  assert flow.shift_sigma(0.5, 3.0) == pytest.approx(0.75)
  # diffusers' levels end at 1/1000 before its final 0, ours at 0: they agree to that grid's spacing.
  np.testing.assert_allclose(np.asarray(flow.sampling_sigmas(20, 3.0)), shifted, atol=3e-3)


def test_the_training_target_is_the_velocity_the_samplers_integrate():
  # The samplers' exact field for data at x0 is (x_s - x0) / s (above); the target training
  # regresses at x_s must be that same field, or sampling runs the flow backwards.
  rng = np.random.default_rng(2)
  x0, noise = (jnp.asarray(rng.standard_normal((3, 2, 4)), jnp.float32) for _ in range(2))
  sigma = jnp.asarray([0.9, 0.5, 0.05], jnp.float32)
  noisy, target = flow.noisy_and_velocity(x0, noise, sigma)
  s = np.asarray(sigma)[:, None, None]
  np.testing.assert_allclose(noisy, (1 - s) * x0 + s * noise, rtol=1e-6)
  np.testing.assert_allclose(target, (np.asarray(noisy) - np.asarray(x0)) / s, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shift", [0.0, -1.0, float("nan")])
def test_a_shift_that_is_not_above_zero_is_an_input_error(shift):
  with pytest.raises(InputError, match="shift must be a number above 0"):
    flow.sampling_sigmas(4, shift)


def test_unknown_sampler_is_an_input_error():
  with pytest.raises(InputError, match="sampler"):
    samplers.solve(lambda x, s: x, jnp.zeros(2), flow.sampling_sigmas(2), "heun")


def _branch_model(latents, timestep, context, *, keep, offset):
  """A stand-in DiT whose output tells which conditions it saw: 1 + 10 ref + 100 expr + 1000 pose."""
  del context
  code = 1.0 + 10 * keep["reference"] + 100 * keep["expression"] + 1000 * keep["pose"] + 0 * keep["camera"]
  shape = (-1,) + (1,) * (latents.ndim - 1)
  return latents * 0 + code.reshape(shape) + offset + timestep.reshape(shape) * 0


def test_guided_velocity_combines_branches_by_their_weights():
  latents = jnp.zeros((2, 3, 4, 4, 1))
  offset = jnp.arange(2.0)[:, None, None, None, None]  # per-example conditions travel with the batch
  cases = {
      "off": guidance.Guidance("off"),
      "cfg": guidance.Guidance("cfg", scale=guidance.Schedule(4.0)),
      "hybrid": guidance.Guidance("hybrid", reference=guidance.Schedule(3.0, 1.0, "linear"),
                                  motion=guidance.Schedule(2.0)),
      "motion": guidance.Guidance("motion", motion=guidance.Schedule(1.0, 3.0, "linear")),
  }
  none, ref, everything = 1.0, 11.0, 1111.0
  want = {"off": everything, "cfg": none + 4.0 * (everything - none),
          "hybrid": none + 2.0 * (ref - none) + 2.0 * (everything - ref),  # s_ref(0.5) = 2
          "motion": ref + 2.0 * (everything - ref)}  # s_mot(0.5) = 2
  for name, rule in cases.items():
    for pad_to in (1, 4):
      got = guidance.guided_velocity(_branch_model, latents, jnp.full((2,), 500.0), {"offset": offset},
                                     rule.branches, rule.weights(0.5), pad_to=pad_to)
      assert got.shape == latents.shape
      np.testing.assert_allclose(got[:, 0, 0, 0, 0], want[name] + np.arange(2.0), rtol=1e-6)


def test_schedules():
  assert guidance.Schedule(2.0).at(0.7) == 2.0
  linear = guidance.Schedule(3.0, 1.0, "linear")
  cosine = guidance.Schedule(3.0, 1.0, "cosine")
  for schedule in (linear, cosine):
    assert schedule.at(0.0) == pytest.approx(3.0) and schedule.at(1.0) == pytest.approx(1.0)
  assert cosine.at(0.5) == pytest.approx(2.0) and cosine.at(0.25) > linear.at(0.25)
  assert guidance.Schedule.parse({"start": 1, "end": 2, "shape": "cosine"}) == guidance.Schedule(1.0, 2.0, "cosine")
  with pytest.raises(InputError):
    guidance.Schedule(1.0, shape="exponential")
  with pytest.raises(InputError):
    guidance.Guidance("pag")
  # A dict names a constant unless it moves; a constant that names another end is refused, as the
  # settings file would record an end that is never used.
  assert guidance.Schedule.parse({"start": 2}) == guidance.Schedule(2.0)
  assert guidance.Schedule.parse({"start": 2, "end": 2}).at(0.5) == 2.0
  assert guidance.Schedule.parse({"start": 3, "end": 1}) == guidance.Schedule(3.0, 1.0, "linear")
  with pytest.raises(InputError, match="a constant guidance schedule cannot end at 1.0"):
    guidance.Schedule(3.0, 1.0)


def test_training_noise_levels_are_scaled_into_max_level():
  from fp_jax.train.tasks.dit_task import DiTTask  # pylint: disable=g-import-not-at-top
  from tests.run_helpers import train_config  # pylint: disable=g-import-not-at-top
  key = jax.random.key(3)
  full = np.asarray(DiTTask(train_config("unused", "dit", **{"diffusion.max_level": 1.0})).noise_levels(key, 4096))
  low = np.asarray(DiTTask(train_config("unused", "dit", **{"diffusion.max_level": 0.4})).noise_levels(key, 4096))
  assert full.max() > 0.9 and 0.0 < low.min() and low.max() <= 0.4
  np.testing.assert_allclose(low, 0.4 * full, rtol=1e-6)  # the same draws, the range compressed
  for level in (0.0, 1.5):
    with pytest.raises(InputError, match=r"diffusion.max_level must be in \(0, 1\]"):
      DiTTask(train_config("unused", "dit", **{"diffusion.max_level": level}))
  # Validation would sample from levels the model never trains on.
  with pytest.raises(InputError, match=r"sample.start_level \(0.3\) is above .* \(diffusion.max_level 0.2\)"):
    DiTTask(train_config("unused", "dit", **{"diffusion.max_level": 0.2}))
  with pytest.raises(InputError, match="diffusion.shift must be a number above 0, got 0.0"):
    DiTTask(train_config("unused", "dit", **{"diffusion.shift": 0.0}))


def test_the_dit_task_refuses_a_model_that_does_not_read_the_vaes_latents():
  from fp_jax.train.tasks.dit_task import DiTTask  # pylint: disable=g-import-not-at-top
  from tests.run_helpers import train_config  # pylint: disable=g-import-not-at-top
  with pytest.raises(InputError, match=r"model.in_channels \(16\) must equal vae.z_dim \(32\)"):
    DiTTask(train_config("unused", "dit", **{"vae.z_dim": 32, "model.in_channels": 16, "model.out_channels": 16}))
  with pytest.raises(InputError, match=r"model.out_channels \(16\) must equal vae.z_dim \(32\)"):
    DiTTask(train_config("unused", "dit", **{"vae.z_dim": 32, "model.in_channels": 32, "model.out_channels": 16}))
  task = DiTTask(train_config("unused", "dit", **{"vae.z_dim": 32, "model.in_channels": 32, "model.out_channels": 32}))
  assert task.model_config.in_channels == task.model_config.out_channels == 32
