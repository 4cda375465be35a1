"""The DiT: parity with diffusers' Wan, the portrait controls, and bad input."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from data_pipeline.errors import InputError
from fp_jax.export import diffusers_wan
from fp_jax.models.dit_config import DiTConfig
from tests import dit_helpers as helpers


@nnx.jit
def call(model, latents, timestep, context=None, controls=None):
  """One compiled forward (eager calls run op by op and are slow)."""
  return model(latents, timestep, context, **(controls or {}))


def random_inputs(rng, batch, frames, height, width, text=7):
  latents = rng.standard_normal((batch, frames, height, width, 16)).astype(np.float32)
  timestep = rng.uniform(0, 1000, batch).astype(np.float32)
  context = rng.standard_normal((batch, text, 32)).astype(np.float32)
  return latents, timestep, context


@pytest.mark.parametrize("dim, heads, layers, frames, height, width", [
    (48, 2, 2, 3, 6, 10),   # non-square latents, odd latent frame count
    (64, 4, 1, 1, 4, 4),    # a single latent frame (an image)
    (96, 2, 3, 2, 8, 6),    # head dim 48: uneven rotary split (16, 16, 16)
])
def test_parity_with_diffusers_wan(dim, heads, layers, frames, height, width):
  reference = helpers.diffusers_wan_model(dim, heads, layers, ffn_dim=2 * dim)
  model = helpers.converted(reference)
  latents, timestep, context = random_inputs(np.random.default_rng(dim), 2, frames, height, width)
  want = helpers.diffusers_forward(reference, latents, timestep, context)
  got = model(jnp.asarray(latents), jnp.asarray(timestep), jnp.asarray(context))
  assert got.shape == want.shape
  assert helpers.relative_error(got, want) <= 1e-4


def test_per_frame_timesteps_match_diffusers_per_token_timesteps():
  reference = helpers.diffusers_wan_model(48, 2, 1, ffn_dim=96)
  model = helpers.converted(reference)
  latents, _, context = random_inputs(np.random.default_rng(1), 2, 3, 4, 6)
  per_frame = np.array([[0.0, 400.0, 800.0], [999.0, 10.0, 500.0]], np.float32)
  tokens_per_frame = (4 // 2) * (6 // 2)
  with torch.no_grad():
    want = reference(torch.from_numpy(np.ascontiguousarray(latents.transpose(0, 4, 1, 2, 3))),
                     torch.from_numpy(np.repeat(per_frame, tokens_per_frame, axis=1)),
                     torch.from_numpy(context), return_dict=False)[0].numpy().transpose(0, 2, 3, 4, 1)
  got = model(jnp.asarray(latents), jnp.asarray(per_frame), jnp.asarray(context))
  assert helpers.relative_error(got, want) <= 1e-4


ALL_CONTROLS = dict(reference=True, normals=True, warped_reference=True, rays=True, expression="both", pose=True)


def test_converted_model_with_controls_is_wan_at_step_zero():
  reference = helpers.diffusers_wan_model(48, 2, 2, ffn_dim=96)
  model = helpers.converted(reference, **ALL_CONTROLS)
  rng = np.random.default_rng(2)
  latents, timestep, context = random_inputs(rng, 2, 3, 4, 6)
  controls = helpers.control_inputs(rng, 2, 3, 4, 6)
  first_frame_zero = latents.copy()
  first_frame_zero[:, 0] = 0  # the reference takes the first latent frame's place
  want = helpers.diffusers_forward(reference, first_frame_zero, timestep, context)
  got = call(model, jnp.asarray(latents), jnp.asarray(timestep), jnp.asarray(context), controls)
  assert helpers.relative_error(got, want) <= 1e-4


@pytest.mark.parametrize("reference_frames", ["first", "all"])
def test_reference_slot_is_wan_on_latents_carrying_the_reference(reference_frames):
  """The patch embedding is linear, so with the reference channels' embedding set to the noisy
  latents' own, our model reads `noisy + slot`: Wan's forward on latents whose first frame is the
  reference ("first"), or with the reference added to every frame ("all")."""
  reference = helpers.diffusers_wan_model(48, 2, 2, ffn_dim=96)
  model = helpers.converted(reference, reference=True, reference_frames=reference_frames)
  model.condition_embedding.kernel.value = model.patch_embedding.kernel.value
  rng = np.random.default_rng(5)
  latents, timestep, context = random_inputs(rng, 2, 3, 4, 6)
  portrait = rng.standard_normal((2, 4, 6, 16)).astype(np.float32)
  wan_input = latents.copy()
  wan_input[:, 0] = portrait
  if reference_frames == "all":
    wan_input[:, 1:] += portrait[:, None]
  want = helpers.diffusers_forward(reference, wan_input, timestep, context)
  got = call(model, jnp.asarray(latents), jnp.asarray(timestep), jnp.asarray(context),
             dict(reference=jnp.asarray(portrait)))
  assert helpers.relative_error(got, want) <= 1e-4


@pytest.mark.parametrize("reference_residual, sigma_data", [(True, 0.0), (False, 0.6), (True, 0.6)])
def test_a_preconditioned_dit_is_wan_between_edms_scalings(reference_residual, sigma_data):
  """EDM's preconditioning for x_s = (1 - s) x0 + s n, written out here: Wan reads
  c_in (x_s - (1 - s) r) (r: the reference, with reference_residual; 0 otherwise) and the
  velocity is c_skip x + c_out Wan(...) - r, with c_in = 1 / sqrt((1 - s)^2 d^2 + s^2),
  c_skip = (s - (1 - s) d^2) c_in^2 and c_out = d c_in (each 1, 0 and 1 with d = 0). The
  reference slot's embedding is set to the latents' own, so Wan's first frame is the portrait."""
  reference = helpers.diffusers_wan_model(48, 2, 2, ffn_dim=96)
  model = helpers.converted(reference, reference=True, reference_residual=reference_residual,
                            sigma_data=sigma_data)
  model.condition_embedding.kernel.value = model.patch_embedding.kernel.value
  rng = np.random.default_rng(7)
  latents, _, context = random_inputs(rng, 2, 3, 4, 6)
  timestep = np.array([900.0, 150.0], np.float32)
  portrait = rng.standard_normal((2, 4, 6, 16)).astype(np.float32)
  s = (timestep / 1000.0)[:, None, None, None, None]
  x = latents - (1 - s) * portrait[:, None] if reference_residual else latents
  c_in = 1 / np.sqrt(((1 - s) * sigma_data) ** 2 + s ** 2) if sigma_data else np.ones_like(s)
  c_skip = (s - (1 - s) * sigma_data ** 2) * c_in ** 2 if sigma_data else np.zeros_like(s)
  c_out = sigma_data * c_in if sigma_data else np.ones_like(s)
  wan_input = c_in * x
  wan_input[:, 0] = portrait
  want = c_skip * x + c_out * helpers.diffusers_forward(reference, wan_input, timestep, context)
  if reference_residual:
    want = want - portrait[:, None]
  got = call(model, jnp.asarray(latents), jnp.asarray(timestep), jnp.asarray(context),
             dict(reference=jnp.asarray(portrait)))
  assert helpers.relative_error(got, want) <= 1e-4


