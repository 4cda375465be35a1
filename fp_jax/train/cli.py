"""`fp-train --config=configs/NAME.py[:variant] --workdir=DIR [--config.a.b=value ...]`."""
import difflib
import importlib.util
import os
import sys

from absl import flags, logging
from ml_collections import config_flags

from data_pipeline.cli import run as run_cli, writable_directory
from data_pipeline.errors import InputError
from fp_jax.host_memory import keep_freed_memory_on_cpu

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file (configs/*.py[:variant]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints and TensorBoard logs go.")


def main(argv):
  del argv
  if _CONFIG.value is None:
    raise InputError("--config is required, e.g. --config=configs/tiny.py:dit")
  created = bool(_WORKDIR.value) and not os.path.isdir(_WORKDIR.value)
  workdir = writable_directory(_WORKDIR.value, "workdir")
  checkpoint_dir = os.path.join(workdir, "checkpoints")
  had_checkpoints = os.path.isdir(checkpoint_dir)
  from fp_jax.parallel import distributed  # pylint: disable=g-import-not-at-top
  distributed.initialize_from_env()  # started by launch/local_multiprocess.py or launch/tpu_vm.sh
  logging.set_verbosity(logging.WARNING)  # Orbax is chatty; metrics are printed below
  import jax  # pylint: disable=g-import-not-at-top
  from fp_jax.train import trainer  # pylint: disable=g-import-not-at-top
  try:
    step, _ = trainer.train(_CONFIG.value, workdir)
  except trainer.TrainingStopped as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(3)
  except InputError:
    # A run refused at start-up (a bad init.run, optim.frozen, ...) leaves no empty folders behind:
    # the checkpoint manager makes its folder before the model and optimizer are checked.
    if not had_checkpoints:
      _remove_if_empty(checkpoint_dir)
    if created:
      _remove_if_empty(workdir)
    raise
  if jax.process_index() == 0:
    total = _CONFIG.value.total_steps
    if step < total:  # only a SIGTERM ends the loop early without an error
      print(f"stopped on SIGTERM at step {step} of {total}; checkpoint saved in "
            f"{os.path.join(workdir, 'checkpoints')}: the same command resumes it")
    else:
      print(f"trained to step {step}; checkpoints in {os.path.join(workdir, 'checkpoints')}")


def _remove_if_empty(path):
  try:
    os.rmdir(path)  # only ever removes an empty folder
  except OSError:
    pass  # something was written there (or another process of the job removed it first)


def _flat_keys(config, prefix=""):
  for key, value in config.items():
    name = f"{prefix}{key}"
    yield name
    if hasattr(value, "items"):
      yield from _flat_keys(value, name + ".")


def check_overrides(argv):
  """`--config.a.b=...` naming no field: one line naming it and the nearest field."""
  path = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
  overrides = [a[len("--config."):].split("=", 1)[0] for a in argv if a.startswith("--config.")]
  if not path or not overrides:
    return
  file, _, variant = path.partition(":")
  if not os.path.isfile(file):
    raise InputError(f"--config: no such file {file}")
  spec = importlib.util.spec_from_file_location("fp_train_config", file)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  try:
    config = module.get_config(variant) if variant else module.get_config()
  except ValueError as error:
    raise InputError(f"--config={path}: {error}") from None
  names = set(_flat_keys(config))
  for key in overrides:
    if key not in names:
      parent = key.rpartition(".")[0]
      leaf = key.rpartition(".")[2]
      siblings = {n.rpartition(".")[2]: n for n in names if n.rpartition(".")[0] == parent}
      close = difflib.get_close_matches(leaf, sorted(siblings), n=1, cutoff=0.2) if parent in names else []
      nearest = [siblings[close[0]]] if close else difflib.get_close_matches(key, sorted(names), n=1)
      hint = f"; did you mean {nearest[0]!r}?" if nearest else ""
      raise InputError(f"the config {path} has no field {key!r}{hint}")


def run():
  keep_freed_memory_on_cpu()  # first: before any thread takes a malloc arena
  try:
    check_overrides(sys.argv[1:])
  except InputError as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)
  run_cli(main)
