"""Sharded model creation: shapes first (`eval_shape`), then a jitted init that writes each
parameter straight into its shard, so no device or host ever holds the whole model; or, for a
trained model, its saved weights put into those shards with no random weights made first."""
import jax
from flax import nnx

from fp_jax.models.dit import DiT
from fp_jax.models.dit_config import DiTConfig
from fp_jax.parallel.sharding import DEFAULT_RULES, use_mesh
from fp_jax.train.checkpoints import place_like


def abstract_sharded(make_model, mesh, rules=DEFAULT_RULES):
  """(graphdef, state) of `make_model()`'s module with nothing computed: each leaf a
  `jax.ShapeDtypeStruct` carrying the sharding of its logical axes."""
  with use_mesh(mesh, rules):
    graphdef, abstract_state = nnx.split(nnx.eval_shape(make_model))
    shardings = nnx.get_named_sharding(abstract_state, mesh)
  return graphdef, jax.tree.map(lambda x, sharding: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                                abstract_state, shardings)


def initialised(make_model, abstract, mesh, rules=DEFAULT_RULES):
  """The module `abstract` (`abstract_sharded(make_model, ...)`) with `make_model()`'s weights,
  each made by a jitted init straight into its shard."""
  graphdef, state = abstract
  with use_mesh(mesh, rules):
    values = jax.jit(lambda: nnx.state(make_model()), out_shardings=jax.tree.map(lambda x: x.sharding, state))()
  return nnx.merge(graphdef, values)


def loaded(abstract, params):
  """The module `abstract` (`abstract_sharded`'s) holding `params` (a pure dict of host arrays,
  the module's tree), each leaf cast to the module's dtype and put into its shard."""
  graphdef, state = abstract
  nnx.replace_by_pure_dict(state, place_like(params, state.to_pure_dict()))
  return nnx.merge(graphdef, state)


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
