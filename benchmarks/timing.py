"""Timing shared by the benchmarks: the median of repeated calls after warm-up calls, one call's
page faults and kernel time, and a process's resident memory."""
import os
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


def resident_bytes():
  """This process's resident memory now (not its peak so far, which an import may have set)."""
  with open("/proc/self/statm") as statm:
    return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_growth(before):
  """This process's peak resident memory over `before` (a `resident_bytes()`), in bytes."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
