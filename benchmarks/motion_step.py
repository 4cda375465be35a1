"""What crop jitter costs inside the motion task's step, against the jitter timed alone.

  python benchmarks/motion_step.py [--batch=128] [--repeats=9]
      [--jitter="shift=3;shift=3,brightness=0.1,contrast=0.2,gain=0.1,noise=0.01"]

Builds configs/tiny.py:motion's models and times, on one device, the jitted gradient of the
motion task's loss (`MotionTask.loss`, mirroring as the config sets it; the optimizer's update
does not depend on the jitter and is left out) on a batch of random crops of the config's shape,
once without jitter and once with each `;`-separated setting of `--jitter` (NAME=VALUE of
fp_jax/train/jitter.py's FIELDS). The settings take turns within every repeat, so a machine
that slows down slows them alike. Prints per setting (`none` first):
  motion_grad_ms_<i>: X ms          the median gradient step (i: 0 none, then --jitter's order)
  motion_grad_ratio_<i>: X          its median over the unjittered one's
  jitter_alone_ms_<i>: X ms         the same jitter on the same crops, jitted by itself
"""
import argparse
import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
from flax import nnx  # pylint: disable=g-import-not-at-top

from expression_fit import fail  # pylint: disable=g-import-not-at-top  # benchmarks/expression_fit.py
from configs import tiny  # pylint: disable=g-import-not-at-top
from data_pipeline.errors import InputError  # pylint: disable=g-import-not-at-top
from fp_jax.models.motion import to_unit_range  # pylint: disable=g-import-not-at-top
from fp_jax.train import jitter  # pylint: disable=g-import-not-at-top
from fp_jax.train.tasks.motion_task import MotionTask  # pylint: disable=g-import-not-at-top


def parse_settings(text):
  """`;`-separated jitter settings, each comma-separated NAME=VALUE -> a list of dicts."""
  settings = []
  for group in (part for part in text.split(";") if part):
    one = jitter.parse_settings(group)
    if not jitter.is_active(one):
      raise InputError(f"{group!r} jitters nothing")
    settings.append(one)
  return settings


def random_batch(config, batch_size, seed=0):
  """Random crops and targets of the motion input's shapes (one frame an example)."""
  rng = np.random.default_rng(seed)
  size = config.input.face_crop.size
  views = 1 + len(config.motion.expression_parts)
  rotation = np.tile(np.array([1.0, 0, 0, 0, 1.0, 0], np.float32), (batch_size, 1, 1))
  pose = np.concatenate([rotation, rng.normal(0, 0.05, (batch_size, 1, 3)), np.ones((batch_size, 1, 1))], -1)
  return dict(
      driving=jnp.asarray(rng.integers(0, 256, (batch_size, 1, views, size, size, 3), np.uint8)),
      expression=jnp.asarray(rng.normal(0, 0.2, (batch_size, 1, config.motion.num_controls)), jnp.float32),
      head_pose=jnp.asarray(pose, jnp.float32),
      extrinsics=jnp.asarray(np.tile(np.eye(3, 4, dtype=np.float32), (batch_size, 1, 1, 1))))


def gradient_step(settings):
  """A jitted `(params, batch, key) -> gradients` of the motion loss under `settings`, and params."""
  config = tiny.get_config("motion")
  config.motion_loss.jitter.update(settings)
  task = MotionTask(config)
  graphdef, params = nnx.split(task.make_model(nnx.Rngs(0)))
  loss = lambda params, batch, key: task.loss(nnx.merge(graphdef, params), {}, batch, key)[0]
  return jax.jit(jax.grad(loss)), params


def timed(fn, *args):
  start = time.perf_counter()
  jax.block_until_ready(fn(*args))
  return time.perf_counter() - start


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--repeats", type=int, default=9)
  parser.add_argument("--jitter", default="shift=3;shift=3,brightness=0.1,contrast=0.2,gain=0.1,noise=0.01")
  args = parser.parse_args()
  if args.batch < 1 or args.repeats < 1:
    fail("--batch and --repeats must be >= 1")
  try:
    settings = [{}] + parse_settings(args.jitter)
  except InputError as error:
    fail(f"--jitter: {error}")
  batch = random_batch(tiny.get_config("motion"), args.batch)
  key = jax.random.key(0)
  steps = [gradient_step(one) for one in settings]
  images = to_unit_range(batch["driving"])
  alone = [jax.jit(lambda images, key, one=one: jitter.jitter_crops(images, key, one)) for one in settings[1:]]
  for (step, params) in steps:  # compile and warm up
    timed(step, params, batch, key)
  for fn in alone:
    timed(fn, images, key)
  grad_times = [[] for _ in settings]
  alone_times = [[] for _ in alone]
  for repeat in range(args.repeats):
    turn = jax.random.fold_in(key, repeat)
    for index, (step, params) in enumerate(steps):
      grad_times[index].append(timed(step, params, batch, turn))
    for index, fn in enumerate(alone):
      alone_times[index].append(timed(fn, images, turn))
  base = np.median(grad_times[0])
  for index, one in enumerate(settings):
    label = ",".join(f"{name}={value:g}" for name, value in one.items() if value) or "none"
    print(f"# {index}: {label}")
    print(f"motion_grad_ms_{index}: {np.median(grad_times[index]) * 1000:.1f} ms")
    print(f"motion_grad_ratio_{index}: {np.median(grad_times[index]) / base:.3f}")
    if index:
      print(f"jitter_alone_ms_{index}: {np.median(alone_times[index - 1]) * 1000:.1f} ms")


if __name__ == "__main__":
  main()
