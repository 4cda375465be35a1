r"""`fp-sample`: a portrait animated by a driving video, seen through a camera trajectory.

  fp-sample --config=configs/tiny.py --workdir=RUN (or --checkpoint=RUN/checkpoints/STEP) \
      --image=portrait.png --driving=driving.mp4 [--tracking=tracking.npz] \
      --camera=frontal|novel:<yaw>,<pitch>|turntable|spiral|dolly|cameras.json \
      --mode=static-frontal|static-novel|camera-sweep|all-moving|expression-only|pose-only \
      --out=out.mp4
Several modes at once share one loaded and compiled model: `--mode=static-frontal,pose-only
--out=DIR` writes DIR/static-frontal.mp4 and DIR/pose-only.mp4.
Sampler, steps and guidance come from the config (`--config.sample.steps=30`, ...).
"""
from absl import flags
from ml_collections import config_flags

from data_pipeline.cli import run as run_cli
from data_pipeline.errors import InputError
from fp_jax.host_memory import keep_freed_memory_on_cpu

_CONFIG = config_flags.DEFINE_config_file("config", None, "The DiT run's config (configs/*.py).", lock_config=True)
flags.DEFINE_string("workdir", None, "The dit training run (its latest checkpoint).")
flags.DEFINE_string("checkpoint", None, "A step of a run: WORKDIR/checkpoints/STEP.")
flags.DEFINE_string("image", None, "The portrait: an image file, or clip:SPLIT/INDEX[@FRAME].")
flags.DEFINE_string("driving", "", "A video file, a folder of frames, or clip:SPLIT/INDEX.")
flags.DEFINE_string("tracking", "", "Per-frame head pose (and expression, cameras): .npz or .json.")
flags.DEFINE_string("camera", "", "A camera preset or a cameras .json (default: the mode's).")
flags.DEFINE_string("mode", "static-frontal", "Which signals the driving clip drives; comma-separated for several.")
flags.DEFINE_enum("motion", "relative", ["relative", "absolute"], "Driving motion as a change, or as is.")
flags.DEFINE_float("strength", 1.0, "Multiplier of the driving motion.")
flags.DEFINE_float("smooth", 0.0, "Gaussian smoothing of the driving signals (sigma, frames).")
flags.DEFINE_string("crop", "", "Portrait region x0,y0,x1,y1 (default: the largest centred one).")
flags.DEFINE_integer("frames", 0, "Output length when no driving clip sets it.")
flags.DEFINE_integer("seed", 0, "Noise seed.")
flags.DEFINE_string("out", None, "The video to write (.mp4; a folder for several modes); panel, pasted-back "
                    "and settings beside it.")
flags.DEFINE_boolean("preview_camera", False, "Only render the template along the cameras, then stop.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  if _CONFIG.value is None:
    raise InputError("--config is required, e.g. --config=configs/tiny.py")
  for name in ("image", "out"):
    if not getattr(FLAGS, name):
      raise InputError(f"--{name} is required")
  from fp_jax.parallel import distributed  # pylint: disable=g-import-not-at-top
  distributed.initialize_from_env()  # every host of a pod runs this same command
  from fp_jax.sample import pipeline, run  # pylint: disable=g-import-not-at-top
  jobs = [(pipeline.Request(
      image=FLAGS.image, driving=FLAGS.driving, tracking=FLAGS.tracking, camera=FLAGS.camera, mode=mode,
      motion=FLAGS.motion, strength=FLAGS.strength, smooth=FLAGS.smooth, crop=FLAGS.crop, frames=FLAGS.frames,
      seed=FLAGS.seed), out) for mode, out in run.outputs_for_modes(FLAGS.mode.split(","), FLAGS.out)]
  all_written = run.sample_all(_CONFIG.value, jobs, FLAGS.workdir, FLAGS.checkpoint, FLAGS.preview_camera)
  for (request, _), written in zip(jobs, all_written):
    for name, path in written.items():
      print(f"{request.mode} {name}: {path}" if len(jobs) > 1 else f"{name}: {path}")


def run():
  keep_freed_memory_on_cpu()  # first: before any thread takes a malloc arena
  run_cli(main)
