r"""fp-preview: writes preview videos of a built dataset, one per regime: RGB, normal map and a
Plücker ray-map picture side by side.

  fp-preview --data_dir=DIR --name=demo --split=test --out=outputs/demo/previews
"""
import os
import sys

import numpy as np
from absl import flags

from data_pipeline import cli, rays, tfds_builder, world
from data_pipeline.video_io import write_video

_DATA_DIR = flags.DEFINE_string("data_dir", None, "Directory the dataset was built into.")
_NAME = flags.DEFINE_string("name", "demo", "Data config name (the variant it was built with).")
_SPLIT = flags.DEFINE_string("split", "test", "Split to preview.")
_OUT = flags.DEFINE_string("out", None, "Output directory for <regime>.mp4 files.")
_SCALE = flags.DEFINE_integer("scale", 4, "Nearest-neighbour upscaling for viewing.")


def panel(example, scale):
  """[T, H*scale, 3*W*scale, 3] uint8: RGB | normals | ray map."""
  frames = example["frames"]
  _, height, width, _ = frames.shape
  ray_map = rays.visualise(rays.plucker_rays(example["intrinsics"], example["extrinsics"], height, width))
  video = np.concatenate([frames, example["normals"], ray_map], axis=2)
  return video.repeat(scale, axis=1).repeat(scale, axis=2)


def main(argv):
  del argv
  data_dir = cli.existing_directory(_DATA_DIR.value, "data_dir")
  out = cli.writable_directory(_OUT.value, "out")
  source = tfds_builder.data_source(data_dir, _NAME.value, _SPLIT.value)
  first = {}
  for index in range(len(source)):
    example = source[index]
    regime = world.REGIMES[int(example["regime"])]
    first.setdefault(regime, example)
    if len(first) == len(world.REGIMES):
      break
  fps = float(source.dataset_info.metadata.get("fps", 25.0)) if source.dataset_info.metadata else 25.0
  for regime, example in first.items():
    path = os.path.join(out, f"{regime}.mp4")
    write_video(path, panel(example, _SCALE.value), fps)
    print(f"preview: {path} ({example['clip_id'].decode()}, camera {example['camera_trajectory'].decode()})")
  missing = sorted(set(world.REGIMES) - set(first))
  if missing:
    print(f"note: split {_SPLIT.value} has no clip of regime {', '.join(missing)}")


def run():
  cli.run(main)


if __name__ == "__main__":
  sys.exit(run())
