"""Training-state parts parked in host memory between steps (`config.offload_state`).

The EMA and the optimizer's moments are read and written once a step, after the backward pass,
yet held in HBM the whole step. Kept in pinned host memory, they come onto the chip only for the
update, when the activations are gone, and the peak of the step (during the backward pass) no
longer carries them. The float32 parameters likewise: the step fetches them once for the
forward's casts and again for the update (fp_jax/train/step.py). The price is their trips over
the host link each step.
"""
import jax

from data_pipeline.errors import require

PARTS = ("ema", "opt_state", "params")


def offloaded_parts(config):
  """The state parts `config.offload_state` names, checked."""
  parts = tuple(config.get("offload_state", ()) or ())
  unknown = sorted(set(parts) - set(PARTS))
  require(not unknown, f"offload_state names {unknown}: it may hold only {list(PARTS)}")
  return parts


def host_shardings(shardings, parts):
  """`shardings` (of the whole state) with the trees of `parts` in pinned host memory."""
  return dict(shardings, **{part: in_memory(shardings[part], "pinned_host") for part in parts})


def in_memory(shardings, kind):
  """A tree of shardings moved to memory `kind` ("device" or "pinned_host")."""
  return jax.tree.map(lambda s: s.with_memory_kind(kind), shardings)


def to_device(tree):
  """Inside jit: the tree's arrays brought into device memory."""
  return jax.tree.map(lambda x: jax.device_put(x, jax.memory.Space.Device), tree)


def to_host(tree):
  """Inside jit: the tree's arrays sent to host memory."""
  return jax.tree.map(lambda x: jax.device_put(x, jax.memory.Space.Host), tree)
