"""The step watchdog ends a run whose steps stop finishing, and leaves a healthy one alone."""
import subprocess
import sys
import time

from fp_jax.train.watchdog import EXIT_CODE, StepWatchdog

HUNG_RUN = """
import time
from fp_jax.train.watchdog import StepWatchdog
watchdog = StepWatchdog(0.4)
watchdog.pet(7)
time.sleep(60)  # a step that never finishes
"""


def test_a_hung_step_ends_the_process_with_a_clear_error_in_bounded_time():
  start = time.monotonic()
  result = subprocess.run([sys.executable, "-c", HUNG_RUN], capture_output=True, text=True, timeout=60)
  assert result.returncode == EXIT_CODE
  assert time.monotonic() - start < 30  # far less than the 60 s hang
  last_line = result.stderr.strip().splitlines()[-1]
  assert last_line.startswith("error: no training step finished") and "after step 7" in last_line


def test_regular_steps_and_a_disabled_watchdog_never_fire():
  fired = []
  watchdog = StepWatchdog(0.3, on_timeout=fired.append)
  for step in range(15):
    watchdog.pet(step)
    time.sleep(0.05)
  watchdog.stop()
  disabled = StepWatchdog(0.0, on_timeout=fired.append)
  disabled.pet(0)
  time.sleep(0.2)
  assert not fired
  late = StepWatchdog(0.2, on_timeout=fired.append)
  late.pet(3)
  time.sleep(0.8)
  late.stop()
  assert len(fired) == 1 and "after step 3" in fired[0]
