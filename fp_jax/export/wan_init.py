"""Filling a sharded DiT's parameters from a diffusers Wan checkpoint, one tensor at a time."""
import jax
import numpy as np

from fp_jax.export import diffusers_wan, weights_files


def load_wan(params, path, num_layers):
  """Writes the Wan core of the checkpoint at `path` into `params` (an `nnx.State` of sharded
  arrays, changed in place); the portrait controls keep their values.

  The host holds one float32 copy of the Wan core (zeros from calloc cost nothing until written)
  plus one checkpoint tensor at a time; each host places only its own shards on its devices.
  """
  values = jax.tree.map(lambda x: np.zeros(x.shape, np.float32), params.to_pure_dict())
  diffusers_wan.from_diffusers(weights_files.load_state_dict(path), values, num_layers, source=path)
  for tensor_path in diffusers_wan.mapped_paths(num_layers):
    variable, value = params, values
    for key in tensor_path:
      variable, value = variable[key], value[key]
    old = variable.value
    variable.value = jax.make_array_from_callback(
        old.shape, old.sharding, lambda index, value=value, dtype=old.dtype: value[index].astype(dtype))
