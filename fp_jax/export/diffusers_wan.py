"""diffusers `WanTransformer3DModel` state dict <-> our DiT parameters (numpy; no torch needed).

Linear weights are transposed (`[out, in]` -> `[in, out]`); the patch embedding's Conv3d kernel
`[D, C, pt, ph, pw]` becomes a linear map over patches flattened in (pt, ph, pw, C) order; the
blocks' weights are stacked along a leading layer axis. The portrait controls' weights have no
diffusers counterpart: importing leaves them at their (zero) initialisation.
"""
import re

import numpy as np

from data_pipeline.errors import InputError
from fp_jax.export.trees import first_few, key_problems

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

# The portrait controls, which Wan lacks: exported under these names (the PyTorch mirror's,
# fp_jax/export/torch_dit.py), present when the config enables them.
_CONTROL_TOP = [
    ("condition_embedding", "condition_embedding", "conv_no_bias"),
    ("ray_embedding", "ray_embedding", "linear"),
    ("expression_adaln_1", "expression_adaln_1", "linear"),
    ("expression_adaln_2", "expression_adaln_2", "linear"),
    ("expression_tokens_1", "expression_tokens_1", "linear"),
    ("expression_tokens_2", "expression_tokens_2", "linear"),
    ("pose_embedding_1", "pose_embedding_1", "linear"),
    ("pose_embedding_2", "pose_embedding_2", "linear"),
]
_CONTROL_BLOCK = [("expression_attn.to_q", "expression_attn.to_q", "linear"),
                  ("expression_attn.to_k", "expression_attn.to_k", "linear"),
                  ("expression_attn.to_v", "expression_attn.to_v", "linear"),
                  ("expression_attn.to_out", "expression_attn.to_out.0", "linear"),
                  ("expression_attn.norm_q", "expression_attn.norm_q", "rms_norm"),
                  ("expression_attn.norm_k", "expression_attn.norm_k", "rms_norm")]

_PARAMS = {"linear": (("kernel", "weight"), ("bias", "bias")),
           "conv": (("kernel", "weight"), ("bias", "bias")),
           "conv_no_bias": (("kernel", "weight"),),
           "table": ((None, None),),
           "layer_norm": (("scale", "weight"), ("bias", "bias")),
           "rms_norm": (("scale", "weight"),)}


def _to_ours(kind, param, value):
  if kind == "linear" and param == "kernel":
    return value.T
  if kind in ("conv", "conv_no_bias") and param == "kernel":
    return value.transpose(2, 3, 4, 1, 0).reshape(-1, value.shape[0])
  if kind == "table":
    return value[0]
  return value


def _to_theirs(kind, param, value, conv_shape=None):
  if kind == "linear" and param == "kernel":
    return value.T
  if kind in ("conv", "conv_no_bias") and param == "kernel":
    out, channels, pt, ph, pw = conv_shape
    return value.reshape(pt, ph, pw, channels, out).transpose(4, 3, 0, 1, 2)
  if kind == "table":
    return value[None]
  return value


def _entries(num_layers, top=tuple(_TOP), block=tuple(_BLOCK)):
  """(our path tuple, diffusers key, kind, param, layer or None) for every mapped tensor."""
  for ours, theirs, kind in top:
    for param, suffix in _PARAMS[kind]:
      yield tuple(ours.split(".")) + ((param,) if param else ()), \
          theirs + (f".{suffix}" if suffix else ""), kind, param, None
  for layer in range(num_layers):
    for ours, theirs, kind in block:
      for param, suffix in _PARAMS[kind]:
        yield ("blocks",) + tuple(ours.split(".")) + ((param,) if param else ()), \
            f"blocks.{layer}.{theirs}" + (f".{suffix}" if suffix else ""), kind, param, layer


def mapped_paths(num_layers):
  """Our parameter paths (tuples) that a diffusers Wan checkpoint fills."""
  return {entry[0] for entry in _entries(num_layers)}


def _get(tree, path):
  for key in path:
    tree = tree[key]
  return tree


def _set(tree, path, value):
  for key in path[:-1]:
    tree = tree[key]
  tree[path[-1]] = value


class _Renamed(dict):
  """`state_dict` seen under other keys, read on access."""

  def __init__(self, state_dict, names):
    super().__init__((name, None) for name in names)
    self._state_dict, self._names = state_dict, names

  def __getitem__(self, name):
    return self._state_dict[self._names[name]]


def from_diffusers(state_dict, params, num_layers, source="the diffusers checkpoint"):
  """Fills `params` (our pure-dict parameters, modified in place) from a diffusers state dict.

  Raises `InputError` listing missing keys, unexpected keys and shape mismatches.
  """
  # Keys only: a lazy state dict (weights_files.load_state_dict) reads each tensor when used.
  names = {re.sub(r"^model\.", "", k): k for k in state_dict.keys()}
  state_dict = _Renamed(state_dict, names)
  entries = list(_entries(num_layers))
  expected = {entry[1] for entry in entries}
  problems = key_problems(expected, state_dict.keys())
  if problems:
    raise InputError(f"{source} does not fit this model: " + "; ".join(problems))
  mismatched = []
  for path, key, kind, param, layer in entries:
    raw = np.asarray(state_dict[key], np.float32)
    value = _to_ours(kind, param, raw)
    target = _get(params, path)
    if layer is not None:
      if target.shape[1:] != value.shape:
        mismatched.append(f"{key} {raw.shape} vs ours {target.shape[1:]}")
        continue
      if not (isinstance(target, np.ndarray) and target.flags.writeable):
        target = np.array(target)  # a copy once; later layers are written in place
        _set(params, path, target)
      target[layer] = value
    elif target.shape != value.shape:
      if kind == "conv" and target.shape[1] == value.shape[1] and target.shape[0] > value.shape[0]:
        mismatched.append(f"{key}: in_channels differ")
      else:
        mismatched.append(f"{key} {raw.shape} vs ours {target.shape}")
    else:
      _set(params, path, value)
  if mismatched:
    raise InputError(f"{source} does not fit this model: {len(mismatched)} shape mismatch(es): "
                     f"{first_few(mismatched, 3)}")
  return params


def _present(entries, params):
  """The entries whose module exists in `params` (controls the config leaves out do not)."""
  return [entry for entry in entries if entry[0].split(".")[0] in params]


def export_entries(params, num_layers, controls=True):
  """Every tensor of an export: the Wan core, plus (with `controls`) the portrait controls."""
  entries = list(_entries(num_layers))
  if controls:
    blocks = params["blocks"]
    entries += list(_entries(num_layers, _present(_CONTROL_TOP, params), _present(_CONTROL_BLOCK, blocks)))
  return entries


def to_diffusers(params, num_layers, patch, controls=False):
  """Our pure-dict parameters -> a state dict (numpy arrays, yielded tensor by tensor): the Wan
  core under diffusers' names, and with `controls` the portrait controls under the mirror's."""
  volume = int(np.prod(patch))
  for path, key, kind, param, layer in export_entries(params, num_layers, controls):
    value = np.asarray(_get(params, path))
    if layer is not None:
      value = value[layer]
    conv_shape = None
    if kind in ("conv", "conv_no_bias") and param == "kernel":
      conv_shape = (value.shape[-1], value.shape[0] // volume, *patch)
    yield key, _to_theirs(kind, param, value, conv_shape)
