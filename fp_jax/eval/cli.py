r"""`fp-eval`: self-reenactment scores of a dit run on held-out identities, with baselines.

  fp-eval --config=configs/tiny.py --workdir=RUN --split=test --out=report.json [--clips=4]
      [--lpips=FILE[,FILE]] [--config.frozen.identity=IDENTITY_RUN]
Writes report.json (psnr, baseline_psnr, pose_error_deg, baseline_pose_error_deg, ...) and
report.md beside it. See fp_jax/eval/evaluate.py for what is measured; identity similarity is
scored where the config names an identity run (fp-train --config=configs/tiny.py:identity).
"""
import os
import shlex
import sys

from absl import flags
from ml_collections import config_flags

from data_pipeline.cli import run as run_cli
from data_pipeline.errors import InputError, require
from fp_jax.host_memory import keep_freed_memory_on_cpu

_CONFIG = config_flags.DEFINE_config_file("config", None, "The dit run's config (configs/*.py).", lock_config=True)
flags.DEFINE_string("workdir", None, "The dit training run.")
flags.DEFINE_string("split", "test", "Held-out split of the config's dataset.")
flags.DEFINE_integer("clips", 4, "Clips to evaluate: each identity's first clip in turn, then their seconds, ...")
flags.DEFINE_integer("seed", 0, "Noise seed.")
flags.DEFINE_string("out", None, "report.json to write (report.md beside it).")
flags.DEFINE_string("lpips", "", "LPIPS AlexNet weights (safetensors; fp_jax/eval/lpips.py): also score LPIPS.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  if _CONFIG.value is None:
    raise InputError("--config is required, e.g. --config=configs/tiny.py")
  require(FLAGS.workdir and FLAGS.out, "--workdir and --out are required")
  require(FLAGS.out.endswith(".json"), f"--out must name a .json file, got {FLAGS.out!r}")
  folder = os.path.dirname(os.path.abspath(FLAGS.out))
  require(os.path.isdir(folder), f"--out: the folder of {FLAGS.out} does not exist")
  # Checked now, not after the evaluation's minutes: where the reports could not be written.
  require(os.access(folder, os.W_OK | os.X_OK), f"--out: cannot write in {folder}")
  for path in (FLAGS.out, os.path.splitext(FLAGS.out)[0] + ".md"):
    require(not os.path.isdir(path), f"--out: {path} is a folder")
  require(FLAGS.clips >= 1, f"--clips must be >= 1, got {FLAGS.clips}")
  from fp_jax.parallel import distributed  # pylint: disable=g-import-not-at-top
  distributed.initialize_from_env()
  import jax  # pylint: disable=g-import-not-at-top
  from fp_jax.eval import evaluate, lpips, report  # pylint: disable=g-import-not-at-top
  from fp_jax.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  from fp_jax.parallel.sharding import rules_from_config  # pylint: disable=g-import-not-at-top
  from fp_jax.sample import models as models_lib  # pylint: disable=g-import-not-at-top
  lpips_params = lpips.load(FLAGS.lpips) if FLAGS.lpips else None  # bad weights fail before any work
  config = _CONFIG.value
  if lpips_params is not None:  # frames too small for it fail now, not after the first clip's sampling
    lpips.check_size(int(config.sample.height), int(config.sample.width))
  mesh = mesh_lib.make_mesh(config.mesh)
  rules = rules_from_config(config.logical_axis_rules)
  models = models_lib.load(config, mesh, rules, FLAGS.workdir)
  summary, rows = evaluate.evaluate(config, models, mesh, rules, FLAGS.split, FLAGS.clips, FLAGS.seed,
                                   lpips_params=lpips_params)
  if jax.process_index() == 0:
    command = "fp-eval " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    for path in report.write(FLAGS.out, summary, rows, command, FLAGS.seed):
      print(f"wrote {path}")
    for key in ("psnr", "baseline_psnr", "pose_error_deg", "baseline_pose_error_deg", "identity_similarity",
                "identity_impostor_similarity"):
      if key in summary:
        print(f"{key}: {summary[key]:.3f}")


def run():
  keep_freed_memory_on_cpu()  # first: before any thread takes a malloc arena
  run_cli(main)
