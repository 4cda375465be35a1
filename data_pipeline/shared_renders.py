"""Rendered examples shared by the input workers of one host, through a temporary folder.

Grain hands batch k of the stream to worker k % W, and a reshuffled epoch sends a person to
either worker, so a cache of each worker's own renders draws every person once per worker.
Through this folder a person is drawn once per host. A file is written whole and then renamed
into place, so a reader never sees part of one; two workers drawing the same person at once write
the same bytes. The folder is the creating process's: it goes when that object is collected or
that process exits. Copies in the worker processes (pickled or forked) never remove it.
"""
import os
import shutil
import tempfile
import weakref

import numpy as np


def _remove_if_owner(folder, owner_pid):
  if os.getpid() == owner_pid:
    shutil.rmtree(folder, ignore_errors=True)


class SharedRenders:
  """index -> example (a dict of numpy arrays), kept as one `.npz` file each."""

  def __init__(self, prefix):
    self.folder = tempfile.mkdtemp(prefix=prefix)
    self._finalizer = weakref.finalize(self, _remove_if_owner, self.folder, os.getpid())

  def __getstate__(self):
    return {"folder": self.folder}

  def __setstate__(self, state):
    self.folder = state["folder"]

  def _path(self, index):
    return os.path.join(self.folder, f"{index}.npz")

  def get(self, index):
    """The example kept for `index`, or None."""
    try:
      with np.load(self._path(index)) as kept:
        return {key: kept[key] for key in kept.files}
    except FileNotFoundError:
      return None

  def put(self, index, example):
    """Keeps `example` for the other workers. A full disk only costs them a render of their own."""
    partial = f"{self._path(index)}.{os.getpid()}.partial"
    try:
      with open(partial, "wb") as file:
        np.savez(file, **example)
      os.replace(partial, self._path(index))
    except OSError:
      if os.path.exists(partial):
        os.remove(partial)
