"""diffusers `AutoencoderKLWan` state dict <-> our `VideoVAE` parameters (numpy; no torch needed).

Our module tree mirrors diffusers' names, so the mapping is by name: convolution kernels move
channels last (`[out, in, kt, kh, kw]` -> `[kt, kh, kw, in, out]`, 2D likewise), the 1x1
attention convolutions become dense kernels, RMS-norm gains drop their broadcast axes, and a
resample's `resample.1` convolution is our `resample` / `resample_bias`.
"""
import numpy as np

from data_pipeline.errors import InputError
from fp_jax.export.trees import first_few, flatten, key_problems, set_dotted


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


def from_diffusers(state_dict, params, source="the diffusers VAE checkpoint"):
  """Fills `params` (our pure dict, modified in place); lists missing, unexpected, mis-shaped keys."""
  ours = dict(flatten(params))
  names = {_their_name(path): path for path in ours}
  problems = key_problems(names, state_dict.keys())
  mismatched = []
  for name, path in names.items():
    if name in state_dict:
      value = np.asarray(state_dict[name])
      if value.size != np.size(ours[path]):
        mismatched.append(f"{name} {value.shape} vs ours {np.shape(ours[path])}")
      else:
        set_dotted(params, path, _to_ours(value, np.shape(ours[path])))
  if mismatched:
    problems.append(f"{len(mismatched)} shape mismatch(es): {first_few(mismatched, 3)}")
  if problems:
    raise InputError(f"{source} does not fit this VAE: " + "; ".join(problems))
  return params


def to_diffusers(params, their_shapes):
  """Our pure dict -> (diffusers name, array) pairs, one at a time; `their_shapes` gives each
  target shape (`their_shapes(params)` derives them)."""
  for path, value in flatten(params):
    yield _their_name(path), _to_theirs(value, their_shapes[_their_name(path)])


def their_shapes(params):
  """Each tensor's shape in diffusers' `AutoencoderKLWan`, derived from ours (no torch needed):
  convolutions channels first, 1x1 attention convolutions from dense kernels, RMS-norm gains
  with their broadcast axes (2D in the attention blocks, 3D elsewhere)."""
  shapes = {}
  for path, value in flatten(params):
    shape = tuple(np.shape(value))
    if path.endswith("gamma"):
      shape = (int(np.prod(shape)),) + ((1, 1) if ".attentions." in path else (1, 1, 1))
    elif len(shape) == 5:
      shape = (shape[4], shape[3]) + shape[:3]
    elif len(shape) == 4:
      shape = (shape[3], shape[2]) + shape[:2]
    elif len(shape) == 2:
      shape = (shape[1], shape[0], 1, 1)
    shapes[_their_name(path)] = shape
  return shapes


def diffusers_config(vae_config):
  """`AutoencoderKLWan` constructor arguments for our `VAEConfig` (as `dataclasses.asdict` gives it)."""
  patch = vae_config["patch_size"]
  config = dict(base_dim=vae_config["base_dim"], z_dim=vae_config["z_dim"], dim_mult=list(vae_config["dim_mult"]),
                num_res_blocks=vae_config["num_res_blocks"],
                temperal_downsample=list(vae_config["temporal_downsample"]),
                latents_mean=list(vae_config["latents_mean"]), latents_std=list(vae_config["latents_std"]))
  if vae_config["residual"] or patch != 1 or vae_config["decoder_base_dim"]:  # Wan 2.2's layout
    config.update(is_residual=vae_config["residual"], patch_size=patch if patch != 1 else None,
                  in_channels=3 * patch * patch, out_channels=3 * patch * patch,
                  decoder_base_dim=vae_config["decoder_base_dim"] or None,
                  scale_factor_spatial=patch * 2 ** (len(vae_config["dim_mult"]) - 1))
  return config
