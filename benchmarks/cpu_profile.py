"""Where a compiled step's time goes on XLA:CPU, from a profiler trace of its thunks.

`time_by_kind(run, steps)` traces `steps` calls of `run` (jax.profiler, a Perfetto trace) and
splits their wall time between the kinds of thunk that ran: `matmul` (YNNPACK fusions and
dots, the matrix products and what XLA fused into them), `elementwise` (every other fusion,
copy, slice and update) and `idle` (no thunk running: the executor between thunks, waits).
Loops and calls are not counted themselves, only the thunks inside them. Where several thunks
run at once, each instant is shared equally between them. Milliseconds per step.
"""
import collections
import glob
import gzip
import json
import os
import re
import tempfile

import jax

MATMUL_PREFIXES = ("ynn_fusion", "dot", "convolution", "custom-call")


# An HLO instruction's name (`ynn_fusion.12`, `while.3`, `copy`): what a thunk's span is called,
# unlike the runtime's and Python's own spans (`ThunkExecutor::Execute`, `np.asarray(jax.Array)`).
HLO_NAME = re.compile(r"^[a-z][a-z0-9_\-]*(\.[0-9]+)?$")


def _thunk_events(trace):
  """Complete events named by an HLO thunk, per thread."""
  by_thread = collections.defaultdict(list)
  for event in trace:
    if event.get("ph") == "X" and HLO_NAME.match(event.get("name", "")):
      by_thread[event["tid"]].append(event)
  return by_thread


CONTAINERS = ("while", "call", "conditional")  # thunks that only run other thunks
SLACK = 0.01  # microseconds: a span's rounded end may pass its parent's


def _leaves(events):
  """The events that hold no other event of their thread (the thunks that do work)."""
  events = sorted(events, key=lambda e: (e["ts"], -e["dur"]))
  leaves = []
  for i, event in enumerate(events):
    end = event["ts"] + event["dur"]
    following = events[i + 1] if i + 1 < len(events) else None
    holds = (following is not None and following["ts"] < end - SLACK
             and following["ts"] + following["dur"] <= end + SLACK)
    if not holds and not event["name"].startswith(CONTAINERS):
      leaves.append(event)
  return leaves


def kind_of(name):
  return "matmul" if name.startswith(MATMUL_PREFIXES) else "elementwise"


def split_wall_time(trace):
  """{kind: microseconds} of a trace's span, `idle` where no thunk ran."""
  threads = _thunk_events(trace)
  everything = [e for events in threads.values() for e in events]
  leaves = [e for events in threads.values() for e in _leaves(events)]
  # The span of every thunk, loops included: time before, between or after the leaves is idle.
  span_end = max(e["ts"] + e["dur"] for e in everything)
  edges = sorted([(e["ts"], 1, i) for i, e in enumerate(leaves)] +
                 [(e["ts"] + e["dur"], -1, i) for i, e in enumerate(leaves)] + [(span_end, 0, -1)])
  totals, active, last = collections.Counter(), set(), min(e["ts"] for e in everything)
  for time, change, index in edges:
    if time > last:
      if active:
        for running in active:
          totals[kind_of(leaves[running]["name"])] += (time - last) / len(active)
      else:
        totals["idle"] += time - last
    last = time
    if change > 0:
      active.add(index)
    elif change < 0:
      active.discard(index)
  return totals


def time_by_kind(run, steps=2):
  """Milliseconds per step of `run` (a callable that blocks until its step is done) by kind."""
  with tempfile.TemporaryDirectory() as directory:
    with jax.profiler.trace(directory, create_perfetto_trace=True):
      for _ in range(steps):
        run()
    path = glob.glob(os.path.join(directory, "**", "perfetto_trace.json.gz"), recursive=True)[0]
    with gzip.open(path) as file:
      trace = json.load(file)
  trace = trace["traceEvents"] if isinstance(trace, dict) else trace
  return {kind: value / 1000 / steps for kind, value in split_wall_time(trace).items()}
