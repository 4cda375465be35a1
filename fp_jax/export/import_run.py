r"""`fp-import`: PyTorch-side weights as step 0 of a training run here.

  fp-import --from=Wan2.1-T2V-1.3B-Diffusers/transformer --config=configs/wan_1_3b.py \
      --workdir=/gcs/BUCKET/runs/dit_1_3b
  fp-train --config=configs/wan_1_3b.py --workdir=/gcs/BUCKET/runs/dit_1_3b ...   # resumes from it

By the config's task, `--from` is (safetensors, one file or shards with an index; bf16 widened):
- dit: a diffusers `WanTransformer3DModel` checkpoint, read tensor by tensor into the sharded
  model; only the portrait controls, which Wan lacks, are initialised (their outputs start at
  zero, so the model is Wan exactly);
- vae: a diffusers `AutoencoderKLWan` checkpoint; a config with `vae.linear_path` also reads the
  `linear_path.safetensors` that `fp-export` writes beside it (a diffusers VAE has none);
- motion, identity: encoders in the PyTorch mirror's names (`fp_jax/export/torch_motion.py`), e.g.
  ones a user trained elsewhere, or an `fp-export` of a motion or identity run.
The workdir gets an Orbax checkpoint at step 0 in the trainer's format (parameters, fresh
optimizer state, EMA equal to the parameters, the config) with its manifest. Nothing is written
unless the whole checkpoint fits the model.
"""
import os

import jax
import numpy as np
from flax import nnx

from data_pipeline.errors import InputError, require, require_local_path
from fp_jax.export import diffusers_vae, motion_names, wan_init, weights_files
from fp_jax.export.export_run import LINEAR_PATH_FILE
from fp_jax.models.build import abstract_sharded, loaded
from fp_jax.parallel import mesh as mesh_lib
from fp_jax.parallel.sharding import rules_from_config, use_mesh
from fp_jax.train import checkpoints, manifest
from fp_jax.train.optimizer import make_optimizer
from fp_jax.train.tasks import get_task
from fp_jax.train.trainer import initial_state


def _model(task_name, make_model, abstract, source, task, mesh, rules):
  """The imported model: every weight from `source` (a Wan checkpoint lacks the portrait controls,
  which alone are initialised), in its shards. Raises `InputError` before placing anything."""
  if task_name == "dit":
    return wan_init.wan_model(make_model, abstract, source, task.model_config.layers, mesh, rules)
  values = jax.tree.map(lambda x: np.zeros(x.shape, np.float32), abstract[1].to_pure_dict())
  state_dict = weights_files.load_state_dict(source)
  if task_name == "vae":
    linear = values.pop("linear_path", None)
    diffusers_vae.from_diffusers(state_dict, values, source=source)
    if linear is not None:
      values["linear_path"] = _linear_path(linear, source)
  else:
    motion_names.from_state_dict(state_dict, values, source=source)
  return loaded(abstract, values)


def _linear_path(wanted, source):
  """The linear path of a VAE exported by fp-export, from the file beside `source`."""
  path = os.path.join(os.path.dirname(os.path.abspath(source)), LINEAR_PATH_FILE)
  require(os.path.exists(path), f"vae.linear_path is set but {path} does not exist (fp-export writes it "
                                f"beside model.safetensors; for a diffusers VAE set --config.vae.linear_path=False)")
  saved = weights_files.load_state_dict(path)
  problems = [f"{name} {np.shape(saved.get(name))} vs ours {np.shape(value)}" for name, value in wanted.items()
              if name not in saved or np.shape(saved[name]) != np.shape(value)]
  require(not problems and set(saved) == set(wanted),
          f"{path} does not hold the linear path of this VAE: {'; '.join(problems) or sorted(saved)}")
  return {name: np.asarray(saved[name], np.float32) for name in wanted}


def import_weights(source, config, workdir, config_name="the config"):
  """Writes step 0 of a run of `config` in `workdir` from the checkpoint `source`."""
  task = get_task(config)
  mesh = mesh_lib.make_mesh(config.mesh)
  rules = rules_from_config(config.logical_axis_rules)
  require_local_path(workdir, "--workdir")
  existing = os.path.join(workdir, "checkpoints")
  require(not (os.path.isdir(existing) and os.listdir(existing)),
          f"{workdir} already holds checkpoints; import into a new workdir")
  make_model = lambda: task.make_model(nnx.Rngs(config.seed))
  abstract = abstract_sharded(make_model, mesh, rules)
  try:  # the whole file is checked before anything is written
    model = _model(config.task, make_model, abstract, source, task, mesh, rules)
  except InputError as error:
    raise InputError(f"{error} (the model of {config_name})") from None
  _, params = nnx.split(model)
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
