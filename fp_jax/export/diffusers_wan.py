"""diffusers `WanTransformer3DModel` state dict <-> our DiT parameters (numpy; no torch needed).

Linear weights are transposed (`[out, in]` -> `[in, out]`); the patch embedding's Conv3d kernel
`[D, C, pt, ph, pw]` becomes a linear map over patches flattened in (pt, ph, pw, C) order; the
blocks' weights are stacked along a leading layer axis. The portrait controls' weights have no
diffusers counterpart: importing leaves them at their (zero) initialisation.
"""
import re

import numpy as np

from data_pipeline.errors import InputError

# (our path, diffusers name, kind); `{i}` marks per-block names.
_TOP = [
    ("time_embedder_1", "condition_embedder.time_embedder.linear_1", "linear"),
    ("time_embedder_2", "condition_embedder.time_embedder.linear_2", "linear"),
    ("time_proj", "condition_embedder.time_proj", "linear"),
    ("text_embedder_1", "condition_embedder.text_embedder.linear_1", "linear"),
    ("text_embedder_2", "condition_embedder.text_embedder.linear_2", "linear"),
    ("proj_out", "proj_out", "linear"),
    ("patch_embedding", "patch_embedding", "conv"),
    ("scale_shift_table", "scale_shift_table", "table"),
]
_BLOCK = [("scale_shift_table", "scale_shift_table", "table"),
          ("norm2", "norm2", "layer_norm"),
          ("ffn_in", "ffn.net.0.proj", "linear"),
          ("ffn_out", "ffn.net.2", "linear")]
for _attn in ("attn1", "attn2"):
  _BLOCK += [(f"{_attn}.{name}", f"{_attn}.{name}", "linear") for name in ("to_q", "to_k", "to_v")]
  _BLOCK += [(f"{_attn}.to_out", f"{_attn}.to_out.0", "linear"),
             (f"{_attn}.norm_q", f"{_attn}.norm_q", "rms_norm"),
             (f"{_attn}.norm_k", f"{_attn}.norm_k", "rms_norm")]

_PARAMS = {"linear": (("kernel", "weight"), ("bias", "bias")),
           "conv": (("kernel", "weight"), ("bias", "bias")),
           "table": ((None, None),),
           "layer_norm": (("scale", "weight"), ("bias", "bias")),
           "rms_norm": (("scale", "weight"),)}


def _to_ours(kind, param, value):
  if kind == "linear" and param == "kernel":
    return value.T
  if kind == "conv" and param == "kernel":
    return value.transpose(2, 3, 4, 1, 0).reshape(-1, value.shape[0])
  if kind == "table":
    return value[0]
  return value


def _to_theirs(kind, param, value, conv_shape=None):
  if kind == "linear" and param == "kernel":
    return value.T
  if kind == "conv" and param == "kernel":
    out, channels, pt, ph, pw = conv_shape
    return value.reshape(pt, ph, pw, channels, out).transpose(4, 3, 0, 1, 2)
  if kind == "table":
    return value[None]
  return value


def _entries(num_layers):
  """(our path tuple, diffusers key, kind, param, layer or None) for every mapped tensor."""
  for ours, theirs, kind in _TOP:
    for param, suffix in _PARAMS[kind]:
      yield tuple(ours.split(".")) + ((param,) if param else ()), \
          theirs + (f".{suffix}" if suffix else ""), kind, param, None
  for layer in range(num_layers):
    for ours, theirs, kind in _BLOCK:
      for param, suffix in _PARAMS[kind]:
        yield ("blocks",) + tuple(ours.split(".")) + ((param,) if param else ()), \
            f"blocks.{layer}.{theirs}" + (f".{suffix}" if suffix else ""), kind, param, layer


def mapped_paths(num_layers):
  """Our parameter paths (tuples) that a diffusers Wan checkpoint fills."""
  return {entry[0] for entry in _entries(num_layers)}


def _first_few(names, count=5):
  names = sorted(names)
  return ", ".join(names[:count]) + (f" (and {len(names) - count} more)" if len(names) > count else "")


def _get(tree, path):
  for key in path:
    tree = tree[key]
  return tree


def _set(tree, path, value):
  for key in path[:-1]:
    tree = tree[key]
  tree[path[-1]] = value


def from_diffusers(state_dict, params, num_layers, source="the diffusers checkpoint"):
  """Fills `params` (our pure-dict parameters, modified in place) from a diffusers state dict.

  Raises `InputError` listing missing keys, unexpected keys and shape mismatches.
  """
  state_dict = {re.sub(r"^model\.", "", k): v for k, v in state_dict.items()}
  entries = list(_entries(num_layers))
  expected = {entry[1] for entry in entries}
  missing = expected - set(state_dict)
  unexpected = set(state_dict) - expected
  problems = []
  if missing:
    problems.append(f"{len(missing)} missing: {_first_few(missing)}")
  if unexpected:
    problems.append(f"{len(unexpected)} unexpected: {_first_few(unexpected)}")
  if problems:
    raise InputError(f"{source} does not fit this model: " + "; ".join(problems))
  mismatched = []
  for path, key, kind, param, layer in entries:
    value = _to_ours(kind, param, np.asarray(state_dict[key], np.float32))
    target = _get(params, path)
    if layer is not None:
      if target.shape[1:] != value.shape:
        mismatched.append(f"{key} {tuple(state_dict[key].shape)} vs ours {target.shape[1:]}")
        continue
      if not (isinstance(target, np.ndarray) and target.flags.writeable):
        target = np.array(target)  # a copy once; later layers are written in place
        _set(params, path, target)
      target[layer] = value
    elif target.shape != value.shape:
      if kind == "conv" and target.shape[1] == value.shape[1] and target.shape[0] > value.shape[0]:
        mismatched.append(f"{key}: in_channels differ")
      else:
        mismatched.append(f"{key} {tuple(state_dict[key].shape)} vs ours {target.shape}")
    else:
      _set(params, path, value)
  if mismatched:
    raise InputError(f"{source} does not fit this model: {len(mismatched)} shape mismatch(es): "
                     f"{_first_few(mismatched, 3)}")
  return params


def to_diffusers(params, num_layers, in_channels, patch):
  """Our pure-dict parameters -> the Wan core as a diffusers state dict (numpy arrays)."""
  out = {}
  for path, key, kind, param, layer in _entries(num_layers):
    value = np.asarray(_get(params, path))
    if layer is not None:
      value = value[layer]
    conv_shape = (value.shape[-1], in_channels, *patch) if kind == "conv" and param == "kernel" else None
    out[key] = _to_theirs(kind, param, value, conv_shape)
  return out
