"""Motion encoders: our parameters <-> the PyTorch mirror's state dict (numpy; no torch needed).

Names join our path with dots, `kernel` and GroupNorm `scale` becoming `weight`; convolution
kernels go `[kh, kw, in, out]` <-> `[out, in, kh, kw]`, dense kernels are transposed.
"""
import numpy as np

from data_pipeline.errors import InputError
from fp_jax.export.trees import first_few, flatten, key_problems, set_dotted


def torch_name(path):
  for ours, theirs in ((".kernel", ".weight"), (".scale", ".weight")):
    if path.endswith(ours):
      return path[:-len(ours)] + theirs
  return path


def to_torch(value):
  value = np.asarray(value)
  if value.ndim == 4:
    return value.transpose(3, 2, 0, 1)
  if value.ndim == 2:
    return value.T
  return value


def from_torch_layout(value):
  value = np.asarray(value, np.float32)
  if value.ndim == 4:
    return value.transpose(2, 3, 1, 0)
  if value.ndim == 2:
    return value.T
  return value


# Weights the motion task trains beside the encoders and the read-out, for its loss alone (the
# nuisance term's map of the controls): neither exported nor expected in a state dict; an import
# leaves them as the run made them.
TRAINING_ONLY = ("from_controls",)


def _exported(path):
  return path.split(".")[0] not in TRAINING_ONLY


def to_state_dict(params):
  """(name, array) pairs, one at a time."""
  for path, value in flatten(params):
    if _exported(path):
      yield torch_name(path), to_torch(value)


def from_state_dict(state_dict, params, source="the motion checkpoint"):
  """Fills `params` (our pure dict, in place) from the mirror's state dict; lists missing,
  unexpected and mis-shaped keys."""
  ours = {torch_name(path): (path, np.shape(value)) for path, value in flatten(params) if _exported(path)}
  problems = key_problems(ours, state_dict.keys())
  mismatched = []
  for name, (path, shape) in ours.items():
    if name in state_dict:
      value = from_torch_layout(state_dict[name])
      if value.shape != shape:
        mismatched.append(f"{name} {np.shape(state_dict[name])} vs ours {shape}")
      else:
        set_dotted(params, path, value)
  if mismatched:
    problems.append(f"{len(mismatched)} shape mismatch(es): {first_few(mismatched, 3)}")
  if problems:
    raise InputError(f"{source} does not fit these encoders: " + "; ".join(problems))
  return params
