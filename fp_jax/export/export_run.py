r"""`fp-export`: a training run's weights as safetensors + config.json, for PyTorch.

  fp-export --workdir=outputs/demo/dit --out=exported [--step=N] [--ema] [--dtype=bfloat16]

What a run's task gives:
- dit: `model.safetensors` with the Wan core under diffusers' `WanTransformer3DModel` names
  (it loads into that model as is) and the portrait controls under the PyTorch mirror's names
  (`fp_jax/export/torch_dit.py` loads the whole). With `model.reference_residual` or
  `model.sigma_data` the core's output is the network's, from which the mirror derives the
  velocity (`fp_jax/models/preconditioning.py`); plus `vae/` and `motion/` exported from the
  frozen runs the config names (their EMA weights, which training used).
- vae: `model.safetensors` under diffusers' `AutoencoderKLWan` names; with `vae.linear_path`, the
  linear path in `linear_path.safetensors` beside it (`fp_jax/export/torch_vae.py` adds it).
- motion: `model.safetensors` for `fp_jax/export/torch_motion.py` (`MotionEncoders`).
- identity: `model.safetensors` for `fp_jax/export/torch_motion.py` (`IdentityEncoder`).
Each folder's `config.json` holds our config section, the diffusers constructor arguments where
one exists, the step and which weights. Tensors are written one by one (no second copy of the
model in memory); the output folder appears only when complete.
"""
import dataclasses
import json
import os
import shutil

import ml_collections
import numpy as np

from data_pipeline import durable
from data_pipeline.errors import InputError, require
from fp_jax.export import diffusers_vae, diffusers_wan, motion_names, safetensors_stream
from fp_jax.models.dit_config import DiTConfig
from fp_jax.train import checkpoints
from fp_jax.train.tasks import common

MODEL_FILE, CONFIG_FILE, LINEAR_PATH_FILE = "model.safetensors", "config.json", "linear_path.safetensors"


def _write_tensors(directory, entries, dtype, config):
  """`entries()`: yields (name, array) in a fixed order; called twice (shapes, then bytes)."""
  shapes = [(name, np.shape(value)) for name, value in entries()]
  safetensors_stream.write(os.path.join(directory, MODEL_FILE), shapes, entries, dtype,
                           metadata={"format": "pt"})
  with open(os.path.join(directory, CONFIG_FILE), "w") as f:
    json.dump(config, f, indent=1)


def wan_diffusers_config(model):
  """`WanTransformer3DModel` constructor arguments for our `DiTConfig`."""
  return dict(patch_size=list(model.patch), num_attention_heads=model.heads,
              attention_head_dim=model.dim // model.heads, in_channels=model.in_channels,
              out_channels=model.out_channels, text_dim=model.text_dim, freq_dim=model.freq_dim,
              ffn_dim=model.ffn_dim, num_layers=model.layers, cross_attn_norm=True, eps=model.eps)


def _export(params, run_config, step, which, dtype, directory):
  task = run_config["task"]
  about = dict(task=task, step=step, weights=which, dtype=dtype)
  if task == "dit":
    model = DiTConfig.from_config(run_config["model"])
    entries = lambda: diffusers_wan.to_diffusers(params, model.layers, model.patch, controls=True)
    _write_tensors(directory, entries, dtype, dict(about, model=dataclasses.asdict(model),
                                                   diffusers=wan_diffusers_config(model)))
  elif task == "vae":
    nets = {name: value for name, value in params.items() if name != "linear_path"}
    shapes = diffusers_vae.their_shapes(nets)
    entries = lambda: diffusers_vae.to_diffusers(nets, shapes)
    vae = dataclasses.asdict(common.vae_config(ml_collections.ConfigDict(run_config)))
    _write_tensors(directory, entries, dtype, dict(about, vae=vae, diffusers=diffusers_vae.diffusers_config(vae)))
    if "linear_path" in params:
      linear = sorted(params["linear_path"].items())
      safetensors_stream.write(os.path.join(directory, LINEAR_PATH_FILE),
                               [(name, np.shape(value)) for name, value in linear], lambda: iter(linear), dtype,
                               metadata={"format": "pt"})
  elif task in ("motion", "identity"):  # image encoders, the identity run's one named as the motion mirror's
    entries = lambda: motion_names.to_state_dict(params)
    section = dict(run_config[task], widths=list(run_config[task]["widths"]))
    _write_tensors(directory, entries, dtype, dict(about, **{task: section}))
  else:
    raise InputError(f"cannot export a run of task {task!r}")


def export_run(workdir, out, step=None, ema=False, dtype="float32"):
  """Exports the run in `workdir` (and, for a dit run, its frozen VAE and motion runs) to `out`."""
  require(dtype in safetensors_stream.DTYPES, f"--dtype must be one of {sorted(safetensors_stream.DTYPES)}")
  require(not os.path.exists(out), f"{out} already exists; remove it or choose another --out")
  which = "ema" if ema else "params"
  params, step, run_config = checkpoints.read_run(workdir, step, which)
  partial = out.rstrip("/") + ".partial"
  shutil.rmtree(partial, ignore_errors=True)
  os.makedirs(partial)
  try:
    _export(params, run_config, step, which, dtype, partial)
    del params
    if run_config["task"] == "dit":
      for name, source in (("vae", run_config["frozen"]["vae"]), ("motion", run_config["frozen"]["motion"])):
        if source:
          frozen, frozen_step, frozen_config = checkpoints.read_run(source, None, "ema")
          os.makedirs(os.path.join(partial, name))
          _export(frozen, frozen_config, frozen_step, "ema", dtype, os.path.join(partial, name))
  except BaseException:
    shutil.rmtree(partial, ignore_errors=True)
    raise
  durable.sync_tree(partial)
  durable.replace(partial, out)
  return out