def test_the_residual_runs_from_the_warped_portrait_where_it_is_kept():
  """With warped_reference, reference_residual measures each frame from the warped portrait w
  (the first frame from the portrait r): Wan reads x_s - (1 - s) w and the velocity is Wan(...) -
  w; an example whose pose is dropped falls back to r on every frame. The reference channels'
  embedding is set to the latents' own and the warped channels' to zero, so Wan's first frame is
  the portrait."""
  reference = helpers.diffusers_wan_model(48, 2, 2, ffn_dim=96)
  model = helpers.converted(reference, reference=True, warped_reference=True, reference_residual=True)
  patch = model.patch_embedding.kernel.value.reshape(4, 16, -1)
  model.condition_embedding.kernel.value = jnp.concatenate([patch, jnp.zeros_like(patch)], axis=1).reshape(4 * 32, -1)
  rng = np.random.default_rng(8)
  latents, _, context = random_inputs(rng, 2, 3, 4, 6)
  timestep = np.array([700.0, 300.0], np.float32)
  portrait = rng.standard_normal((2, 4, 6, 16)).astype(np.float32)
  warped = rng.standard_normal((2, 3, 4, 6, 16)).astype(np.float32)
  keep = {"reference": jnp.ones(2), "pose": jnp.array([1.0, 0.0])}
  base = np.stack([warped[0], np.broadcast_to(portrait[1], warped.shape[1:])])
  base[:, 0] = portrait
  s = (timestep / 1000.0)[:, None, None, None, None]
  wan_input = latents - (1 - s) * base
  wan_input[:, 0] = portrait
  want = helpers.diffusers_forward(reference, wan_input, timestep, context) - base
  got = call(model, jnp.asarray(latents), jnp.asarray(timestep), jnp.asarray(context),
             dict(reference=jnp.asarray(portrait), warped=jnp.asarray(warped), keep=keep))
  assert helpers.relative_error(got, want) <= 1e-4


