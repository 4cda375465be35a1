"""Every `eval.every` steps: the loss on held-out clips and a short sample video.

The validation batches are the same at every evaluation: the `eval.split` split, unshuffled,
every condition kept (no drop), the EMA parameters. The task's `sample` (if it has one: the
VAE's reconstruction, the DiT's generation from noise) turns the first batch into videos, which
go to TensorBoard as frame strips and to `WORKDIR/samples/step_N.mp4` (process 0 writes).
"""
import copy
import os

import jax
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from data_pipeline import input_pipeline
from data_pipeline.video_io import write_video
from fp_jax.parallel import global_batches


def validation_input(config):
  """The training input config turned into a fixed, fully conditioned validation stream."""
  values = copy.deepcopy(config.input)
  with values.unlocked():
    values.split = config.eval.split
    values.shuffle = False
    values.num_epochs = 0  # repeats, so a split smaller than the batches still fills them
    values.verify = "count"  # the full check ran when training started
    values.workers.count = 0  # a short pass: starting workers would cost more than it saves
    for name in values.drop:
      values.drop[name] = 0.0
  return values


def validation_metrics(task, graphdef, frozen_graphdef):
  """`(params, frozen_state, batch) -> metrics` of the task's loss on validation batches.
  Augmentation is for training: a task whose loss reads its key only to augment
  (`augments_with_key`: motion, identity) is scored on the crops as they are; the others need
  theirs (the DiT's noise levels, the VAE's crops), the same one at every evaluation."""
  key = None if getattr(task, "augments_with_key", False) else jax.random.key(0)

  def metrics(params, frozen_state, batch):
    loss, values = task.loss(nnx.merge(graphdef, params), nnx.merge(frozen_graphdef, frozen_state), batch, key)
    return dict(values, loss=loss)

  return metrics


def _gather(tree):
  if jax.process_count() == 1:
    return jax.device_get(tree)
  return multihost_utils.process_allgather(tree, tiled=True)


class Evaluator:

  def __init__(self, config, task, mesh, graphdef, frozen_graphdef, workdir):
    self.config, self.task, self.mesh = config, task, mesh
    self.input_config = validation_input(config)
    # Opened now, so a missing or unfit validation split fails before any compilation.
    input_pipeline.make_dataset(self.input_config, jax.process_index(), jax.process_count())
    self.samples_dir = os.path.join(workdir, "samples")

    self._metrics = jax.jit(validation_metrics(task, graphdef, frozen_graphdef))
    self._sample = None
    if hasattr(task, "sample"):
      steps = config.eval.sample_steps
      self._sample = jax.jit(lambda params, frozen_state, batch: task.sample(
          nnx.merge(graphdef, params), nnx.merge(frozen_graphdef, frozen_state), batch,
          jax.random.key(1), steps))

  def _batches(self):
    host = input_pipeline.make_iterator(self.input_config, jax.process_index(), jax.process_count())
    batches = global_batches.GlobalBatchIterator(host, self.mesh, prefetch=1)
    try:
      for _ in range(self.config.eval.batches):
        yield next(batches)
    finally:
      batches.close()

  def run(self, step, params, frozen_state, writer):
    """Evaluates `params`; writes `validation/*` scalars and the sample; returns the scalars."""
    history, first = [], None
    for batch in self._batches():
      history.append(self._metrics(params, frozen_state, batch))
      first = batch if first is None else first
    history = jax.device_get(history)
    summary = {f"validation/{name}": float(np.mean([m[name] for m in history])) for name in history[0]}
    writer.write_scalars(step, summary)
    if self._sample is not None:
      self._write_sample(step, _gather(self._sample(params, frozen_state, first)), writer)
    return summary

  def _write_sample(self, step, videos, writer):
    """Videos `{name: [B, T, H, W, 3]}` side by side, examples stacked: one panel video."""
    panel = np.concatenate([np.asarray(video) for video in videos.values()], axis=3)  # names across
    panel = np.concatenate(list(panel), axis=1)  # examples down
    strip = np.concatenate(list(panel[:9]), axis=1)  # up to 9 frames across, for TensorBoard
    writer.write_images(step, {"samples/" + "_vs_".join(videos): strip[None]})
    if jax.process_index() == 0:
      os.makedirs(self.samples_dir, exist_ok=True)
      write_video(os.path.join(self.samples_dir, f"step_{step:08d}.mp4"), panel, self.config.eval.sample_fps)
