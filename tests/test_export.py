"""Weights across frameworks: fp-export to PyTorch (diffusers and the mirror), fp-import from
diffusers; parity of every model and of a whole sampling run; bad input."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from fp_jax.diffusion import flow, samplers
from fp_jax.export import export_run, import_run, torch_dit, torch_motion, torch_vae
from fp_jax.train import trainer as trainer_lib
from configs import tiny
from tests import dit_helpers as helpers
from tests.run_helpers import WAN_CHANNELS, saved_run, train_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# The motion runs here give the pose encoder widths of its own (the expression encoder's: (8, 16)),
# which the export must carry.
POSE_WIDTHS = {"motion.pose_widths": (8, 16, 16)}


@pytest.fixture(scope="module")
def runs(data_dir, tmp_path_factory):
  """Saved vae, motion and dit runs (the dit naming the other two as frozen) and an export."""
  root = tmp_path_factory.mktemp("runs")
  saved_run(train_config(data_dir, "vae"), root / "vae", 1)
  saved_run(train_config(data_dir, "motion", **POSE_WIDTHS), root / "motion", 2)
  config = train_config(data_dir, "dit", **POSE_WIDTHS)
  config.model.expression = "both"
  config.frozen.vae, config.frozen.motion = str(root / "vae"), str(root / "motion")
  saved_run(config, root / "dit", 3)
  export_run.export_run(str(root / "dit"), str(root / "exported"), ema=True)
  return root


def jax_models(root, names=("dit", "vae", "motion")):
  """Our models with the exported (EMA) weights, through the trainer's own loading path."""
  from fp_jax.train import checkpoints  # pylint: disable=g-import-not-at-top
  from fp_jax.models.dit import DiT  # pylint: disable=g-import-not-at-top
  from fp_jax.models.dit_config import DiTConfig  # pylint: disable=g-import-not-at-top
  from fp_jax.train.tasks import common, motion_task  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  from fp_jax.parallel.sharding import use_mesh  # pylint: disable=g-import-not-at-top
  models = {}
  for name in names:
    params, _, saved = checkpoints.read_run(str(root / name), None, "ema")
    config = ml_collections.ConfigDict(saved)
    with use_mesh(helpers.single_device_mesh()):  # the weights carry logical sharding names
      if name == "dit":
        model = DiT(DiTConfig.from_config(config.model), rngs=nnx.Rngs(0))
      elif name == "vae":
        model = common.make_vae(config, nnx.Rngs(0))
      else:
        model = motion_task.MotionModels(config, config.motion.num_controls, nnx.Rngs(0))
    state = nnx.state(model)
    nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, params))
    nnx.update(model, state)
    models[name] = model
  return models


# The latent channels of the tiny config's VAE, which the runs exported here read and write.
CHANNELS = tiny.get_config("dit").vae.z_dim


def dit_inputs(seed, controls=True):
  rng = np.random.default_rng(seed)
  latents = rng.standard_normal((2, 2, 4, 4, CHANNELS)).astype(np.float32)
  timestep = np.array([300.0, 800.0], np.float32)
  inputs = dict(latents=latents, timestep=timestep)
  if controls:
    inputs.update({k: np.asarray(v) for k, v in helpers.control_inputs(rng, 2, 2, 4, 4, channels=CHANNELS).items()})
    inputs["keep"] = {"reference": np.array([1.0, 0.0]), "expression": np.array([1.0, 1.0]),
                      "pose": np.array([0.0, 1.0]), "camera": np.array([1.0, 0.0])}
  return inputs


def run_torch(model, inputs):
  tensors = {k: ({n: torch.from_numpy(x) for n, x in v.items()} if isinstance(v, dict) else torch.from_numpy(v))
             for k, v in inputs.items()}
  with torch.no_grad():
    return model(tensors.pop("latents"), tensors.pop("timestep"), None, **tensors).numpy()


def run_jax(model, inputs):
  arrays = jax.tree.map(jnp.asarray, inputs)
  return np.asarray(nnx.jit(lambda m, a: m(a.pop("latents"), a.pop("timestep"), None, **a))(model, arrays))


