"""`fp-export` and `fp-import` (see export_run.py and import_run.py for what they write)."""
from absl import flags, logging
from ml_collections import config_flags

from data_pipeline.cli import run as run_cli
from data_pipeline.errors import InputError

FLAGS = flags.FLAGS


def export_main(argv):
  del argv
  from fp_jax.export import export_run  # pylint: disable=g-import-not-at-top
  if not FLAGS.workdir or not FLAGS.out:
    raise InputError("--workdir and --out are required")
  logging.set_verbosity(logging.WARNING)
  out = export_run.export_run(FLAGS.workdir, FLAGS.out, FLAGS.step, FLAGS.ema, FLAGS.dtype)
  print(f"exported {FLAGS.workdir} to {out}")


def import_main(argv):
  del argv
  from fp_jax.export import import_run  # pylint: disable=g-import-not-at-top
  if not getattr(FLAGS, "from") or FLAGS.config is None or not FLAGS.workdir:
    raise InputError("--from, --config and --workdir are required")
  logging.set_verbosity(logging.WARNING)
  config_name = config_flags.get_config_filename(FLAGS["config"])
  path = import_run.import_weights(getattr(FLAGS, "from"), FLAGS.config, FLAGS.workdir, config_name)
  print(f"imported {getattr(FLAGS, 'from')} as {path}")


def run_export():
  flags.DEFINE_string("workdir", None, "The training run to export.")
  flags.DEFINE_string("out", None, "Folder to create (must not exist).")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
  flags.DEFINE_boolean("ema", False, "Export the EMA weights instead of the raw ones.")
  flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16", "float16"], "Tensor type in the file.")
  run_cli(export_main)


def run_import():
  flags.DEFINE_string("from", None, "diffusers Wan checkpoint: a .safetensors file or a model folder.")
  config_flags.DEFINE_config_file("config", None, "Training config of the dit run to create.", lock_config=True)
  flags.DEFINE_string("workdir", None, "Workdir of the new run (must hold no checkpoint).")
  run_cli(import_main)

