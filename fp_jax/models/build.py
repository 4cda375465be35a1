"""Sharded model creation: shapes first (`eval_shape`), then a jitted init that writes each
parameter straight into its shard, so no device or host ever holds the whole model."""
import jax
from flax import nnx

from fp_jax.models.dit import DiT
from fp_jax.models.dit_config import DiTConfig
from fp_jax.parallel.sharding import DEFAULT_RULES, use_mesh


def create_sharded(make_model, mesh, rules=DEFAULT_RULES):
  """`make_model()` builds an nnx Module; returns it with parameters sharded by their logical axes."""
  with use_mesh(mesh, rules):
    abstract = nnx.eval_shape(make_model)
    graphdef, abstract_state = nnx.split(abstract)
    shardings = nnx.get_named_sharding(abstract_state, mesh)
    state = jax.jit(lambda: nnx.state(make_model()), out_shardings=shardings)()
  return nnx.merge(graphdef, state)


def create_dit(config, mesh, rules=DEFAULT_RULES, seed=0):
  """The DiT for a `DiTConfig` or an ml-collections model config, sharded over `mesh`."""
  if not isinstance(config, DiTConfig):
    config = DiTConfig.from_config(config)
  return create_sharded(lambda: DiT(config, rngs=nnx.Rngs(seed)), mesh, rules)
