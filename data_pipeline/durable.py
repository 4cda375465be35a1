"""Writes that survive a host crash, not only a killed process.

A temporary name renamed into place protects against a kill: the old file or the new one is
there, never part of one. After a power cut, though, the rename may reach the disk before the
data does, and the new name comes back empty. So the data is flushed to the disk before the
rename, and the rename itself after it.
"""
import os


def flush_to_disk(handle):
  """An open file's writes, on the disk."""
  handle.flush()
  os.fsync(handle.fileno())


def sync_folder(path):
  """A folder's entries (names made, renamed or removed in it), on the disk."""
  folder = os.open(path, os.O_RDONLY)
  try:
    os.fsync(folder)
  finally:
    os.close(folder)


def sync_tree(root):
  """Every file and folder under `root`, on the disk: before a finished folder is renamed into place."""
  for folder, _, names in os.walk(root):
    for name in names:
      with open(os.path.join(folder, name), "rb") as handle:
        os.fsync(handle.fileno())
    sync_folder(folder)


def replace(temporary, path):
  """`os.replace`, then the rename on the disk (the caller has flushed `temporary`'s data)."""
  os.replace(temporary, path)
  sync_folder(os.path.dirname(os.path.abspath(path)))
