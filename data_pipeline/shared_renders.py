"""Rendered examples shared by the input workers of one host, through a temporary folder.

Grain hands batch k of the stream to worker k % W, and a reshuffled epoch sends a person to
either worker, so a cache of each worker's own renders draws every person once per worker.
Through this folder a person is drawn once per host. A file is written whole and then renamed
into place, so a reader never sees part of one; two workers drawing the same person at once write
the same bytes. The folder is the creating process's: it goes when that object is collected or
that process exits. Copies in the worker processes (pickled or forked) never remove it. A run
killed outright (SIGKILL) leaves its folder; its name carries the owner's pid, and the next run on
the host removes the folders of owners that are gone.
"""
import os
import shutil
import tempfile
import weakref

import numpy as np


def _remove_if_owner(folder, owner_pid):
  if os.getpid() == owner_pid:
    shutil.rmtree(folder, ignore_errors=True)


def _alive(pid):
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # another user's process
    return True
  return True


def remove_orphans(prefix, parent=None):
  """Removes the `prefix` folders in `parent` (the temporary folder) whose owner has exited."""
  parent = parent or tempfile.gettempdir()
  for name in os.listdir(parent):
    owner = name[len(prefix):].split("_")[0]
    if name.startswith(prefix) and owner.isdigit() and not _alive(int(owner)):
      shutil.rmtree(os.path.join(parent, name), ignore_errors=True)


class SharedRenders:
  """index -> example (a dict of numpy arrays), kept as one `.npz` file each."""

  def __init__(self, prefix):
    remove_orphans(prefix)
    self.folder = tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}_")
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
