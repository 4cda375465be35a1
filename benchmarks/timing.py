"""Timing shared by the benchmarks: the median of repeated calls after warm-up calls."""
import time

import numpy as np


def median_seconds(function, repeats, warmups=1):
  """Median wall time of `function()`; warm-ups absorb compilation, caches and thread pools."""
  for _ in range(warmups):
    function()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    function()
    times.append(time.perf_counter() - start)
  return float(np.median(times))