def test_the_mirrors_ray_folding_equals_the_data_pipelines():
  from data_pipeline import rays  # pylint: disable=g-import-not-at-top
  maps = np.random.default_rng(4).standard_normal((2, 9, 16, 24, 6)).astype(np.float32)
  np.testing.assert_array_equal(torch_dit.rays_to_latent_grid(torch.from_numpy(maps)).numpy(),
                                rays.to_latent_grid(maps))


def test_the_mirror_equals_the_jax_dit_with_every_control(runs):
  mirror = torch_dit.PortraitTransformer.from_export(runs / "exported")
  model = jax_models(runs)["dit"]
  for inputs in (dit_inputs(0), dit_inputs(1, controls=False)):
    want = run_jax(model, inputs)
    assert np.std(want) > 0.05  # the controls' randomised weights move the output
    assert helpers.relative_error(run_torch(mirror, inputs), want) <= 1e-4


@pytest.mark.parametrize("reference", [dict(reference_frames="first"), dict(reference_frames="all"),
                                       dict(reference_frames="all", reference_residual=True, sigma_data=0.5)])
def test_the_mirror_places_the_reference_as_the_jax_dit_does(data_dir, tmp_path, reference):
  config = train_config(data_dir, "dit")
  config.model.update(helpers.NO_CONTROLS, reference=True, **reference)
  config.input.warped_reference = False
  saved_run(config, tmp_path / "dit", 5)
  export_run.export_run(str(tmp_path / "dit"), str(tmp_path / "out"), ema=True)
  mirror = torch_dit.PortraitTransformer.from_export(tmp_path / "out")
  inputs = {k: v for k, v in dit_inputs(6).items() if k in ("latents", "timestep", "reference")}
  model = jax_models(tmp_path, ["dit"])["dit"]
  want = run_jax(model, inputs)
  without_reference = run_jax(model, dict(inputs, reference=0 * inputs["reference"]))
  assert np.abs(want - without_reference)[:, 1:].max() > 0.05  # the reference reaches the frames
  assert helpers.relative_error(run_torch(mirror, inputs), want) <= 1e-4


def test_the_mirror_carries_the_warped_portrait_as_the_jax_dit_does(data_dir, tmp_path):
  config = train_config(data_dir, "dit")
  config.model.update(helpers.NO_CONTROLS, reference=True, normals=True, warped_reference=True,
                      reference_frames="all", reference_residual=True)
  saved_run(config, tmp_path / "dit", 7)
  export_run.export_run(str(tmp_path / "dit"), str(tmp_path / "out"), ema=True)
  mirror = torch_dit.PortraitTransformer.from_export(tmp_path / "out")
  inputs = {k: v for k, v in dit_inputs(8).items() if k in ("latents", "timestep", "reference", "normals", "warped")}
  inputs["keep"] = {"reference": np.array([1.0, 1.0]), "pose": np.array([1.0, 0.0])}  # the second: warp dropped
  model = jax_models(tmp_path, ["dit"])["dit"]
  want = run_jax(model, inputs)
  moved = run_jax(model, dict(inputs, warped=inputs["warped"] + 1.0))
  assert np.abs(want - moved)[0, 1:].max() > 0.05 and np.abs(want - moved)[1].max() < 1e-5
  assert helpers.relative_error(run_torch(mirror, inputs), want) <= 1e-4


def test_the_wan_core_loads_into_diffusers_strictly_and_agrees(runs):
  from diffusers import WanTransformer3DModel  # pylint: disable=g-import-not-at-top
  from safetensors.torch import load_file  # pylint: disable=g-import-not-at-top
  config = json.loads((runs / "exported" / "config.json").read_text())
  reference = WanTransformer3DModel(**config["diffusers"]).eval()
  tensors = load_file(runs / "exported" / "model.safetensors")
  core = {name: tensor for name, tensor in tensors.items() if name in reference.state_dict()}
  assert len(core) < len(tensors)  # the controls are the rest
  reference.load_state_dict(core, strict=True)
  mirror = torch_dit.PortraitTransformer.from_export(runs / "exported")
  rng = np.random.default_rng(4)
  latents = rng.standard_normal((1, 2, 4, 4, CHANNELS)).astype(np.float32)
  context = rng.standard_normal((1, 3, config["model"]["text_dim"])).astype(np.float32)
  timestep = np.array([500.0], np.float32)
  with torch.no_grad():
    got = mirror(torch.from_numpy(latents), torch.from_numpy(timestep), torch.from_numpy(context)).numpy()
  want = helpers.diffusers_forward(reference, latents, timestep, context)
  assert helpers.relative_error(got, want) <= 1e-4


