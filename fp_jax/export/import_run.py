r"""`fp-import`: PyTorch-side weights as step 0 of a training run here.

  fp-import --from=Wan2.1-T2V-1.3B-Diffusers/transformer --config=configs/wan_1_3b.py \
      --workdir=gs://BUCKET/runs/dit_1_3b
  fp-train --config=configs/wan_1_3b.py --workdir=gs://BUCKET/runs/dit_1_3b ...   # resumes from it

By the config's task, `--from` is (safetensors, one file or shards with an index; bf16 widened):
- dit: a diffusers `WanTransformer3DModel` checkpoint; read tensor by tensor into the sharded
  model; the portrait controls keep their zero initialisation (the model is Wan exactly);
- vae: a diffusers `AutoencoderKLWan` checkpoint;
- motion: encoders in the PyTorch mirror's names (`fp_jax/export/torch_motion.py`), e.g. ones a
  user trained elsewhere, or an `fp-export` of a motion run.
The workdir gets an Orbax checkpoint at step 0 in the trainer's format (parameters, fresh
optimizer state, EMA equal to the parameters, the config) with its manifest. Nothing is written
unless the whole checkpoint fits the model.
"""
import os

import jax
import numpy as np
from flax import nnx

from data_pipeline.errors import InputError, require
from fp_jax.export import diffusers_vae, motion_names, wan_init, weights_files
from fp_jax.models.build import create_sharded
from fp_jax.parallel import mesh as mesh_lib
from fp_jax.parallel.sharding import rules_from_config, use_mesh
from fp_jax.train import checkpoints, manifest
from fp_jax.train.optimizer import make_optimizer
from fp_jax.train.tasks import get_task
from fp_jax.train.trainer import initial_state


def _place(params, values):
  """Every leaf of `params` (an nnx.State of sharded arrays) from the numpy tree `values`."""
  current = params.to_pure_dict()
  placed = jax.tree.map(lambda value, old: jax.make_array_from_callback(
      old.shape, old.sharding, lambda index: np.asarray(value, old.dtype)[index]), values, current)
  nnx.replace_by_pure_dict(params, placed)


def _load(task_name, params, source, task):
  if task_name == "dit":
    wan_init.load_wan(params, source, task.model_config.layers)
    return
  values = jax.tree.map(lambda x: np.zeros(x.shape, np.float32), params.to_pure_dict())
  state_dict = weights_files.load_state_dict(source)
  if task_name == "vae":
    diffusers_vae.from_diffusers(state_dict, values, source=source)
  else:
    motion_names.from_state_dict(state_dict, values, source=source)
  _place(params, values)


def import_weights(source, config, workdir, config_name="the config"):
  """Writes step 0 of a run of `config` in `workdir` from the checkpoint `source`."""
  task = get_task(config)
  mesh = mesh_lib.make_mesh(config.mesh)
  rules = rules_from_config(config.logical_axis_rules)
  existing = os.path.join(workdir, "checkpoints")
  require(not (os.path.isdir(existing) and os.listdir(existing)),
          f"{workdir} already holds checkpoints; import into a new workdir")
  model = create_sharded(lambda: task.make_model(nnx.Rngs(config.seed)), mesh, rules)
  _, params = nnx.split(model)
  try:  # the whole file is checked before anything is written
    _load(config.task, params, source, task)
  except InputError as error:
    raise InputError(f"{error} (the model of {config_name})") from None
  tx, _ = make_optimizer(config.optim, config.total_steps)
  with use_mesh(mesh, rules):
    state = initial_state(params, tx, config.seed)
  manager = checkpoints.manager(workdir, config)
  try:
    checkpoints.save(manager, 0, state, None, config)
    manager.wait_until_finished()
    if jax.process_index() == 0:
      manifest.write(os.path.join(manager.directory, "0"))
  finally:
    manager.close()
  return os.path.join(manager.directory, "0")
