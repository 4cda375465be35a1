"""The training runs the benchmarks measure: one given, or one trained on the spot."""
import tempfile

import ml_collections

from fp_jax.train import checkpoints, trainer


def trained_run(config, workdir, steps, name, data_dir):
  """The EMA parameters, step and saved config (a ConfigDict reading `data_dir`) of the run in
  `workdir`; without one, of a run of `config` first trained for `steps` steps in a new temporary
  folder (no validation, one checkpoint at the end)."""
  if not workdir:
    config.total_steps = steps
    config.eval.every = 0
    config.checkpoint_every = steps
    workdir = tempfile.mkdtemp(prefix=f"{name}_bench_")
    trainer.train(config, workdir)
  params, step, saved = checkpoints.read_run(workdir, None, "ema")
  saved = ml_collections.ConfigDict(saved)
  saved.input.data_dir = data_dir
  return params, step, saved
