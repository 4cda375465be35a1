"""AdamW with warmup and a cosine or constant schedule, global-norm clipping, a decay mask,
parameters held still (`optim.frozen`) and parameters updated by Muon instead (`optim.muon`).

Muon (optax.contrib.muon) orthogonalises each kernel's momentum by Newton-Schulz iterations, so
a step moves every direction of the kernel's input-to-output map by the same amount: features
that AdamW would learn slowly, because their gradients are small beside the dominant ones, learn
as fast as the rest. Its updates are scaled to AdamW's typical RMS (`MUON_RMS`), so
`optim.learning_rate` and `optim.weight_decay` serve both.
"""
import re

import jax
import jax.numpy as jnp
import optax

from data_pipeline.errors import InputError, require

SCHEDULES = ("cosine", "constant")
MUON_RMS = 0.2  # Muon's update RMS, AdamW's usual one (Moonlight's matching), so one learning rate serves both
# The DiT's blocks are scanned: their parameters stack the layers on a leading axis
# (fp_jax/models/dit.py), which Muon must treat as a batch of matrices, not fold into one.
STACKED_LAYERS = re.compile(r"(.*/)?blocks/.*")


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


def compile_patterns(field, patterns):
  """`patterns` (regular expressions over whole parameter names) compiled; one-line error on a bad one."""
  compiled = []
  for pattern in patterns:
    try:
      compiled.append(re.compile(pattern))
    except re.error as error:
      raise InputError(f"optim.{field}: {pattern!r} is not a regular expression ({error})") from None
  return compiled


def _labeller(rules, default):
  """`params -> labels`: per parameter the first of `rules` (`(field, compiled patterns)`, the field
  of `optim` they come from being the label) one of whose patterns matches its whole name, `default`
  where none does. Every pattern must name a parameter: a typo would otherwise change nothing,
  silently."""
  def labels(params):
    names = jax.tree_util.tree_map_with_path(lambda path, leaf: parameter_name(path), params)
    every = jax.tree.leaves(names)  # none for optax's placeholder trees
    for field, compiled in rules if every else ():
      for pattern in compiled:
        require(any(pattern.fullmatch(name) for name in every),
                f"optim.{field}: {pattern.pattern!r} names no parameter (names look like {every[0]!r})")
    def label(name):
      return next((field for field, compiled in rules if any(p.fullmatch(name) for p in compiled)), default)
    return jax.tree.map(label, names)
  return labels


def frozen_labels(patterns):
  """`params -> labels`: "frozen" where a parameter's whole name matches one of `patterns`
  (regular expressions), "trained" elsewhere."""
  return _labeller([("frozen", compile_patterns("frozen", patterns))], "trained")


def muon_labels(frozen, muon):
  """`params -> labels`: "frozen" (`optim.frozen` matches), "muon" (`optim.muon` matches) or "adamw"."""
  return _labeller([("frozen", compile_patterns("frozen", frozen)), ("muon", compile_patterns("muon", muon))],
                   "adamw")


def muon_dimensions(params):
  """Per Muon parameter, the axes of the matrix it is orthogonalised as: the last is the output, the
  ones before it the input (a convolution's window and input channels together), except the DiT's
  stacked layer axis (`STACKED_LAYERS`), along which each layer's matrix is its own."""
  def dimensions(path, leaf):
    name = parameter_name(path)
    first = 1 if STACKED_LAYERS.fullmatch(name) else 0
    require(leaf.ndim - first >= 2, f"optim.muon: {name} has shape {tuple(leaf.shape)}, not a matrix or a kernel: "
            "Muon updates matrices, so leave it to AdamW")
    return optax.contrib.MuonDimensionNumbers(tuple(range(first, leaf.ndim - 1)), leaf.ndim - 1)
  return jax.tree_util.tree_map_with_path(dimensions, params)


def make_optimizer(optim, total_steps):
  mu_dtype = optim.get("mu_dtype", "float32")  # configs saved before the field read as float32
  require(mu_dtype in ("float32", "bfloat16"), f"optim.mu_dtype must be float32 or bfloat16, got {mu_dtype!r}")
  schedule = learning_rate_schedule(optim, total_steps)
  adamw = optax.adamw(schedule, b1=optim.b1, b2=optim.b2, eps=optim.eps, weight_decay=optim.weight_decay,
                      mask=decay_mask, mu_dtype=jnp.dtype(mu_dtype))
  frozen = tuple(optim.get("frozen", ()))  # configs saved before the field froze nothing
  muon = tuple(optim.get("muon", ()))  # configs saved before the field: AdamW throughout
  if muon:
    labels = muon_labels(frozen, muon)
    # optax's Muon defaults otherwise: Nesterov momentum 0.95, five Newton-Schulz steps.
    muon_tx = optax.contrib.muon(schedule, eps=optim.eps, weight_decay=optim.weight_decay,
                                 mu_dtype=jnp.dtype(mu_dtype), consistent_rms=MUON_RMS,
                                 muon_weight_dimension_numbers=muon_dimensions)
    is_frozen = lambda params: jax.tree.map(lambda label: label == "frozen", labels(params))
    return optax.chain(
        optax.masked(optax.set_to_zero(), is_frozen),  # frozen gradients count nowhere, not even in the clip
        optax.clip_by_global_norm(optim.clip_norm),
        optax.multi_transform({"adamw": adamw, "muon": muon_tx, "frozen": optax.set_to_zero()}, labels),
    ), schedule
  tx = optax.chain(optax.clip_by_global_norm(optim.clip_norm), adamw)
  if not frozen:  # the optimizer state of runs that freeze nothing keeps its layout
    return tx, schedule
  # Frozen parameters get no update and no decay, and keep no moments; the clip sees the rest.
  return optax.multi_transform({"trained": tx, "frozen": optax.set_to_zero()}, frozen_labels(frozen)), schedule
