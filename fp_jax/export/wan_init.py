"""A DiT whose Wan core comes from a diffusers Wan checkpoint (`fp-import`, `config.init`)."""
import jax
import numpy as np
from flax import traverse_util

from fp_jax.export import diffusers_wan, weights_files
from fp_jax.models.build import completed


def read_wan(abstract_params, path, num_layers):
  """The Wan core of the checkpoint at `path`: a pure dict of host float32 arrays holding the
  leaves of `abstract_params` (our pure dict of shapes) that Wan fills, the portrait controls left
  out. The file is checked whole first (one-line `InputError` listing what does not fit).

  Zeros from calloc cost nothing until written, so the host holds one float32 copy of the Wan core
  plus one checkpoint tensor at a time.
  """
  values = jax.tree.map(lambda x: np.zeros(x.shape, np.float32), abstract_params)
  diffusers_wan.from_diffusers(weights_files.load_state_dict(path), values, num_layers, source=path)
  flat = traverse_util.flatten_dict(values)
  return traverse_util.unflatten_dict({leaf: flat[leaf] for leaf in diffusers_wan.mapped_paths(num_layers)})


def wan_model(make_model, abstract, path, num_layers, mesh, rules):
  """The DiT `abstract` (`build.abstract_sharded(make_model, ...)`) with the Wan core of the
  checkpoint at `path` in its shards and the portrait controls as `make_model()` initialises them
  (their outputs start at zero, so the model is Wan exactly); nothing else is initialised."""
  wan = read_wan(abstract[1].to_pure_dict(), path, num_layers)
  return completed(make_model, abstract, wan, mesh, rules)
