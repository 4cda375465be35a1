"""AdamW with warmup and a cosine or constant schedule, global-norm clipping, a decay mask and
parameters held still (`optim.frozen`)."""
import re

import jax
import jax.numpy as jnp
import optax

from data_pipeline.errors import InputError, require

SCHEDULES = ("cosine", "constant")


def learning_rate_schedule(optim, total_steps):
  require(optim.schedule in SCHEDULES, f"optim.schedule must be one of {SCHEDULES}, got {optim.schedule!r}")
  warmup = optax.linear_schedule(0.0, optim.learning_rate, max(1, optim.warmup_steps))
  if optim.schedule == "constant":
    after = optax.constant_schedule(optim.learning_rate)
  else:
    after = optax.cosine_decay_schedule(optim.learning_rate, max(1, total_steps - optim.warmup_steps),
                                        alpha=optim.final_fraction)
  return optax.join_schedules([warmup, after], [optim.warmup_steps])


def parameter_name(path):
  """A parameter's path as `linear_path/encode_kernel`: what `optim.frozen` patterns match (an
  nnx variable's own `.value` step left out)."""
  names = [str(key.key) if isinstance(key, jax.tree_util.DictKey) else
           key.name if isinstance(key, jax.tree_util.GetAttrKey) else str(key) for key in path]
  return "/".join(name for name in names if name != "value")


def decay_mask(params):
  """Weight decay on matrices and kernels only: not on biases, norm gains or modulation tables."""
  def decays(path, leaf):
    return leaf.ndim >= 2 and "scale_shift_table" not in parameter_name(path)
  return jax.tree_util.tree_map_with_path(decays, params)


def frozen_labels(patterns):
  """`params -> labels`: "frozen" where a parameter's whole name matches one of `patterns`
  (regular expressions), "trained" elsewhere."""
  compiled = []
  for pattern in patterns:
    try:
      compiled.append(re.compile(pattern))
    except re.error as error:
      raise InputError(f"optim.frozen: {pattern!r} is not a regular expression ({error})") from None

  def labels(params):
    names = jax.tree_util.tree_map_with_path(lambda path, leaf: parameter_name(path), params)
    every = jax.tree.leaves(names)  # none for optax's placeholder trees
    for pattern in compiled if every else ():  # a typo would otherwise hold nothing still, silently
      require(any(pattern.fullmatch(name) for name in every),
              f"optim.frozen: {pattern.pattern!r} names no parameter (names look like {every[0]!r})")
    return jax.tree.map(lambda name: "frozen" if any(p.fullmatch(name) for p in compiled) else "trained", names)
  return labels


def make_optimizer(optim, total_steps):
  mu_dtype = optim.get("mu_dtype", "float32")  # configs saved before the field read as float32
  require(mu_dtype in ("float32", "bfloat16"), f"optim.mu_dtype must be float32 or bfloat16, got {mu_dtype!r}")
  schedule = learning_rate_schedule(optim, total_steps)
  tx = optax.chain(
      optax.clip_by_global_norm(optim.clip_norm),
      optax.adamw(schedule, b1=optim.b1, b2=optim.b2, eps=optim.eps, weight_decay=optim.weight_decay,
                  mask=decay_mask, mu_dtype=jnp.dtype(mu_dtype)),
  )
  frozen = tuple(optim.get("frozen", ()))  # configs saved before the field froze nothing
  if not frozen:  # the optimizer state of runs that freeze nothing keeps its layout
    return tx, schedule
  # Frozen parameters get no update and no decay, and keep no moments; the clip sees the rest.
  return optax.multi_transform({"trained": tx, "frozen": optax.set_to_zero()}, frozen_labels(frozen)), schedule
