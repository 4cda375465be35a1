r"""`fp-aot`: compile a config's train or sampling step for a TPU topology, on any host.

  fp-aot --config=configs/wan_14b.py --topology=v5p:4x4x4 [--slices=N] [--job=train|sample] \
      [--video=81x480x832] [--config.mesh.fsdp=16 --config.mesh.context=4 ...]

Prints per-chip HBM use against the chip's capacity, FLOPs per step, the estimated step time and
the implied MFU and samples/s, saying how each was estimated (fp_jax/aot/estimate.py), and ends
with `fits:`, `hbm_per_chip_gib:`, `estimated_step_s:` and `estimated_mfu:` lines.
"""
import copy
import math
import os
import sys

from absl import flags
from ml_collections import config_flags

from data_pipeline.cli import run as run_cli
from data_pipeline.errors import require

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config (configs/*.py).", lock_config=True)
_TOPOLOGY = flags.DEFINE_string("topology", None, "TPU slice, e.g. v5p:4x4x4, v6e:8x8.")
_SLICES = flags.DEFINE_integer("slices", 1, "Slices joined over the data-centre network (multi-slice).")
_JOB = flags.DEFINE_enum("job", "train", ["train", "sample"], "The train step or one guided sampling step.")
_VIDEO = flags.DEFINE_string("video", "", "FRAMESxHEIGHTxWIDTH; default: the config's window and its "
                                          "dataset's frame size.")
_TIME = flags.DEFINE_bool("time", True, "Also estimate the step time (two more compiles); false: memory "
                                         "and FLOPs only.")
_SAMPLE_BATCH = flags.DEFINE_integer("sample_batch", 0, "Videos per sampling step (0: the global batch).")

GIB = 2 ** 30


def _video(config):
  from fp_jax.aot.programs import Video  # pylint: disable=g-import-not-at-top
  if _VIDEO.value:
    parts = _VIDEO.value.lower().split("x")
    require(len(parts) == 3 and all(p.isdigit() and int(p) > 0 for p in parts),
            f"--video must be FRAMESxHEIGHTxWIDTH, e.g. 81x480x832; got {_VIDEO.value!r}")
    return Video(*map(int, parts))
  from configs.data import synthetic  # pylint: disable=g-import-not-at-top
  data = synthetic.get_config(config.input.dataset)
  return Video(config.input.window.num_frames, data.height, data.width)


def _mesh_config(config, slices):
  """Several slices: the config's `mesh.dcn`, or data parallelism across them."""
  mesh = dict(config.mesh)
  if slices > 1 and not mesh.get("dcn"):
    mesh["dcn"] = {"data": slices}
  return mesh


def _describe_mesh(mesh):
  return " ".join(f"{axis}={size}" for axis, size in mesh.shape.items())


def _gib(size):
  return f"{size / GIB:.2f}"


def _print_largest(largest):
  print("largest arguments per chip: " + ", ".join(f"{name} {_gib(size)} GiB" for name, size in largest))


def main(argv):
  del argv
  require(_CONFIG.value is not None, "--config is required, e.g. --config=configs/wan_14b.py")
  require(_TOPOLOGY.value, "--topology is required, e.g. --topology=v5p:4x4x4")
  config = copy.deepcopy(_CONFIG.value)
  video = _video(config)
  import jax  # pylint: disable=g-import-not-at-top
  from fp_jax.aot import estimate as estimate_lib, topology  # pylint: disable=g-import-not-at-top
  from fp_jax.models.dit_config import DiTConfig  # pylint: disable=g-import-not-at-top
  from fp_jax.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  from fp_jax.parallel.sharding import rules_from_config  # pylint: disable=g-import-not-at-top

  require(config.task == "dit", f"fp-aot compiles the dit task's steps; this config's task is {config.task!r}")
  model = DiTConfig.from_config(config.model)  # checks the model fields before any compiling
  devices, chip = topology.devices(_TOPOLOGY.value, _SLICES.value)
  config.input.window.num_frames = video.frames
  mesh = mesh_lib.make_mesh(_mesh_config(config, _SLICES.value), devices)
  rules = rules_from_config(config.logical_axis_rules)
  job = _JOB.value
  latent = video.latent_shape(config)
  print(f"fp-aot: job {job}, {_TOPOLOGY.value} x {_SLICES.value} slice(s) = {mesh.size} chips "
        f"({chip.name}, {chip.hbm_gib} GiB HBM, {chip.peak_flops / 1e12:.0f} TFLOP/s bf16 each), "
        f"mesh {_describe_mesh(mesh)}")
  print(f"workload: video {video.frames}x{video.height}x{video.width} (latents {latent[0]}x{latent[1]}x"
        f"{latent[2]}), dim {model.dim} x {model.layers} layers, attention {model.attention}, "
        f"remat {model.remat}, {model.dtype}", flush=True)
  log = lambda message: print(message, file=sys.stderr, flush=True)
  try:
    result = estimate_lib.estimate(job, config, mesh, rules, video, chip, _SAMPLE_BATCH.value, log,
                                    time=_TIME.value)
  except estimate_lib.OutOfMemory as error:
    print("does not fit: " + " ".join(str(error).split())[:600])
    _print_largest(error.largest_arguments)
    print("fits: false")
    print(f"hbm_per_chip_gib: > {chip.hbm_gib}")
    print("estimated_step_s: n/a")
    print("estimated_mfu: n/a")
    return
  del jax
  _report(result, chip, mesh.size, job, config)


def _kernel_list(kernels):
  return ", ".join(f"{name} x {count}" for name, count in sorted(kernels.items())) or "none"


def _report(result, chip, chips, job, config):
  memory = result.memory
  fits = memory.total <= chip.hbm_gib * GIB
  timed = math.isfinite(result.step_seconds)
  samples = config.input.global_batch_size if job == "train" else (_SAMPLE_BATCH.value or
                                                                   config.input.global_batch_size)
  print(f"hbm per chip (GiB): arguments {_gib(memory.arguments)}, outputs {_gib(memory.outputs)} "
        f"({_gib(memory.aliased)} of them in donated arguments' buffers), temporaries "
        f"{_gib(memory.temporaries)}; total {_gib(memory.total)} of {chip.hbm_gib}"
        + (f"; host memory for offloaded residuals {_gib(memory.host_temporaries)}" if memory.host_temporaries else "")
        + (f"; state parked in host memory {_gib(memory.host_arguments)}" if memory.host_arguments else ""))
  _print_largest(result.largest_arguments)
  print(f"compiler's figures for the scanned program: {result.raw_xla_flops * chips:.4g} FLOPs, "
        f"{result.raw_xla_seconds:.4g} s (one layer's body counted once); Pallas kernels in it: "
        f"{_kernel_list(result.pallas_kernels)}")
  if timed:
    print(f"flops per step: model {result.model_flops:.4g} (MFU basis: no recompute), executed "
          f"{result.executed_flops:.4g} (XLA's count extrapolated over {result.layers} layers, plus "
          f"{result.pallas_flops:.4g} in Pallas kernels)")
    print(f"estimated step: {result.xla_seconds:.4g} s compiler (per-layer cost from 1- and 2-layer "
          f"unrolled compiles, x {result.layers}) + {result.pallas_seconds:.4g} s Pallas attention at peak")
    rate = samples / result.step_seconds
    if job == "train":
      print(f"samples_per_s: {rate:.4g}")
    else:
      steps = config.eval.sample_steps
      print(f"sampling_steps_per_s: {1 / result.step_seconds:.4g} ({samples} videos, 3 guidance branches); "
            f"videos_per_s at {steps} steps: {rate / steps:.4g}")
  else:
    print(f"flops per step: model {result.model_flops:.4g} (MFU basis: no recompute); step time not "
          f"estimated (--notime)")
  print(f"fits: {'true' if fits else 'false'}")
  print(f"hbm_per_chip_gib: {memory.total / GIB:.2f}")
  if timed:
    mfu = result.model_flops / (result.step_seconds * chip.peak_flops * chips)
    print(f"estimated_step_s: {result.step_seconds:.4g}")
    print(f"estimated_mfu: {mfu:.3f}")
  else:
    print("estimated_step_s: n/a")
    print("estimated_mfu: n/a")


def run():
  os.environ.setdefault("JAX_PLATFORMS", "cpu")  # compile-only TPU devices need no TPU backend
  for name in ("TPU_MIN_LOG_LEVEL", "TPU_STDERR_LOG_LEVEL"):  # libtpu's start-up chatter
    os.environ.setdefault(name, "3")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  run_cli(main)
