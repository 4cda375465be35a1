r"""`fp-import`: a diffusers Wan checkpoint as step 0 of a training run of our DiT.

  fp-import --from=Wan2.1-T2V-1.3B-Diffusers/transformer --config=configs/wan_1_3b.py \
      --workdir=gs://BUCKET/runs/dit_1_3b
  fp-train --config=configs/wan_1_3b.py --workdir=gs://BUCKET/runs/dit_1_3b ...   # resumes from it

The checkpoint (safetensors, one file or shards with an index; bf16 widened) is read tensor by
tensor into the sharded model; the portrait controls keep their zero initialisation. The workdir
gets an Orbax checkpoint at step 0 in the trainer's format (parameters, fresh optimizer state,
EMA equal to the parameters, the config), with its manifest.
"""
import os

import jax
from flax import nnx

from data_pipeline.errors import InputError, require
from fp_jax.export import wan_init
from fp_jax.models.build import create_sharded
from fp_jax.parallel import mesh as mesh_lib
from fp_jax.parallel.sharding import rules_from_config, use_mesh
from fp_jax.train import checkpoints, manifest
from fp_jax.train.optimizer import make_optimizer
from fp_jax.train.tasks import get_task
from fp_jax.train.trainer import initial_state


def import_wan(source, config, workdir, config_name="the config"):
  """Writes step 0 of a dit run in `workdir` from the diffusers checkpoint `source`."""
  require(config.task == "dit", f"fp-import makes dit runs; the config's task is {config.task!r}")
  task = get_task(config)
  mesh = mesh_lib.make_mesh(config.mesh)
  rules = rules_from_config(config.logical_axis_rules)
  existing = os.path.join(workdir, "checkpoints")
  require(not (os.path.isdir(existing) and os.listdir(existing)),
          f"{workdir} already holds checkpoints; import into a new workdir")
  model = create_sharded(lambda: task.make_model(nnx.Rngs(config.seed)), mesh, rules)
  _, params = nnx.split(model)
  try:  # checks the whole file before anything is written
    wan_init.load_wan(params, source, task.model_config.layers)
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
