r"""Per-chip memory of the training state (parameters, EMA, optimizer moments) against the FSDP size.

  python benchmarks/state_memory.py [--config=configs/wan_14b.py] [--generation=v5p]

For each slice of 8 to 256 chips, the state of the config's train step is laid out as the trainer
lays it out (`fsdp` over every chip, compile-only TPU devices, nothing allocated) and the largest
per-chip share is summed from the shardings. Prints `state_gib_per_chip_fsdp_N: X GiB` lines.
"""
import argparse
import importlib.util
import math
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position

from fp_jax.aot import programs, topology  # pylint: disable=g-import-not-at-top,wrong-import-position
from fp_jax.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from fp_jax.parallel.sharding import rules_from_config  # pylint: disable=g-import-not-at-top,wrong-import-position

SLICES = {"v5p": ("2x2x2", "2x2x4", "2x4x4", "4x4x4", "4x4x8", "4x8x8"),
          "v6e": ("2x4", "4x4", "4x8", "8x8", "8x16", "16x16")}


def state_bytes_per_chip(state, devices):
  """Bytes of `state` on the fullest chip."""
  per_device = {device: 0 for device in devices}
  for leaf in jax.tree.leaves(state):
    size = leaf.dtype.itemsize * math.prod(leaf.sharding.shard_shape(leaf.shape))
    for device in leaf.sharding.device_set:
      per_device[device] += size
  return max(per_device.values())


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", default="configs/wan_14b.py")
  parser.add_argument("--generation", default="v5p", choices=sorted(SLICES))
  args = parser.parse_args()
  spec = importlib.util.spec_from_file_location("config", args.config)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.mesh = dict(data=1, fsdp=-1, context=1, tensor=1)
  video = programs.Video(81, 480, 832)
  config.input.window.num_frames = video.frames
  for shape in SLICES[args.generation]:
    devices, _ = topology.devices(f"{args.generation}:{shape}")
    mesh = mesh_lib.make_mesh(config.mesh, devices)
    config.input.global_batch_size = mesh.size
    program = programs.build("train", config, mesh, rules_from_config(config.logical_axis_rules), video)
    size = state_bytes_per_chip(program.args[0], devices)
    print(f"state_gib_per_chip_fsdp_{mesh.size}: {size / 2 ** 30:.3f} GiB", flush=True)


if __name__ == "__main__":
  main()
