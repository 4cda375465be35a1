"""benchmarks/cpu_profile.py: a step's wall time split by the kind of thunk running."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import cpu_profile  # pylint: disable=g-import-not-at-top,wrong-import-position


def event(name, start, duration, thread):
  return {"ph": "X", "name": name, "ts": float(start), "dur": float(duration), "tid": thread}


def test_wall_time_is_shared_between_the_thunks_running_and_the_rest_is_idle():
  trace = [
      event("while.1", 0, 100, "a"),  # a loop: only the thunks inside it count
      event("ynn_fusion.1", 0, 40, "a"),
      event("ThreadpoolListener::Record", 10, 0, "a"),  # the runtime's own spans are not thunks
      event("end: ynn_fusion.1", 39, 1, "a"),
      event("add_fusion.2", 50, 20, "a"),
      event("dot.3", 30, 30, "b"),
      event("$python.py:1 run", 0, 100, "c"),
      event("np.asarray(jax.Array)", 0, 100, "c"),  # Python's own spans are not thunks either
      event("ThunkExecutor::Execute", 0, 100, "a"),
  ]
  totals = cpu_profile.split_wall_time(trace)
  # 0-30 the fusion alone, 30-40 both products, 40-50 the dot, 50-60 the dot and the add halved,
  # 60-70 the add, 70-100 nothing.
  assert totals["matmul"] == pytest.approx(30 + 10 + 10 + 5)
  assert totals["elementwise"] == pytest.approx(5 + 10)
  assert totals["idle"] == pytest.approx(30)
