"""What an input worker's memory grows by for each fresh person it keeps, by how it keeps them.

  python benchmarks/kept_examples.py [--people=3000] [--data_dir=outputs/bench/data]

Each store runs in a process of its own, started as Grain starts its workers (spawned, so with
glibc's default malloc settings), which renders `--people` of the tiny motion config's people
(data_pipeline/fresh_people.py, `fresh_people_cache` as large) and keeps them all:
  slabs  data_pipeline/kept_examples.py, as the workers keep them now;
  dict   a dict of the examples as rendered, as they kept them before.
Prints `kept_example_kb` (an example's arrays), per store `rss_growth_per_person_kb_STORE` (the
resident memory after the renders less that before the first, over the people) and
`hit_us_STORE` (the median time to serve a kept person again, a copy included), then
`rss_growth_ratio_dict_over_slabs` and `worker_rss_growth_gb_at_30000_STORE` (the motion
config's people at that rate).
"""
import argparse
import multiprocessing
import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # pylint: disable=g-import-not-at-top

from bench_data import ensure_dataset  # pylint: disable=g-import-not-at-top  # benchmarks/bench_data.py
from configs import tiny  # pylint: disable=g-import-not-at-top
from data_pipeline import fresh_people  # pylint: disable=g-import-not-at-top
from data_pipeline.records import ClipRecords  # pylint: disable=g-import-not-at-top

DEMO_PEOPLE = 30000  # configs/tiny.py:motion's input.fresh_people_cache


class DictOfExamples:
  """The workers' store before the slabs: each example as rendered, in a dict."""

  def __init__(self, capacity):
    self.capacity, self._examples = capacity, {}

  def get(self, index):
    kept = self._examples.get(index)
    return None if kept is None else {key: np.array(value) for key, value in kept.items()}

  def put(self, index, example):
    if len(self._examples) >= self.capacity:
      return False
    self._examples[index] = example
    return True


def resident_bytes():
  with open("/proc/self/statm") as statm:
    return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(store, data_dir, people, results):
  """Runs in a spawned process: renders and keeps `people` people, then serves them again."""
  config = tiny.get_config("motion").input
  config.fresh_people_cache, config.workers.count = people + 1, 0  # the warm-up's person as well
  make = fresh_people.MakeFreshExample(ClipRecords(data_dir, config.dataset, "train"), config)
  if store == "dict":
    make._cache = DictOfExamples(people + 1)  # pylint: disable=protected-access
  make.random_map(people, None)  # imports and the template head's first build, not counted
  before = resident_bytes()
  for index in range(people):
    example = make.random_map(index, None)
  grown = resident_bytes() - before
  hits = []
  for index in range(min(people, 500)):
    start = time.perf_counter()
    make.random_map(index, None)
    hits.append(time.perf_counter() - start)
  results.put((store, grown / people, float(np.median(hits)), sum(v.nbytes for v in example.values())))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--people", type=int, default=3000)
  parser.add_argument("--data_dir", default="outputs/bench/data")
  args = parser.parse_args()
  ensure_dataset(tiny.get_config("motion").input.dataset, args.data_dir)
  spawn = multiprocessing.get_context("spawn")
  results = spawn.Queue()
  growth = {}
  for store in ("slabs", "dict"):
    worker = spawn.Process(target=measure, args=(store, args.data_dir, args.people, results))
    worker.start()
    name, per_person, hit, example_bytes = results.get()
    worker.join()
    growth[name] = per_person
    print(f"rss_growth_per_person_kb_{name}: {per_person / 1024:.1f} KB")
    print(f"hit_us_{name}: {hit * 1e6:.0f} us")
  print(f"kept_example_kb: {example_bytes / 1024:.1f} KB")
  print(f"rss_growth_ratio_dict_over_slabs: {growth['dict'] / growth['slabs']:.2f}")
  for name, per_person in growth.items():
    print(f"worker_rss_growth_gb_at_{DEMO_PEOPLE}_{name}: {per_person * DEMO_PEOPLE / 1e9:.2f} GB")


if __name__ == "__main__":
  main()
