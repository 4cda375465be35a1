"""Training throughput of the real train step: steps/s, MFU and the data-wait share.

  python benchmarks/train.py [--data_dir=outputs/bench/data] [--steps=10]

Runs `fp-train`'s Trainer (task `dit`, configs/tiny.py) on the demo dataset (built under
--data_dir if missing), 8 simulated CPU devices, with the `tiny` and `bench` model sizes. After
3 warm-up steps it times `--steps` steps, each waited to completion, and prints per size:
`steps_per_s`, `mfu` (the step's matmul and convolution FLOPs, counted as the trainer counts them
(fp_jax/train/flops.py), over the step time and a matmul peak measured in the same run) and
`data_wait_share` (time in `next(batches)` over the loop's time).
"""
import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from fp_jax.host_memory import keep_freed_memory_on_cpu  # pylint: disable=g-import-not-at-top
keep_freed_memory_on_cpu()  # as the fp-* commands do, before any thread takes a malloc arena

import jax  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from bench_data import ensure_dataset  # pylint: disable=g-import-not-at-top  # benchmarks/bench_data.py
from configs import tiny  # pylint: disable=g-import-not-at-top
from configs.models import dit as dit_configs  # pylint: disable=g-import-not-at-top
from fp_jax.parallel.sharding import use_mesh  # pylint: disable=g-import-not-at-top
from fp_jax.train import flops as flops_lib  # pylint: disable=g-import-not-at-top
from fp_jax.train.trainer import Trainer  # pylint: disable=g-import-not-at-top


def measure(size, data_dir, steps):
  config = tiny.get_config("dit")
  config.input.data_dir = data_dir
  config.model = dit_configs.get_config(size)
  with tempfile.TemporaryDirectory() as workdir:
    trainer = Trainer(config, workdir)
    try:
      with use_mesh(trainer.mesh, trainer.rules):
        batch = next(trainer.batches)
        flops = flops_lib.step_flops(trainer.step_fn, trainer.state, trainer.frozen_state, batch)
        waits, totals = [], []
        for index in range(3 + steps):
          start = time.perf_counter()
          batch = next(trainer.batches)
          waited = time.perf_counter() - start
          trainer.state, metrics = trainer.step_fn(trainer.state, trainer.frozen_state, batch)
          jax.block_until_ready(metrics["loss"])
          if index >= 3:
            waits.append(waited)
            totals.append(time.perf_counter() - start)
    finally:
      trainer.close()
  return float(np.median(totals)), flops, float(np.sum(waits) / np.sum(totals))


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--data_dir", default="outputs/bench/data")
  parser.add_argument("--steps", type=int, default=10)
  args = parser.parse_args()
  ensure_dataset("demo", args.data_dir)
  peak = flops_lib.measured_matmul_peak(2048, 7)  # all cores; the simulated devices share them
  print(f"matmul_peak: {peak / 1e9:.1f} GFLOP/s")
  for size in ("tiny", "bench"):
    step_time, flops, wait = measure(size, args.data_dir, args.steps)
    print(f"{size}_step_time: {step_time * 1000:.0f} ms")
    print(f"{size}_step_flops: {flops / 1e9:.2f} GFLOP")
    print(f"{size}_steps_per_s: {1 / step_time:.2f}")
    print(f"{size}_mfu: {flops / step_time / peak:.3f}")
    print(f"{size}_data_wait_share: {wait:.3f}")


if __name__ == "__main__":
  main()
