"""User-facing input errors and the checks that raise them.

Command-line tools catch `InputError` and print it as one line, `error: ...`, with exit status 2.
"""
import numpy as np


class InputError(ValueError):
  """A user mistake: bad path, bad value, a config that cannot work."""


def require(condition, message):
  if not condition:
    raise InputError(message)


def require_finite(name, array):
  array = np.asarray(array)
  if not np.all(np.isfinite(array)):
    bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
    raise InputError(f"{name} has {bad} NaN or infinite value(s)")


def require_resolution(height, width):
  for name, value in (("height", height), ("width", width)):
    require(int(value) == value and value > 0, f"resolution {name} must be a positive integer, got {value}")


def require_frame_count(num_frames):
  require(
      int(num_frames) == num_frames and num_frames >= 1 and (num_frames - 1) % 4 == 0,
      f"frame count must be 4k+1 (1, 5, 9, ...) for the causal video VAE, got {num_frames}",
  )