def test_the_exported_vae_and_encoders_match_jax(runs):
  """The tiny config's VAE has a linear path: diffusers' AutoencoderKLWan takes the nets' file
  strictly, and the mirror adding the linear path encodes and decodes as JAX does."""
  from diffusers import AutoencoderKLWan  # pylint: disable=g-import-not-at-top
  from safetensors.torch import load_file  # pylint: disable=g-import-not-at-top
  models = jax_models(runs)
  config = json.loads((runs / "exported" / "vae" / "config.json").read_text())
  assert config["vae"]["linear_path"]
  AutoencoderKLWan(**config["diffusers"]).load_state_dict(
      load_file(runs / "exported" / "vae" / "model.safetensors"), strict=True)
  vae = torch_vae.ExportedVAE.from_export(runs / "exported" / "vae")
  video = np.random.default_rng(5).uniform(-1, 1, (1, 5, 32, 32, 3)).astype(np.float32)
  mean, logvar = nnx.jit(lambda m, v: m.encode(v))(models["vae"], jnp.asarray(video))
  decoded = nnx.jit(lambda m, z: m.decode(z))(models["vae"], mean)
  with torch.no_grad():
    their_mean, their_logvar = vae.encode(torch.from_numpy(video).permute(0, 4, 1, 2, 3))
    their_decoded = vae.decode(torch.from_numpy(np.array(mean)).permute(0, 4, 1, 2, 3))
  assert helpers.relative_error(their_mean.permute(0, 2, 3, 4, 1).numpy(), np.asarray(mean)) <= 1e-4
  assert helpers.relative_error(their_logvar.permute(0, 2, 3, 4, 1).numpy(), np.asarray(logvar)) <= 1e-4
  assert helpers.relative_error(their_decoded.permute(0, 2, 3, 4, 1).numpy(), np.asarray(decoded)) <= 1e-4

  encoders = torch_motion.MotionEncoders.from_export(runs / "exported" / "motion")
  assert (len(encoders.pose.stages), len(encoders.expression.stages)) == (3, 2)
  motion = models["motion"]
  # Two frames, each the face and the config's close-ups (the pose encoder takes them as frames).
  views = 1 + motion.expression.config.parts
  crops = np.random.default_rng(6).integers(0, 256, (2, views, 16, 16, 3), dtype=np.uint8)
  for name in ("expression", "pose"):
    want = np.asarray(nnx.jit(lambda m, x, name=name: getattr(m, name)(x))(motion, jnp.asarray(crops)))
    with torch.no_grad():
      got = getattr(encoders, name)(torch.from_numpy(crops)).numpy()
    assert got.shape == want.shape and helpers.relative_error(got, want) <= 1e-4


def test_a_whole_sampling_run_in_pytorch_gives_the_jax_video(runs):
  models = jax_models(runs)
  inputs = dit_inputs(7)
  noise = inputs.pop("latents")
  inputs.pop("timestep")
  sigmas = np.asarray(flow.sampling_sigmas(4, 3.0))

  def jax_sample(dit, vae, noise, controls):
    velocity = lambda x, s: dit(x, flow.timesteps(jnp.full((2,), s)), None, **controls)
    latents = samplers.solve(velocity, noise, jnp.asarray(sigmas), "euler")
    return vae.decode(vae.denormalize(latents))

  want = np.asarray(nnx.jit(jax_sample)(models["dit"], models["vae"], jnp.asarray(noise),
                                        jax.tree.map(jnp.asarray, inputs)))

  mirror = torch_dit.PortraitTransformer.from_export(runs / "exported")
  config = json.loads((runs / "exported" / "vae" / "config.json").read_text())
  vae = torch_vae.ExportedVAE.from_export(runs / "exported" / "vae")
  controls = {k: ({n: torch.from_numpy(x) for n, x in v.items()} if isinstance(v, dict) else torch.from_numpy(v))
              for k, v in inputs.items()}
  x = torch.from_numpy(noise)
  with torch.no_grad():
    for sigma, next_sigma in zip(sigmas[:-1], sigmas[1:]):
      x = x + float(next_sigma - sigma) * mirror(x, torch.full((2,), 1000.0 * float(sigma)), None, **controls)
    mean = torch.tensor(config["vae"]["latents_mean"])
    std = torch.tensor(config["vae"]["latents_std"])
    video = vae.decode((x * std + mean).permute(0, 4, 1, 2, 3)).permute(0, 2, 3, 4, 1).numpy()
  mse = np.mean(np.square((video - want) / 2.0))
  assert 10 * np.log10(1.0 / mse) >= 40.0


