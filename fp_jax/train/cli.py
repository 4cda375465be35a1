"""`fp-train --config=configs/NAME.py[:variant] --workdir=DIR [--config.a.b=value ...]`."""
import os
import sys

from absl import flags, logging
from ml_collections import config_flags

from data_pipeline.cli import run as run_cli, writable_directory
from data_pipeline.errors import InputError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file (configs/*.py[:variant]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints and TensorBoard logs go.")


def main(argv):
  del argv
  if _CONFIG.value is None:
    raise InputError("--config is required, e.g. --config=configs/tiny.py:dit")
  workdir = writable_directory(_WORKDIR.value, "workdir")
  logging.set_verbosity(logging.INFO)
  import jax  # pylint: disable=g-import-not-at-top
  from fp_jax.train import trainer  # pylint: disable=g-import-not-at-top
  try:
    step, _ = trainer.train(_CONFIG.value, workdir)
  except trainer.TrainingStopped as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(3)
  if jax.process_index() == 0:
    print(f"trained to step {step}; checkpoints in {os.path.join(workdir, 'checkpoints')}")


def run():
  run_cli(main)
