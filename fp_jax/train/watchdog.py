"""A step watchdog: a run whose steps stop finishing is ended with an error, not left to hang.

The distributed runtime notices a peer process that dies (its heartbeat stops). A peer that
hangs with its heartbeat alive (a stuck input worker, a deadlocked collective) leaves the others
blocked in their next collective forever; this thread ends them after `timeout` seconds.
"""
import os
import sys
import threading
import time

from absl import logging

EXIT_CODE = 4


def _exit(message):
  logging.error(message)
  print(f"error: {message}", file=sys.stderr, flush=True)
  os._exit(EXIT_CODE)  # the main thread may be blocked in a collective: no clean way out


class StepWatchdog:
  """`pet(step)` after every step; unpetted for `timeout` seconds, `on_timeout(message)` runs
  (by default: print the error and exit the process with status 4). `timeout <= 0`: disabled."""

  def __init__(self, timeout, on_timeout=_exit):
    self.timeout = float(timeout)
    self._on_timeout = on_timeout
    self._last_pet = None
    self._last_step = None
    self._done = threading.Event()
    self._thread = None

  def pet(self, step):
    self._last_pet, self._last_step = time.monotonic(), step
    if self._thread is None and self.timeout > 0:
      self._thread = threading.Thread(target=self._watch, name="step-watchdog", daemon=True)
      self._thread.start()

  def _watch(self):
    while not self._done.wait(min(self.timeout / 4, 10.0)):
      idle = time.monotonic() - self._last_pet
      if idle > self.timeout:
        self._on_timeout(f"no training step finished for {idle:.0f} s after step {self._last_step} "
                         f"(watchdog_seconds={self.timeout:g}); a process may be hung")
        return

  def stop(self):
    self._done.set()
    if self._thread is not None:
      self._thread.join()
