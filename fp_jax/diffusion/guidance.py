"""Classifier-free guidance with every branch in one batched forward.

Branches say which conditions the model sees (1 kept, 0 dropped, as in training's drop flags):

- `none`: no reference, no motion (expression and pose); the camera is kept,
- `reference`: the reference image only (camera kept),
- `all`: everything.

Modes combine them linearly, `v = sum_b w_b v_b`, with weights from scales that follow schedules
over sampling progress `tau` in [0, 1] (0: pure noise, 1: the last step):

- `off`: `v_all` (one branch);
- `cfg`: `v_none + s (v_all - v_none)` (two branches);
- `hybrid` (DeX's progressive hybrid CFG): `v_none + s_ref (v_ref - v_none) + s_mot (v_all - v_ref)`
  (three branches). Constant schedules give per-condition scales; `s_ref = s_mot` is plain CFG.
- `motion`: `v_ref + s_mot (v_all - v_ref)` (two branches): the motion controls guided, the
  reference taken as it is. `hybrid` with `s_ref = 1` gives the same velocity with a third branch
  of weight zero; a model that reads the reference well is pushed off its data by `s_ref > 1`
  (docs/tiny_runs.md).

The camera is kept in every branch: it is a geometric instruction, not a condition whose
strength one trades against the others. With `model.reference_residual` every branch's velocity
is measured from the portrait (fp_jax/models/preconditioning.py), `none` included; as the weights
sum to 1 that part passes through unscaled, and a reference scale scales only what the
portrait's condition channels add.
"""
import dataclasses
import math

import jax.numpy as jnp
import numpy as np

from data_pipeline.errors import require

BRANCH_KEEPS = {
    "none": dict(reference=0.0, expression=0.0, pose=0.0, camera=1.0),
    "reference": dict(reference=1.0, expression=0.0, pose=0.0, camera=1.0),
    "all": dict(reference=1.0, expression=1.0, pose=1.0, camera=1.0),
}
MODE_BRANCHES = {"off": ("all",), "cfg": ("none", "all"), "hybrid": ("none", "reference", "all"),
                 "motion": ("reference", "all")}
SHAPES = ("constant", "linear", "cosine")


@dataclasses.dataclass(frozen=True)
class Schedule:
  """A scale that moves from `start` (tau = 0) to `end` (tau = 1): linearly or on a half cosine."""
  start: float
  end: float = None
  shape: str = "constant"

  def __post_init__(self):
    require(self.shape in SHAPES, f"guidance schedule shape must be one of {SHAPES}, got {self.shape!r}")
    require(math.isfinite(self.start) and (self.end is None or math.isfinite(self.end)),
            "guidance scales must be finite")
    # A constant schedule with another end would be recorded in the settings and never used.
    require(self.shape != "constant" or self.end is None or self.end == self.start,
            f"a constant guidance schedule cannot end at {self.end} (start {self.start}): give shape linear or cosine")

  def at(self, tau):
    end = self.start if self.end is None else self.end
    if self.shape == "constant":
      return self.start
    if self.shape == "linear":
      return self.start + (end - self.start) * tau
    return end + (self.start - end) * 0.5 * (1.0 + math.cos(math.pi * tau))

  @classmethod
  def parse(cls, value):
    """`3.0`, or a dict/ConfigDict with start, end and shape (constant unless an end that
    differs from the start is given: then linear)."""
    if isinstance(value, (int, float)):
      return cls(float(value))
    values = dict(value)
    start = float(values["start"])
    end = None if values.get("end") is None else float(values["end"])
    default_shape = "constant" if end is None or end == start else "linear"
    return cls(start, end, str(values.get("shape", default_shape)))


@dataclasses.dataclass(frozen=True)
class Guidance:
  mode: str = "hybrid"
  scale: Schedule = Schedule(4.0)  # cfg
  reference: Schedule = Schedule(3.0)  # hybrid
  motion: Schedule = Schedule(3.0)  # hybrid, motion

  def __post_init__(self):
    require(self.mode in MODE_BRANCHES, f"guidance mode must be one of {tuple(MODE_BRANCHES)}, got {self.mode!r}")

  @classmethod
  def from_config(cls, config):
    return cls(str(config.mode), Schedule.parse(config.scale), Schedule.parse(config.reference),
               Schedule.parse(config.motion))

  @property
  def branches(self):
    return MODE_BRANCHES[self.mode]

  def weights(self, tau):
    """float32 `[branches]`: the linear combination of the branch velocities at progress `tau`."""
    if self.mode == "off":
      return np.ones((1,), np.float32)
    if self.mode in ("cfg", "motion"):  # two branches: v_0 + s (v_1 - v_0)
      s = (self.scale if self.mode == "cfg" else self.motion).at(tau)
      return np.array([1.0 - s, s], np.float32)
    s_ref, s_mot = self.reference.at(tau), self.motion.at(tau)
    return np.array([1.0 - s_ref, s_ref - s_mot, s_mot], np.float32)

  def settings(self):
    return {"mode": self.mode, "branches": list(self.branches),
            **{name: dataclasses.asdict(getattr(self, name)) for name in ("scale", "reference", "motion")}}


def branch_keeps(branches, batch, drop=()):
  """Drop flags for `branches` stacked branch-major: each a `[len(branches) * batch]` array;
  conditions named in `drop` are dropped in every branch (an ablation)."""
  return {name: jnp.repeat(jnp.array([0.0 if name in drop else BRANCH_KEEPS[b][name] for b in branches],
                                     jnp.float32), batch)
          for name in BRANCH_KEEPS["all"]}


def guided_velocity(model, latents, timestep, conditions, branches, weights, pad_to=1, drop=()):
  """One forward of the model on every branch at once, combined with `weights` `[branches]`.

  `conditions` are the DiT's keyword inputs for the batch of `latents` (no `keep`). The batch of
  `branches x B` is padded to a multiple of `pad_to` (the mesh's batch shards) and trimmed after.
  `drop` names conditions withheld from every branch (evaluation's ablations).
  """
  batch, count = latents.shape[0], len(branches)
  repeat = lambda x: jnp.concatenate([x] * count, axis=0) if count > 1 else x
  inputs = {name: repeat(value) for name, value in conditions.items()}
  stacked, times = repeat(latents), repeat(jnp.broadcast_to(timestep, (batch,) + timestep.shape[1:]))
  keep = branch_keeps(branches, batch, drop)
  padding = -(count * batch) % pad_to
  if padding:
    pad = lambda x: jnp.concatenate([x, jnp.zeros((padding,) + x.shape[1:], x.dtype)], axis=0)
    stacked, times = pad(stacked), pad(times)
    inputs, keep = ({k: pad(v) for k, v in tree.items()} for tree in (inputs, keep))
  velocity = model(stacked, times, None, keep=keep, **inputs)[:count * batch]
  if count == 1:  # guidance off: the one branch, as is
    return velocity
  velocity = velocity.reshape(count, batch, *velocity.shape[1:])
  return jnp.tensordot(jnp.asarray(weights, velocity.dtype), velocity, axes=1)
