"""Timing shared by the benchmarks: the median of repeated calls after warm-up calls, and one
call's page faults and kernel time."""
import resource
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


def counted_seconds(function):
  """One call of `function()`: wall seconds, minor page faults and kernel CPU seconds of this
  process meanwhile (the faults of memory mapped afresh, and what the kernel spent on them)."""
  before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
  function()
  seconds, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
  return seconds, after.ru_minflt - before.ru_minflt, after.ru_stime - before.ru_stime
