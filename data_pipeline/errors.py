"""User-facing input errors and the checks that raise them.

Command-line tools catch `InputError` and print it as one line, `error: ...`, with exit status 2.
"""
import re

import numpy as np


class InputError(ValueError):
  """A user mistake: bad path, bad value, a config that cannot work."""


def require(condition, message):
  if not condition:
    raise InputError(message)


def require_local_path(path, flag):
  """A URL (`gs://...`) refused in one line: every tool here reads and writes with local file
  calls, and a URL taken for a relative folder would write into the working directory instead."""
  require(not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", str(path)),
          f"{flag}: {path} is a URL; give a local path, with a bucket mounted as a folder "
          f"(Cloud Storage FUSE, e.g. /gcs/BUCKET/...)")


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
