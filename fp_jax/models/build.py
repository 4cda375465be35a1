"""Sharded model creation: shapes first (`eval_shape`), then a jitted init that writes each
parameter straight into its shard, so no device or host ever holds the whole model; or, for a
trained model, its saved weights put into those shards with no random weights made first."""
import jax
from flax import nnx, traverse_util

from fp_jax.models.dit import DiT
from fp_jax.models.dit_config import DiTConfig
from fp_jax.parallel.sharding import DEFAULT_RULES, use_mesh
from fp_jax.train.checkpoints import placed


def abstract_sharded(make_model, mesh, rules=DEFAULT_RULES):
  """(graphdef, state) of `make_model()`'s module with nothing computed: each leaf a
  `jax.ShapeDtypeStruct` carrying the sharding of its logical axes."""
  with use_mesh(mesh, rules):
    graphdef, abstract_state = nnx.split(nnx.eval_shape(make_model))
    shardings = nnx.get_named_sharding(abstract_state, mesh)
  return graphdef, jax.tree.map(lambda x, sharding: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                                abstract_state, shardings)


def completed(make_model, abstract, params, mesh, rules=DEFAULT_RULES):
  """The module `abstract` (`abstract_sharded(make_model, ...)`) holding `params` (a pure dict of
  host arrays, the module's tree or part of it), each leaf cast to the module's dtype and put into
  its shard. Each leaf `params` lacks is `make_model()`'s init of it, made straight into its shard
  by a jit whose only outputs are those leaves, so XLA drops the init of every other leaf: Wan
  imported into a 14B portrait DiT initialises the portrait controls alone."""
  graphdef, state = abstract
  wanted = traverse_util.flatten_dict(state.to_pure_dict())
  by_name = {_named(path): path for path in wanted}
  given = {}
  for path, value in traverse_util.flatten_dict(params).items():
    if _named(path) not in by_name:
      raise ValueError(f"{'/'.join(map(str, path))} is not a leaf of this module")
    given[by_name[_named(path)]] = value
  values = {path: placed(value, wanted[path]) for path, value in given.items()}
  missing = [path for path in wanted if path not in given]
  if missing:
    if make_model is None:
      raise ValueError(f"no value for {len(missing)} leaves, e.g. {'/'.join(map(str, missing[0]))}")

    def init_missing():
      made = traverse_util.flatten_dict(nnx.state(make_model()).to_pure_dict())
      return [made[path] for path in missing]

    with use_mesh(mesh, rules):
      made = jax.jit(init_missing, out_shardings=[wanted[path].sharding for path in missing])()
    values.update(zip(missing, made))
  nnx.replace_by_pure_dict(state, traverse_util.unflatten_dict(values))
  return nnx.merge(graphdef, state)


def _named(path):
  """A leaf's path with list indices as strings, as a checkpoint's pure dict spells them."""
  return tuple(str(key) for key in path)


def initialised(make_model, abstract, mesh, rules=DEFAULT_RULES):
  """The module `abstract` (`abstract_sharded(make_model, ...)`) with `make_model()`'s weights,
  each made by a jitted init straight into its shard."""
  return completed(make_model, abstract, {}, mesh, rules)


def loaded(abstract, params):
  """The module `abstract` (`abstract_sharded`'s) holding `params` (a pure dict of host arrays,
  the whole module's tree), each leaf cast to the module's dtype and put into its shard."""
  return completed(None, abstract, params, None)


def create_sharded(make_model, mesh, rules=DEFAULT_RULES):
  """`make_model()` builds an nnx Module; returns it with parameters sharded by their logical axes."""
  return initialised(make_model, abstract_sharded(make_model, mesh, rules), mesh, rules)


def create_loaded(make_model, params, mesh, rules=DEFAULT_RULES):
  """`make_model()`'s module holding `params`, each leaf in its dtype and shard (`loaded`). Nothing
  is initialised, traced beyond the shapes or compiled: for a sampling job, the init that
  `create_sharded` runs is wasted work."""
  return loaded(abstract_sharded(make_model, mesh, rules), params)


def create_dit(config, mesh, rules=DEFAULT_RULES, seed=0):
  """The DiT for a `DiTConfig` or an ml-collections model config, sharded over `mesh`."""
  if not isinstance(config, DiTConfig):
    config = DiTConfig.from_config(config)
  return create_sharded(lambda: DiT(config, rngs=nnx.Rngs(seed)), mesh, rules)
