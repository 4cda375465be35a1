"""diffusers `AutoencoderKLWan` state dict <-> our `VideoVAE` parameters (numpy; no torch needed).

Our module tree mirrors diffusers' names, so the mapping is by name: convolution kernels move
channels last (`[out, in, kt, kh, kw]` -> `[kt, kh, kw, in, out]`, 2D likewise), the 1x1
attention convolutions become dense kernels, RMS-norm gains drop their broadcast axes, and a
resample's `resample.1` convolution is our `resample` / `resample_bias`.
"""
import numpy as np

from data_pipeline.errors import InputError


def _flatten(tree, prefix=""):
  for key, value in tree.items():
    path = f"{prefix}{key}"
    if isinstance(value, dict):
      yield from _flatten(value, path + ".")
    else:
      yield path, value


def _their_name(path):
  if path.endswith(".resample"):
    return path + ".1.weight"
  if path.endswith(".resample_bias"):
    return path[:-len("_bias")] + ".1.bias"
  if path.endswith(".kernel"):
    return path[:-len("kernel")] + "weight"
  return path


def _to_ours(value, shape):
  value = np.asarray(value, np.float32)
  if value.ndim == 5:
    value = value.transpose(2, 3, 4, 1, 0)
  elif value.ndim == 4 and len(shape) == 4:
    value = value.transpose(2, 3, 1, 0)
  elif value.ndim == 4 and len(shape) == 2:  # 1x1 conv -> dense
    value = value[:, :, 0, 0].T
  return value.reshape(shape)


def _to_theirs(value, their_shape):
  value = np.asarray(value)
  if value.ndim == 5:
    value = value.transpose(4, 3, 0, 1, 2)
  elif value.ndim == 4:
    value = value.transpose(3, 2, 0, 1)
  elif value.ndim == 2:
    value = value.T.reshape(their_shape)
  return value.reshape(their_shape)


def _first_few(names, count=5):
  names = sorted(names)
  return ", ".join(names[:count]) + (f" (and {len(names) - count} more)" if len(names) > count else "")


def _set(tree, path, value):
  keys = path.split(".")
  for key in keys[:-1]:
    tree = tree[int(key) if key.isdigit() and int(key) in tree else key]
  tree[keys[-1]] = value


def from_diffusers(state_dict, params, source="the diffusers VAE checkpoint"):
  """Fills `params` (our pure dict, modified in place); lists missing, unexpected, mis-shaped keys."""
  ours = dict(_flatten(params))
  names = {_their_name(path): path for path in ours}
  missing = set(names) - set(state_dict)
  unexpected = set(state_dict) - set(names)
  problems = []
  if missing:
    problems.append(f"{len(missing)} missing: {_first_few(missing)}")
  if unexpected:
    problems.append(f"{len(unexpected)} unexpected: {_first_few(unexpected)}")
  mismatched = []
  for name, path in names.items():
    if name in state_dict:
      value = np.asarray(state_dict[name])
      if value.size != np.size(ours[path]):
        mismatched.append(f"{name} {value.shape} vs ours {np.shape(ours[path])}")
      else:
        _set(params, path, _to_ours(value, np.shape(ours[path])))
  if mismatched:
    problems.append(f"{len(mismatched)} shape mismatch(es): {_first_few(mismatched, 3)}")
  if problems:
    raise InputError(f"{source} does not fit this VAE: " + "; ".join(problems))
  return params


def to_diffusers(params, their_shapes):
  """Our pure dict -> a diffusers state dict; `their_shapes` gives each target shape."""
  return {_their_name(path): _to_theirs(value, their_shapes[_their_name(path)])
          for path, value in _flatten(params)}