def test_bfloat16_export_is_the_float32_one_rounded(runs, tmp_path):
  from safetensors.torch import load_file  # pylint: disable=g-import-not-at-top
  export_run.export_run(str(runs / "motion"), str(tmp_path / "bf16"), ema=True, dtype="bfloat16")
  half = load_file(tmp_path / "bf16" / "model.safetensors")
  full = load_file(runs / "exported" / "motion" / "model.safetensors")
  assert set(half) == set(full)
  for name in full:
    assert half[name].dtype == torch.bfloat16
    assert torch.equal(half[name], full[name].to(torch.bfloat16))


def test_import_then_export_gives_back_the_same_tensors_bit_for_bit(data_dir, tmp_path):
  from safetensors.torch import load_file  # pylint: disable=g-import-not-at-top
  reference = helpers.diffusers_wan_model(64, 4, 2, ffn_dim=128, text_dim=64, seed=9)
  reference.save_pretrained(tmp_path / "wan", safe_serialization=True, max_shard_size="100KB")
  assert os.path.isfile(tmp_path / "wan" / "diffusion_pytorch_model.safetensors.index.json")  # sharded
  config = train_config(data_dir, "dit", **WAN_CHANNELS)
  import_run.import_weights(str(tmp_path / "wan"), config, str(tmp_path / "run"))
  export_run.export_run(str(tmp_path / "run"), str(tmp_path / "out"))
  exported = load_file(tmp_path / "out" / "model.safetensors")
  original = reference.state_dict()
  for name, tensor in original.items():
    assert torch.equal(exported[name], tensor), name
  # The controls' output layers start at zero, so the imported model is Wan exactly.
  zero = [name for name in set(exported) - set(original)
          if name.startswith(("condition_embedding", "ray_embedding", "pose_embedding_2")) or ".expression_attn.to_out." in name]
  assert len(zero) == 1 + 2 + 2 + 2 * 2 and all(not torch.any(exported[name]) for name in zero)
  # Every control weight, zero or not, is the seed's own init: only the controls were initialised.
  from flax import traverse_util  # pylint: disable=g-import-not-at-top
  from fp_jax.export import diffusers_wan  # pylint: disable=g-import-not-at-top
  from fp_jax.train import checkpoints  # pylint: disable=g-import-not-at-top
  from fp_jax.train.tasks import get_task  # pylint: disable=g-import-not-at-top
  imported = traverse_util.flatten_dict(checkpoints.latest_params(str(tmp_path / "run"))[0])
  from fp_jax.parallel.sharding import use_mesh  # pylint: disable=g-import-not-at-top
  with use_mesh(helpers.single_device_mesh()):  # a whole init on one device
    fresh = jax.jit(lambda: nnx.state(get_task(config).make_model(nnx.Rngs(config.seed))).to_pure_dict())()
  fresh = traverse_util.flatten_dict(fresh)
  controls = set(fresh) - diffusers_wan.mapped_paths(config.model.layers)
  assert len(controls) > len(zero) and any(np.any(np.asarray(fresh[path])) for path in controls)
  for path in controls:
    np.testing.assert_array_equal(np.asarray(imported[path]), np.asarray(fresh[path]), err_msg=str(path))
  # The imported run trains on: fp-train resumes from the imported step 0.
  config.total_steps = 1
  state = trainer_lib.Trainer(config, str(tmp_path / "run"))
  try:
    assert state.restore_latest() == 0
  finally:
    state.close()


def cli(*args):
  tool = "run_export" if args[0] == "export" else "run_import"
  return subprocess.run([sys.executable, "-c", f"from fp_jax.export.cli import {tool}; {tool}()", *args[1:]],
                        capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS="cpu"))


