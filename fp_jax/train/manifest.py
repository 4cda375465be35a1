"""Checksums of committed checkpoints: what Orbax does not check.

Orbax commits a step atomically but never checks array bytes afterwards. Once a step has committed
(the trainer asks between steps; at the next save or the run's end at the latest), process 0 writes
`manifest.json` into it (size and SHA-256 of every file): a kill before then leaves the newest step
without one. Before a restore the manifest is checked; a step whose files were truncated, altered
or removed is moved aside to `<workdir>/checkpoints_set_aside/` (never deleted) and the run falls
back to the step before it. A step without a manifest (a crash right after commit), or with one a
host crash cut short, has its structure checked instead (`structural_problems`), with a warning:
after a power loss a committed step's files can be empty or zero-filled, its data never having
reached the disk.
"""
import json
import os
import time

from absl import logging

from data_pipeline import durable
from data_pipeline.checksums import sha256_file

MANIFEST = "manifest.json"


TEMPORARY = MANIFEST + ".tmp"


def _files(step_dir):
  step_dir = os.fspath(step_dir)
  for root, _, names in os.walk(step_dir):
    for name in sorted(names):
      if root != step_dir or name not in (MANIFEST, TEMPORARY):  # the manifest's own, even half-written
        path = os.path.join(root, name)
        yield os.path.relpath(path, step_dir), path


def write(step_dir):
  """Records every file of a committed step: written to a temporary name, flushed to disk, then
  renamed, so a crash leaves the old manifest or the new one, never part of one."""
  entries = {name: {"size": os.path.getsize(path), "sha256": sha256_file(path)} for name, path in _files(step_dir)}
  temporary = os.path.join(step_dir, TEMPORARY)
  with open(temporary, "w") as handle:
    json.dump(entries, handle, indent=1, sort_keys=True)
    durable.flush_to_disk(handle)
  durable.replace(temporary, os.path.join(step_dir, MANIFEST))


def _is_json(name):
  """Orbax's metadata files (`_CHECKPOINT_METADATA`, `_METADATA`, `_sharding`, `metadata`, the
  per-process array metadata) and the input positions are JSON; the arrays' files are not."""
  base = os.path.basename(name)
  return base.endswith(".json") or base.startswith("_") or base == "metadata" or "array_metadatas" in name


def structural_problems(step_dir):
  """What a step without a manifest shows of damage without one: empty files (Orbax writes none)
  and metadata that is not JSON (zero-filled, or cut short). Array bytes cannot be judged."""
  issues = []
  for name, path in _files(step_dir):
    if os.path.getsize(path) == 0:
      issues.append(f"{name} is empty")
    elif _is_json(name):
      try:
        with open(path, "rb") as handle:
          json.load(handle)
      except (ValueError, OSError):
        issues.append(f"{name} is not valid JSON")
  return issues


def problems(step_dir, contents=True):
  """What differs from the manifest (empty if the step is intact): files missing or of another
  size, and (`contents`) files whose bytes changed. Without a readable manifest, the step's
  `structural_problems`."""
  manifest_path = os.path.join(step_dir, MANIFEST)
  if not os.path.exists(manifest_path):
    logging.warning("checkpoint %s has no manifest; checking its structure alone", step_dir)
    return structural_problems(step_dir)
  try:
    with open(manifest_path) as handle:
      expected = json.load(handle)
  except (ValueError, OSError) as error:  # cut short by a host crash before it reached the disk
    logging.warning("checkpoint %s has an unreadable manifest (%s); checking its structure alone", step_dir, error)
    return structural_problems(step_dir)
  found = dict(_files(step_dir))
  issues = [f"{name} missing" for name in sorted(set(expected) - set(found))]
  for name, entry in sorted(expected.items()):
    if name in found:
      if os.path.getsize(found[name]) != entry["size"]:
        issues.append(f"{name} is {os.path.getsize(found[name])} bytes, was {entry['size']}")
      elif contents and sha256_file(found[name]) != entry["sha256"]:
        issues.append(f"{name} changed")
  return issues


def set_aside(step_dir, workdir):
  """Moves a damaged step out of the checkpoint directory, keeping it for inspection."""
  target_dir = os.path.join(workdir, "checkpoints_set_aside")
  os.makedirs(target_dir, exist_ok=True)
  target = os.path.join(target_dir, f"{os.path.basename(step_dir)}-{int(time.time())}")
  os.replace(step_dir, target)
  return target
