"""Shared entry point for the command-line tools: absl flags, one-line errors, exit status 2."""
import os
import sys

from absl import flags, logging

from data_pipeline.errors import InputError, require, require_local_path


def run(main):
  """Parses flags and runs `main(argv)`; user mistakes print `error: ...` and exit 2."""
  try:
    argv = flags.FLAGS(sys.argv)
  except flags.Error as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)
  logging.set_verbosity(logging.WARNING)
  try:
    main(argv)
  except InputError as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)


def writable_directory(path, flag):
  """Creates `path` if its parent exists; fails clearly when that is impossible."""
  require(path, f"--{flag} is required")
  require_local_path(path, f"--{flag}")
  path = os.path.abspath(path)
  require(not os.path.exists(path) or os.path.isdir(path), f"--{flag}: {path} exists and is not a directory")
  if not os.path.isdir(path):
    parent = os.path.dirname(path)
    require(os.path.isdir(parent), f"--{flag}: {path} does not exist and neither does its parent {parent}")
    require(os.access(parent, os.W_OK), f"--{flag}: cannot create {path}: {parent} is not writable")
    os.makedirs(path, exist_ok=True)  # several processes of one job may race here
  require(os.access(path, os.W_OK | os.X_OK), f"--{flag}: {path} is not writable")
  return path


def existing_directory(path, flag):
  require(path, f"--{flag} is required")
  require_local_path(path, f"--{flag}")
  require(os.path.isdir(path), f"--{flag}: {path} does not exist")
  return os.path.abspath(path)
