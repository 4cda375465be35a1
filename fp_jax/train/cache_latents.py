r"""`fp-cache-latents`: encode a dataset's training windows once, for the dit task to read.

  fp-cache-latents --config=configs/tiny.py:dit --out=outputs/demo/latents \
      --config.frozen.vae=outputs/demo/vae --config.frozen.motion=outputs/demo/motion
  fp-train --config=configs/tiny.py:dit --workdir=outputs/demo/dit \
      --config.frozen.vae=outputs/demo/vae --config.frozen.motion=outputs/demo/motion \
      --config.input.cached_latents=outputs/demo/latents

Each clip gives the windows starting at frames 0, s, 2s, ... (`--window_step`, default the
window's span: windows side by side). The frozen models are the ones the config names, as in
training; the cache records them and training refuses a cache made with others.
"""
import copy
import os
import sys

import numpy as np
import tqdm
from absl import flags, logging
from ml_collections import config_flags

from data_pipeline import examples, latent_cache, reference_warp
from data_pipeline.cli import run as run_cli
from data_pipeline.errors import InputError, require
from data_pipeline.records import ClipRecords
from fp_jax.host_memory import keep_freed_memory_on_cpu

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config of the dit run (configs/*.py:dit).",
                                          lock_config=True)
_OUT = flags.DEFINE_string("out", None, "Folder to create for the cache (must not exist).")
_SPLITS = flags.DEFINE_list("splits", ["train", "validation"], "Splits to encode.")
_WINDOW_STEP = flags.DEFINE_integer("window_step", 0, "Frames between window starts (0: the window's span).")


def build_cache(config, out, splits=("train", "validation"), window_step=0):
  """Writes the cache folder `out`; returns the number of windows per split."""
  import jax  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from fp_jax.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  from fp_jax.parallel.sharding import rules_from_config  # pylint: disable=g-import-not-at-top
  from fp_jax.train.frozen import create_frozen, frozen_runs  # pylint: disable=g-import-not-at-top
  from fp_jax.train.tasks import common, dit_task  # pylint: disable=g-import-not-at-top

  require(config.task == "dit", f"latents are cached for the dit task, the config's task is {config.task!r}")
  require(window_step >= 0, f"--window_step must be >= 0, got {window_step}")
  require(not os.path.exists(out), f"{out} already exists; remove it or choose another --out")
  task = dit_task.DiTTask(config)
  input_config = copy.deepcopy(config.input)
  with input_config.unlocked():
    for name in input_config.drop:
      input_config.drop[name] = 0.0
  window = input_config.window
  span = examples.window_span(window.num_frames, window.stride)
  sources = {split: ClipRecords(input_config.data_dir, input_config.dataset, split, "count") for split in splits}
  for records in sources.values():
    examples.check_config(input_config, records)

  # One example at a time: the frozen models sit whole on one device.
  made_with = frozen_runs(config)  # before they are read: the steps read are these (or later ones)
  frozen = create_frozen(task, config, mesh_lib.make_mesh({}, jax.devices()[:1]),
                         rules_from_config(config.logical_axis_rules))
  encode = nnx.jit(task.encode)

  @nnx.jit
  def encode_videos(frozen, videos):
    vae = frozen["vae"]
    return vae.normalize(vae.encode(common.unit_range(videos))[0])

  encode_images = lambda frozen, frames: encode_videos(frozen, frames[:, None])[:, 0]
  writer = latent_cache.CacheWriter(out)
  try:
    video_size = _encode_splits(writer, sources, input_config, span, window_step, frozen, encode, encode_images,
                                encode_videos)
  except BaseException:
    writer.abort()
    raise
  writer.commit(dict(
      source=dict(data_dir=input_config.data_dir, dataset=input_config.dataset),
      window=dict(num_frames=int(window.num_frames), stride=int(window.stride)),
      video_size=[int(n) for n in video_size],
      frozen=dict(vae=config.frozen.vae, motion=config.frozen.motion), frozen_runs=made_with,
      warped_reference=bool(input_config.warped_reference), warp_version=reference_warp.WARP_VERSION))
  return latent_cache.read_metadata(out)["counts"]


def _encode_splits(writer, sources, input_config, span, window_step, frozen, encode, encode_images, encode_videos):
  import jax  # pylint: disable=g-import-not-at-top
  from data_pipeline.template_head import build_template  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)  # only picks reference frames, which the cache does not keep
  warped_reference = bool(input_config.warped_reference)
  window_config = copy.deepcopy(input_config)
  with window_config.unlocked():
    window_config.warped_reference = False  # the candidates' warps are made below, not a random one
  video_size = None
  for split, records in sources.items():
    maker = examples.MakeExample(records, window_config)
    for index in tqdm.trange(len(records), desc=f"encoding {split}", unit="clip"):
      clip = records[index]
      candidates = np.arange(0, clip["frames"].shape[0], latent_cache.WARP_CANDIDATE_STRIDE if warped_reference else 1)
      references = np.asarray(encode_images(frozen, clip["frames"][candidates]))
      for start in range(0, clip["frames"].shape[0] - span + 1, window_step or span):
        example = maker.example(index, start, rng, clip)
        video_size = example["video"].shape[1:3]
        encoded = jax.device_get(encode(frozen, {key: value[None] for key, value in example.items()}))
        record = dict(
            latents=encoded["latents"][0], normals=encoded["normals"][0], references=references,
            expression=encoded["expression"][0], head_pose=example["head_pose"],
            intrinsics=example["intrinsics"], extrinsics=example["extrinsics"],
            identity=example["identity"], record=example["record"], start_frame=example["start_frame"])
        if warped_reference:
          frames = np.arange(start, start + span, input_config.window.stride)
          window = {key: clip[key][frames] for key in
                    ("intrinsics", "extrinsics", "head_pose", "head_scale", "expression")}
          warped = examples.warped_window(build_template(), clip, candidates, clip, window)
          record["warped"] = np.asarray(encode_videos(frozen, warped))
        writer.add(split, record)
  return video_size


def main(argv):
  del argv
  if _CONFIG.value is None:
    raise InputError("--config is required, e.g. --config=configs/tiny.py:dit")
  if not _OUT.value:
    raise InputError("--out is required: the cache folder to create")
  logging.set_verbosity(logging.WARNING)
  counts = build_cache(_CONFIG.value, _OUT.value, tuple(_SPLITS.value), _WINDOW_STEP.value)
  print(f"cached {', '.join(f'{n} {split} windows' for split, n in counts.items())} in {_OUT.value}")


def run():
  keep_freed_memory_on_cpu()  # first: before any thread takes a malloc arena
  run_cli(main)


if __name__ == "__main__":
  sys.exit(run())
