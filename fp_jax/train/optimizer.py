"""AdamW with warmup and a cosine or constant schedule, global-norm clipping and a decay mask."""
import jax
import jax.numpy as jnp
import optax

from data_pipeline.errors import require

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


def decay_mask(params):
  """Weight decay on matrices and kernels only: not on biases, norm gains or modulation tables."""
  def decays(path, leaf):
    name = "/".join(str(getattr(key, "key", key)) for key in path)
    return leaf.ndim >= 2 and "scale_shift_table" not in name
  return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(optim, total_steps):
  mu_dtype = optim.get("mu_dtype", "float32")  # configs saved before the field read as float32
  require(mu_dtype in ("float32", "bfloat16"), f"optim.mu_dtype must be float32 or bfloat16, got {mu_dtype!r}")
  schedule = learning_rate_schedule(optim, total_steps)
  return optax.chain(
      optax.clip_by_global_norm(optim.clip_norm),
      optax.adamw(schedule, b1=optim.b1, b2=optim.b2, eps=optim.eps, weight_decay=optim.weight_decay,
                  mask=decay_mask, mu_dtype=jnp.dtype(mu_dtype)),
  ), schedule
