"""The trained models a sampling run needs, sharded over the mesh: the DiT (EMA weights) and the
frozen VAE, expression and pose encoders its config names; and the identity embedding, which
evaluation alone reads, where `config.frozen.identity` names its run."""
import dataclasses
import os

import numpy as np
from flax import nnx

from data_pipeline.errors import require
from fp_jax.models.build import create_loaded
from fp_jax.train import checkpoints
from fp_jax.train.tasks import common, get_task

@dataclasses.dataclass
class Models:
  dit: nnx.Module
  vae: nnx.Module
  expression: nnx.Module
  pose: nnx.Module
  step: int
  workdir: str
  identity: nnx.Module | None = None
  # The motion run's linear read-out of expression codes into the expression controls, as numpy
  # `kernel [D, C]` and `bias [C]`: evaluation's coefficient error.
  expression_readout: dict | None = None

  def read_coefficients(self, codes):
    """Expression codes `[N, D]` -> the controls `[N, C]` the motion run reads out of them."""
    return np.asarray(codes, np.float64) @ self.expression_readout["kernel"] + self.expression_readout["bias"]


def locate(workdir=None, checkpoint=None):
  """(workdir, step) from `--workdir` (latest step) or `--checkpoint=WORKDIR/checkpoints/STEP`."""
  require(bool(workdir) != bool(checkpoint), "give either --workdir or --checkpoint")
  if workdir:
    return workdir, None
  path = os.path.abspath(checkpoint.rstrip("/"))
  parent, step = os.path.split(path)
  require(step.isdigit() and os.path.basename(parent) == "checkpoints",
          f"--checkpoint must be a step directory WORKDIR/checkpoints/STEP, got {checkpoint}")
  return os.path.dirname(parent), int(step)


def check_same_model(saved, config, where):
  differences = checkpoints.model_differences(saved, config)
  require(not differences, f"{where} was trained with another config: {differences}")


def load(config, mesh, rules, workdir=None, checkpoint=None):
  workdir, step = locate(workdir, checkpoint)
  params, step, saved = checkpoints.read_run(workdir, step, "ema")
  require(saved.get("task") == "dit", f"{workdir} is a {saved.get('task')!r} run; sampling needs a dit run")
  check_same_model(saved, config, workdir)
  task = get_task(config)
  dit = create_loaded(lambda: task.make_model(nnx.Rngs(0)), params, mesh, rules)
  require(config.frozen.vae and config.frozen.motion,
          "the config names no trained VAE or motion run (config.frozen.vae, config.frozen.motion)")
  vae_params, _ = checkpoints.read_frozen(config.frozen.vae, config, task="vae")
  vae = create_loaded(lambda: common.make_vae(config, nnx.Rngs(0)), vae_params, mesh, rules)
  motion_params, _ = checkpoints.read_frozen(config.frozen.motion, config, task="motion")
  expression = create_loaded(lambda: common.make_expression_encoder(config, nnx.Rngs(0)), motion_params["expression"],
                             mesh, rules)
  pose = create_loaded(lambda: common.make_pose_encoder(config, nnx.Rngs(0)), motion_params["pose"], mesh, rules)
  identity = None
  if config.frozen.get("identity"):
    identity_params, _ = checkpoints.read_frozen(config.frozen.identity, config, task="identity")
    identity = create_loaded(lambda: common.make_identity_encoder(config, nnx.Rngs(0)), identity_params, mesh, rules)
  readout = {name: np.asarray(value, np.float64) for name, value in motion_params["readout"].items()}
  return Models(dit, vae, expression, pose, step, workdir, identity, readout)
