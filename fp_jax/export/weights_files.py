"""Reading PyTorch-side weight files without torch: safetensors files and diffusers folders.

A diffusers model folder holds `diffusion_pytorch_model.safetensors`, or shards listed in
`diffusion_pytorch_model.safetensors.index.json`. bf16 and fp16 tensors are widened to float32.
"""
import collections.abc
import glob
import json
import os

import numpy as np
from safetensors import SafetensorError, safe_open

from data_pipeline.errors import InputError

_INDEX = "diffusion_pytorch_model.safetensors.index.json"
_SINGLE = "diffusion_pytorch_model.safetensors"


def safetensors_files(path):
  """The .safetensors files that make up the checkpoint at `path` (a file or a folder)."""
  if os.path.isfile(path):
    return [path]
  if not os.path.isdir(path):
    raise InputError(f"no such checkpoint: {path}")
  index = os.path.join(path, _INDEX)
  if os.path.isfile(index):
    try:
      with open(index) as f:
        shards = sorted(set(json.load(f)["weight_map"].values()))
    except (ValueError, KeyError) as error:
      raise InputError(f"{index} is not a safetensors index: {error}") from None
    files = [os.path.join(path, shard) for shard in shards]
    absent = [f for f in files if not os.path.isfile(f)]
    if absent:
      raise InputError(f"{index} lists shards that are not there: {', '.join(map(os.path.basename, absent[:3]))}")
    return files
  if os.path.isfile(os.path.join(path, _SINGLE)):
    return [os.path.join(path, _SINGLE)]
  files = sorted(glob.glob(os.path.join(path, "*.safetensors")))
  if not files:
    raise InputError(f"no .safetensors weights in {path}")
  return files


class LazyStateDict(collections.abc.Mapping):
  """`{name: float32 numpy array}` over safetensors files, each tensor read when asked for, so
  a converter holds one tensor at a time, not a second copy of the model."""

  def __init__(self, files):
    self._handles, self._where = [], {}
    for file in files:
      try:
        # The flax framework reads bf16, which numpy alone cannot.
        handle = safe_open(file, framework="flax")
        names = list(handle.keys())
      except (SafetensorError, OSError) as error:
        raise InputError(f"{file} is not a readable safetensors file: {error}") from None
      self._handles.append((file, handle))
      self._where.update((name, len(self._handles) - 1) for name in names)

  def __getitem__(self, name):
    file, handle = self._handles[self._where[name]]
    try:
      return np.asarray(handle.get_tensor(name), np.float32)
    except (SafetensorError, OSError) as error:
      raise InputError(f"{file}: tensor {name} is unreadable: {error}") from None

  def __iter__(self):
    return iter(self._where)

  def __len__(self):
    return len(self._where)


def load_state_dict(path):
  """A lazy `{name: float32 numpy array}` for a safetensors file or a diffusers model folder."""
  return LazyStateDict(safetensors_files(path))
