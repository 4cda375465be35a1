"""Resuming a run: time and peak host memory of restoring its checkpoint, as the trainer does it
against making a fresh state first (what it did before, and what a resume on a pod must not pay:
the fresh state holds the chips' memory while the checkpoint loads beside it).

  python benchmarks/resume.py [--data_dir=outputs/bench/data] [--size=bench]

Saves step 1 of a dit run (configs/tiny.py with the model size --size, random weights) in a
temporary workdir, then resumes it in a fresh process per way, one device, each way --rounds
times, alternating. Prints the medians: `resume_seconds_*` (the Trainer made and its state
restored), `resume_peak_rss_growth_*` (peak resident memory over what the process held just
before the Trainer), `state_size` (parameters, EMA and optimizer state together) and their
ratios. On the CPU the device is host memory, so a restore's read buffers count as well.

Measured (bench size, 3 rounds): state 738 MiB; 15.8 s and 1461 MiB checkpoint only, 21.7 s and
2163 MiB with a fresh state first (1.37x the time, 1.48x the memory: one state more).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.pop("XLA_FLAGS", None)  # one device: every byte of the state once
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from fp_jax.host_memory import keep_freed_memory_on_cpu  # pylint: disable=g-import-not-at-top
keep_freed_memory_on_cpu()  # as fp-train does, before any thread takes a malloc arena
from timing import peak_rss_growth, resident_bytes  # pylint: disable=g-import-not-at-top  # benchmarks/timing.py

WAYS = ("checkpoint_only", "fresh_state_first")


def make_config(data_dir, size):
  from configs import tiny  # pylint: disable=g-import-not-at-top
  from configs.models import dit as dit_configs  # pylint: disable=g-import-not-at-top
  config = tiny.get_config("dit")
  config.input.data_dir = data_dir
  config.model = dit_configs.get_config(size)
  config.eval.every = 0
  return config


def save_run(config, workdir):
  """Step 1 of a run with the fresh state's weights; returns the state's size in bytes."""
  import jax  # pylint: disable=g-import-not-at-top
  from fp_jax.train.trainer import Trainer  # pylint: disable=g-import-not-at-top
  trainer = Trainer(config, workdir)
  try:
    trainer._save(1)  # pylint: disable=protected-access
    trainer._write_manifests()  # pylint: disable=protected-access
    return sum(leaf.nbytes for leaf in jax.tree.leaves(trainer.state))
  finally:
    trainer.close()


def resume(config, workdir, way):
  """In this process: (seconds, peak RSS growth in bytes) of making the Trainer and restoring."""
  import jax  # pylint: disable=g-import-not-at-top
  from fp_jax.train.trainer import Trainer  # pylint: disable=g-import-not-at-top
  before = resident_bytes()
  start = time.perf_counter()
  trainer = Trainer(config, workdir)
  held = trainer._fresh_state() if way == "fresh_state_first" else None  # pylint: disable=protected-access
  step = trainer.restore_latest()
  jax.block_until_ready(trainer.state)
  seconds = time.perf_counter() - start
  assert step == 1, step
  del held
  trainer.close()
  return seconds, peak_rss_growth(before)


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--data_dir", default="outputs/bench/data")
  parser.add_argument("--size", default="bench")
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--child", help=argparse.SUPPRESS)  # "WAY WORKDIR": one resume, as JSON
  args = parser.parse_args()
  config = make_config(args.data_dir, args.size)
  if args.child:
    way, workdir = args.child.split(" ", 1)
    seconds, growth = resume(config, workdir, way)
    print(json.dumps(dict(seconds=seconds, growth=growth)))
    return
  from bench_data import ensure_dataset  # pylint: disable=g-import-not-at-top  # benchmarks/bench_data.py
  import numpy as np  # pylint: disable=g-import-not-at-top
  ensure_dataset("demo", args.data_dir)
  with tempfile.TemporaryDirectory() as workdir:
    state_bytes = save_run(config, workdir)
    results = {way: [] for way in WAYS}
    for _ in range(args.rounds):
      for way in WAYS:
        out = subprocess.run([sys.executable, __file__, f"--data_dir={args.data_dir}", f"--size={args.size}",
                              f"--child={way} {workdir}"], capture_output=True, text=True, check=True).stdout
        results[way].append(json.loads(out.strip().splitlines()[-1]))
  median = lambda way, key: float(np.median([r[key] for r in results[way]]))
  mib = 2 ** 20
  print(f"state_size: {state_bytes / mib:.0f} MiB")
  for way in WAYS:
    print(f"resume_seconds_{way}: {median(way, 'seconds'):.2f} s")
    print(f"resume_peak_rss_growth_{way}: {median(way, 'growth') / mib:.0f} MiB")
  print(f"resume_time_ratio: {median(WAYS[1], 'seconds') / median(WAYS[0], 'seconds'):.2f}")
  print(f"resume_memory_ratio: {median(WAYS[1], 'growth') / median(WAYS[0], 'growth'):.2f}")


if __name__ == "__main__":
  main()