def test_edm_scalings_make_the_networks_target_unit_variance_and_the_skip_the_best_linear_guess():
  """For data of std d and unit noise at level s, the velocity n - x0 regressed on x_s by least
  squares has slope c_skip and leaves residuals of std c_out: a network answering 0 gives the
  best linear velocity, and its target (v - c_skip x) / c_out has unit variance."""
  from fp_jax.models import preconditioning  # pylint: disable=g-import-not-at-top
  config = DiTConfig(dim=48, heads=2, layers=1, ffn_dim=96, sigma_data=0.4)
  rng = np.random.default_rng(0)
  x0 = 0.4 * rng.standard_normal(400_000)
  noise = rng.standard_normal(400_000)
  for s in (0.05, 0.5, 0.95):
    x = (1 - s) * x0 + s * noise
    velocity = noise - x0
    slope = np.dot(x, velocity) / np.dot(x, x)
    shape = (1, 1, 1, 1, x.size)
    timestep = jnp.full((1,), 1000.0 * s)
    best_linear = preconditioning.velocity(config, jnp.zeros(shape), jnp.asarray(x.reshape(shape)), timestep, None)
    np.testing.assert_allclose(np.asarray(best_linear).ravel(), slope * x, rtol=2e-2, atol=2e-3)
    unit = preconditioning.velocity(config, jnp.ones(shape), jnp.zeros(shape), timestep, None)
    target_std = np.std(velocity - slope * x) / float(unit.ravel()[0])
    np.testing.assert_allclose(target_std, 1.0, rtol=1e-2, err_msg=f"s = {s}")


def _randomise_zero_weights(model, seed):
  """Training would move the zero-initialised control weights; emulate that."""
  state = nnx.state(model, nnx.Param)
  keys = iter(jax.random.split(jax.random.key(seed), 1000))
  state = jax.tree.map(lambda p: jnp.where(jnp.all(p == 0), 0.05 * jax.random.normal(next(keys), p.shape), p)
                       if p.ndim >= 2 else p, state)
  nnx.update(model, state)


def test_every_control_and_its_drop_flag_acts():
  reference = helpers.diffusers_wan_model(48, 2, 1, ffn_dim=96)
  model = helpers.converted(reference, **ALL_CONTROLS)
  _randomise_zero_weights(model, 0)
  rng = np.random.default_rng(3)
  latents, timestep, context = (jnp.asarray(a) for a in random_inputs(rng, 2, 2, 4, 4))
  controls = helpers.control_inputs(rng, 2, 2, 4, 4)
  base = call(model, latents, timestep, context, controls)
  # The warped portrait carries both the portrait and the pose: either drop withholds it.
  names = {"reference": ["reference", "warped"], "pose": ["normals", "head_pose", "warped"], "camera": ["rays"],
           "expression": ["expression"]}
  all_dropped = call(model, latents, timestep, context,
                     dict(controls, keep={name: jnp.zeros(2) for name in names}))
  for condition, inputs in names.items():
    changed = dict(controls)
    for name in inputs:
      changed[name] = controls[name] + 1.0
    assert not np.allclose(call(model, latents, timestep, context, changed), base, atol=1e-4), condition
    keep = {name: jnp.zeros(2) if name == condition else jnp.ones(2) for name in names}
    dropped = call(model, latents, timestep, context, dict(controls, keep=keep))
    dropped_changed = call(model, latents, timestep, context, dict(changed, keep=keep))
    np.testing.assert_allclose(dropped, dropped_changed, atol=1e-5, err_msg=condition)
  # Dropping everything leaves only the noisy latents (first frame zero) and the text.
  empty = {name: jnp.zeros_like(value) for name, value in controls.items()}
  np.testing.assert_allclose(all_dropped, call(model, latents, timestep, context,
                                               dict(empty, keep={name: jnp.zeros(2) for name in names})),
                             atol=1e-5)


def test_expression_attention_is_frame_aligned():
  """With one block, changing frame group j's expression changes only latent frame j."""
  reference = helpers.diffusers_wan_model(48, 2, 1, ffn_dim=96)
  model = helpers.converted(reference, reference=True, normals=False, rays=False,
                            expression="cross_attention", pose=False)
  _randomise_zero_weights(model, 1)
  rng = np.random.default_rng(4)
  latents, timestep, _ = (jnp.asarray(a) for a in random_inputs(rng, 1, 3, 4, 4))
  controls = helpers.control_inputs(rng, 1, 3, 4, 4)
  inputs = dict(reference=controls["reference"], expression=controls["expression"])
  base = np.asarray(call(model, latents, timestep, None, inputs))
  changed = dict(inputs, expression=inputs["expression"].at[:, 5:9].add(1.0))  # latent frame 2
  difference = np.abs(np.asarray(call(model, latents, timestep, None, changed)) - base).max(axis=(0, 2, 3, 4))
  assert difference[2] > 1e-3 and difference[0] == 0 and difference[1] == 0


