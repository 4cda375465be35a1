"""Shared by the tests that train, save and load runs: the tiny config at test sizes, a run
trained in-process, a saved run of random weights, and reading a run's printed losses."""
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from configs import tiny
from fp_jax.train import trainer as trainer_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A Wan checkpoint reads and writes Wan's 16 latent channels; the tiny config's VAE has 64.
WAN_CHANNELS = {"vae.z_dim": 16, "model.in_channels": 16, "model.out_channels": 16}


def train_config(data_dir, task, **overrides):
  config = tiny.get_config(task)
  config.input.data_dir = data_dir
  config.input.dataset = "tiny"
  config.input.window.num_frames = 5
  config.input.face_crop.size = 16
  config.input.workers.count = 0
  config.motion.widths, config.motion.pose_widths = (8, 16), ()  # the demo's wider pose encoder is not needed
  if task == "motion":
    # The dataset's clips (the demo's run draws fresh people: 128 renders a step), with twins.
    config.input.fresh_people = 0
    config.input.global_batch_size = 8
    config.input.expression_twins = 1  # the path, at a quarter of the rendering cost
  config.log_every = 1
  config.update_from_flattened_dict(overrides)
  return config


def motion_command(data_dir, workdir, *overrides):
  """`fp-train` on the tiny motion task with train_config's settings, plus `overrides` flags."""
  return [sys.executable, "-c", "from fp_jax.train.cli import run; run()",
          "--config=" + os.path.join(ROOT, "configs", "tiny.py") + ":motion", f"--workdir={workdir}",
          f"--config.input.data_dir={data_dir}", "--config.input.dataset=tiny",
          "--config.input.window.num_frames=5", "--config.input.face_crop.size=16",
          "--config.input.workers.count=0", "--config.motion.widths=(8, 16)", "--config.motion.pose_widths=()", "--config.log_every=1",
          "--config.input.fresh_people=0", "--config.input.global_batch_size=8",
          "--config.input.expression_twins=1", *overrides]


def step_losses(output):
  """The training loss of every logged step, in order (validation lines left out)."""
  return [float(line.split(" loss=")[1].split(",")[0]) for line in output.splitlines()
          if line.startswith("step ") and " loss=" in line]


def host(tree):
  return jax.tree.map(np.asarray, jax.device_get(tree))


def run(config, workdir):
  """Trains `config` in this process; its final state, on the host."""
  trainer = trainer_lib.Trainer(config, str(workdir))
  try:
    trainer.run()
    return host(trainer.state)
  finally:
    trainer.close()


def saved_run(config, workdir, seed):
  """A run's checkpoint, in the trainer's format, whose every weight is random (the
  zero-initialised controls included)."""
  from fp_jax.models.build import create_sharded  # pylint: disable=g-import-not-at-top
  from fp_jax.train import checkpoints  # pylint: disable=g-import-not-at-top
  from fp_jax.train.tasks import get_task  # pylint: disable=g-import-not-at-top
  from tests import dit_helpers  # pylint: disable=g-import-not-at-top
  model = create_sharded(lambda: get_task(config).make_model(nnx.Rngs(seed)), dit_helpers.single_device_mesh())
  rng = np.random.default_rng(seed)
  randomise = lambda x: np.asarray(x) + 0.05 * rng.standard_normal(x.shape).astype(np.float32)
  params = jax.tree.map(randomise, nnx.state(model))
  state = dict(params=params, ema=jax.tree.map(randomise, params), step=jnp.ones((), jnp.int32))
  manager = checkpoints.manager(str(workdir), config)
  checkpoints.save(manager, 1, state, None, config)
  manager.wait_until_finished()
  manager.close()


def sample_config(data_dir, root):
  """The tiny dit config at sampling sizes, its frozen VAE and motion runs those under `root`."""
  config = train_config(data_dir, "dit")
  config.frozen.vae, config.frozen.motion = str(root / "vae"), str(root / "motion")
  config.sample.update(height=32, width=32, steps=2)
  return config
