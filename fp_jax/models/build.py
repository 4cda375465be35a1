"""Sharded model creation: shapes first (`eval_shape`), then a jitted init that writes each
parameter straight into its shard, so no device or host ever holds the whole model; or, for a
trained model, its saved weights put into those shards with no random weights made first."""
import jax
from flax import nnx

from fp_jax.models.dit import DiT
from fp_jax.models.dit_config import DiTConfig
from fp_jax.parallel.sharding import DEFAULT_RULES, use_mesh
from fp_jax.train.checkpoints import place_like


def create_sharded(make_model, mesh, rules=DEFAULT_RULES):
  """`make_model()` builds an nnx Module; returns it with parameters sharded by their logical axes."""
  with use_mesh(mesh, rules):
    abstract = nnx.eval_shape(make_model)
    graphdef, abstract_state = nnx.split(abstract)
    shardings = nnx.get_named_sharding(abstract_state, mesh)
    state = jax.jit(lambda: nnx.state(make_model()), out_shardings=shardings)()
  return nnx.merge(graphdef, state)


def abstract_sharded(make_model, mesh, rules=DEFAULT_RULES):
  """(graphdef, state) of `make_model()`'s module with nothing computed: each leaf a
  `jax.ShapeDtypeStruct` carrying the sharding of its logical axes."""
  with use_mesh(mesh, rules):
    graphdef, abstract_state = nnx.split(nnx.eval_shape(make_model))
    shardings = nnx.get_named_sharding(abstract_state, mesh)
  return graphdef, jax.tree.map(lambda x, sharding: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                                abstract_state, shardings)


def create_loaded(make_model, params, mesh, rules=DEFAULT_RULES):
  """`make_model()`'s module holding `params` (a pure dict of host arrays, the module's tree), each
  leaf cast to the module's dtype and put into its shard. Nothing is initialised, traced beyond the
  shapes or compiled: for a sampling job, the init that `create_sharded` runs is wasted work."""
  graphdef, state = abstract_sharded(make_model, mesh, rules)
  nnx.replace_by_pure_dict(state, place_like(params, state.to_pure_dict()))
  return nnx.merge(graphdef, state)


def create_dit(config, mesh, rules=DEFAULT_RULES, seed=0):
  """The DiT for a `DiTConfig` or an ml-collections model config, sharded over `mesh`."""
  if not isinstance(config, DiTConfig):
    config = DiTConfig.from_config(config)
  return create_sharded(lambda: DiT(config, rngs=nnx.Rngs(seed)), mesh, rules)