def test_bad_input_is_one_line_and_writes_nothing(runs, tmp_path):
  result = cli("export", f"--workdir={tmp_path / 'none'}", f"--out={tmp_path / 'out'}")
  assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith("error: no checkpoint under")
  refusals = [result]
  result = cli("export", f"--workdir={runs / 'vae'}", f"--out={runs / 'exported'}")
  assert result.returncode == 2 and "already exists" in result.stderr.strip().splitlines()[-1]
  refusals.append(result)
  broken = helpers.diffusers_wan_model(48, 2, 1, ffn_dim=96, text_dim=64).state_dict()
  from safetensors.torch import save_file  # pylint: disable=g-import-not-at-top
  save_file({k: v.contiguous() for k, v in broken.items() if "ffn" not in k}, str(tmp_path / "broken.safetensors"))
  result = cli("import", f"--from={tmp_path / 'broken.safetensors'}", "--config=configs/tiny.py:dit",
               f"--workdir={tmp_path / 'run'}")
  last = result.stderr.strip().splitlines()[-1]
  assert result.returncode == 2 and last.startswith(f"error: {tmp_path / 'broken.safetensors'} does not fit")
  assert "missing: blocks.0.ffn" in last and last.endswith("(the model of configs/tiny.py:dit)")
  assert not os.path.exists(tmp_path / "out") and not os.path.exists(tmp_path / "run")
  for refusal in refusals + [result]:  # one line each, not a traceback ending in one
    assert "Traceback" not in refusal.stderr, refusal.stderr[-2000:]


def test_a_dit_without_controls_exports_as_a_plain_diffusers_wan(data_dir, tmp_path):
  from diffusers import WanTransformer3DModel  # pylint: disable=g-import-not-at-top
  from safetensors.torch import load_file  # pylint: disable=g-import-not-at-top
  config = train_config(data_dir, "dit")
  config.model.update(helpers.NO_CONTROLS)
  config.input.warped_reference = False
  saved_run(config, tmp_path / "run", 4)
  export_run.export_run(str(tmp_path / "run"), str(tmp_path / "out"))
  exported = json.loads((tmp_path / "out" / "config.json").read_text())
  reference = WanTransformer3DModel(**exported["diffusers"])
  reference.load_state_dict(load_file(tmp_path / "out" / "model.safetensors"), strict=True)


def test_the_pytorch_mirrors_import_no_jax():
  code = ("import sys; import fp_jax.export.torch_dit, fp_jax.export.torch_motion, fp_jax.export.torch_vae; "
          "assert not [m for m in sys.modules if m == 'jax' or m.startswith('jax.')], 'jax imported'")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
  assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("task", ["vae", "motion"])
def test_vae_and_encoders_import_from_pytorch_and_export_back_bit_for_bit(runs, data_dir, tmp_path, task):
  from safetensors.torch import load_file  # pylint: disable=g-import-not-at-top
  source = runs / "exported" / task  # diffusers AutoencoderKLWan names; the motion mirror's names
  config = train_config(data_dir, task, **(POSE_WIDTHS if task == "motion" else {}))
  import_run.import_weights(str(source / "model.safetensors"), config, str(tmp_path / "run"))
  export_run.export_run(str(tmp_path / "run"), str(tmp_path / "out"))
  files = ["model.safetensors"] + (["linear_path.safetensors"] if task == "vae" else [])
  for file in files:
    original, back = load_file(source / file), load_file(tmp_path / "out" / file)
    assert set(original) == set(back)
    for name in original:
      assert torch.equal(original[name], back[name]), f"{file}: {name}"


def test_a_diffusers_vae_imports_only_into_a_config_without_the_linear_path(runs, data_dir, tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  from data_pipeline.errors import InputError  # pylint: disable=g-import-not-at-top
  alone = tmp_path / "diffusers_vae"  # the nets' file without the linear path, as diffusers has it
  alone.mkdir()
  shutil.copy(runs / "exported" / "vae" / "model.safetensors", alone / "model.safetensors")
  with pytest.raises(InputError, match=r"vae.linear_path is set but .*linear_path.safetensors does not exist"):
    import_run.import_weights(str(alone / "model.safetensors"), train_config(data_dir, "vae"), str(tmp_path / "a"))
  assert not (tmp_path / "a").exists()
  config = train_config(data_dir, "vae", **{"vae.linear_path": False})
  import_run.import_weights(str(alone / "model.safetensors"), config, str(tmp_path / "b"))
  assert (tmp_path / "b" / "checkpoints" / "0").is_dir()