def test_bad_inputs_are_clear_errors():
  reference = helpers.diffusers_wan_model(48, 2, 1, ffn_dim=96)
  model = helpers.converted(reference, **ALL_CONTROLS)
  rng = np.random.default_rng(5)
  latents, timestep, context = (jnp.asarray(a) for a in random_inputs(rng, 1, 2, 4, 4))
  controls = helpers.control_inputs(rng, 1, 2, 4, 4)
  with pytest.raises(InputError, match="latent height 5 is not a multiple of the patch size 2"):
    model(jnp.zeros((1, 2, 5, 4, 16)), timestep, context)
  with pytest.raises(InputError, match="expression has 6 frames; 2 latent frames need 5"):
    model(latents, timestep, context, **dict(controls, expression=controls["expression"][:, :4].repeat(2, 1)[:, :6]))
  with pytest.raises(InputError, match="rays must be folded onto the latent grid"):
    model(latents, timestep, context, **dict(controls, rays=controls["rays"][..., :6]))
  with pytest.raises(InputError, match="unknown attention kernel 'flash3'"):
    DiTConfig(dim=48, heads=2, layers=1, ffn_dim=96, attention="flash3")
  with pytest.raises(InputError, match="dim 50 is not divisible by 4 heads"):
    DiTConfig(dim=50, heads=4, layers=1, ffn_dim=96)
  with pytest.raises(InputError, match="reference_frames must be one of"):
    DiTConfig(dim=48, heads=2, layers=1, ffn_dim=96, reference_frames="last")
  with pytest.raises(InputError, match="sigma_data must be >= 0"):
    DiTConfig(dim=48, heads=2, layers=1, ffn_dim=96, sigma_data=-0.5)
  with pytest.raises(InputError, match="reference_residual needs the reference control"):
    DiTConfig(dim=48, heads=2, layers=1, ffn_dim=96, reference=False, reference_residual=True)
  with pytest.raises(InputError, match="attention 'cudnn' .* needs dtype bfloat16"):
    DiTConfig(dim=48, heads=2, layers=1, ffn_dim=96, attention="cudnn")
  gpu_only = DiTConfig(dim=48, heads=2, layers=1, ffn_dim=96, attention="cudnn", dtype="bfloat16")
  with pytest.raises(InputError, match="attention 'cudnn' runs on GPUs only .this backend: cpu."):
    gpu_only.self_attention(*(jnp.zeros((1, 8, 2, 24), jnp.bfloat16),) * 3)


def test_converter_names_missing_unexpected_and_mismatched_keys():
  reference = helpers.diffusers_wan_model(48, 2, 1, ffn_dim=96)
  model = helpers.converted(reference)
  state_dict = {k: v.detach().numpy() for k, v in reference.state_dict().items()}
  params = jax.tree.map(np.asarray, nnx.state(model, nnx.Param).to_pure_dict())
  broken = dict(state_dict)
  del broken["blocks.0.attn1.to_q.weight"]
  broken["blocks.0.attn2.add_k_proj.weight"] = np.zeros((48, 48))
  with pytest.raises(InputError, match=r"1 missing: blocks.0.attn1.to_q.weight; 1 unexpected: "
                                       r"blocks.0.attn2.add_k_proj.weight"):
    diffusers_wan.from_diffusers(broken, params, 1, source="wan.safetensors")
  wrong = dict(state_dict, **{"proj_out.weight": np.zeros((60, 48))})
  with pytest.raises(InputError, match="1 shape mismatch"):
    diffusers_wan.from_diffusers(wrong, params, 1)
  back = dict(diffusers_wan.to_diffusers(params, 1, (1, 2, 2)))
  assert back.keys() == state_dict.keys()
  for key, value in state_dict.items():
    np.testing.assert_array_equal(back[key], value, err_msg=key)


@pytest.mark.parametrize("context_shards, major", [(2, "rows"), (3, "columns"), (5, "frames")])
def test_every_token_layout_gives_the_same_velocity(monkeypatch, context_shards, major):
  """The token grid's major axis follows the context shard count; the output must not."""
  from fp_jax.models import dit, token_grid  # pylint: disable=g-import-not-at-top
  assert token_grid.TokenGrid.for_shards(5, 2, 3, context_shards).order[0] == major
  reference = helpers.diffusers_wan_model(48, 2, 1, ffn_dim=96)
  model = helpers.converted(reference, **ALL_CONTROLS)
  _randomise_zero_weights(model, 9)
  rng = np.random.default_rng(11)
  latents, timestep, context = random_inputs(rng, 1, 5, 4, 6)  # a 5 x 2 x 3 token grid
  controls = helpers.control_inputs(rng, 1, 5, 4, 6)
  forward = lambda: np.asarray(model(jnp.asarray(latents), jnp.asarray(timestep), jnp.asarray(context), **controls))
  want = forward()  # no mesh: one shard, rows first
  monkeypatch.setattr(dit, "shards", lambda name: context_shards)
  assert helpers.relative_error(forward(), want) <= 1e-5
