"""Logical axis names -> mesh axes.

Weights and activations name their dimensions logically (`embed`, `heads`, `mlp`, `batch`,
`length`, ...). A config's `logical_axis_rules` maps each name to mesh axes; the same model then
runs data-parallel, FSDP, tensor- or context-parallel by changing the rules, not the code.
"""
import contextlib

import jax
from flax.core import spmd
from jax.sharding import PartitionSpec

# (logical name, mesh axes): the default layout. FSDP shards every weight's `embed` dimension;
# tensor parallelism splits heads and the feed-forward; context parallelism splits the tokens.
DEFAULT_RULES = (
    ("batch", ("data", "fsdp")),
    ("length", "context"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("layers", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_mlp", "tensor"),
)


def rules_from_config(rules):
  """A config's rules (list of [name, axes]) as the tuple form flax expects."""
  if rules is None:
    return DEFAULT_RULES
  return tuple((str(name), tuple(axes) if isinstance(axes, (list, tuple)) else axes) for name, axes in rules)


@contextlib.contextmanager
def use_mesh(mesh, rules=DEFAULT_RULES):
  """Within: `mesh` is the current mesh and `rules` the logical axis rules."""
  with jax.set_mesh(mesh), spmd.logical_axis_rules(rules):
    yield


def logical_to_spec(names, rules=None):
  rules = dict(spmd.get_logical_axis_rules() if rules is None else rules)
  return PartitionSpec(*(rules.get(name) if name else None for name in names))


def constrain(x, names):
  """Pins an activation's layout by logical names; a no-op outside a multi-device mesh."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or mesh.size == 1:
    return x
  return jax.lax.with_sharding_constraint(x, logical_to_spec(names))


def shards(name):
  """How many ways the current mesh and rules split the logical axis `name` (1 outside a mesh)."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return 1
  axes = dict(spmd.get_logical_axis_rules()).get(name)
  axes = (axes,) if isinstance(axes, str) else (axes or ())
  count = 1
  for axis in axes:
    count *= mesh.shape[axis] if axis in mesh.axis_names else 1
  return count
