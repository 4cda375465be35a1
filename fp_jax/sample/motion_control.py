"""Per-frame head pose and expression for the video to generate, from the driving clip, the
source portrait and the mode.

- `relative` motion (the default, as portrait tools do): each driving frame's change from the
  driving clip's first frame is applied to the source's own pose and expression (rotation
  `R_d(t) R_d(0)^T R_s`, translation and codes by difference, scale by ratio), times `strength`.
- `absolute`: the driving values themselves, blended with the source's by `strength` (1: all
  driving).
- A held signal (a mode's `source`) is the source's value on every frame.
- `smooth` > 0: a Gaussian filter over time (sigma in frames) on the driving signals, against
  tracking jitter; rotations are filtered in their 6D form and made orthonormal again.
"""
import dataclasses

import numpy as np
from scipy.ndimage import gaussian_filter1d

from data_pipeline import head_pose as head_pose_lib
from data_pipeline.errors import require
from data_pipeline.lbs import axis_angle_to_matrix, matrix_to_axis_angle

MOTIONS = ("relative", "absolute")


@dataclasses.dataclass
class Signals:
  """Per-frame `rotation [N, 3, 3]`, `translation [N, 3]`, `scale [N]`, expression `codes [N, E]`
  (the encoder's latent) and `coefficients [N, C]` (the template's controls, for normal maps)."""
  rotation: np.ndarray
  translation: np.ndarray
  scale: np.ndarray
  codes: np.ndarray
  coefficients: np.ndarray

  def __len__(self):
    return len(self.rotation)

  @classmethod
  def from_pose(cls, head_pose, head_scale, codes, coefficients):
    head_pose = np.asarray(head_pose, np.float64)
    return cls(head_pose[:, :, :3], head_pose[:, :, 3], np.asarray(head_scale, np.float64).reshape(-1),
               np.asarray(codes, np.float64), np.asarray(coefficients, np.float64))

  @property
  def head_pose(self):
    return np.concatenate([self.rotation, self.translation[:, :, None]], axis=-1)

  def pose_vectors(self):
    return head_pose_lib.pose_vector(self.head_pose, self.scale)

  def repeat(self, count):
    """A one-frame signal held for `count` frames."""
    return Signals(*(np.repeat(value[:1], count, axis=0) for value in dataclasses.astuple(self)))


def _scaled_rotation(rotation, strength):
  return axis_angle_to_matrix(strength * matrix_to_axis_angle(rotation))


def smooth(signals, sigma):
  if sigma <= 0 or len(signals) < 2:
    return signals
  blur = lambda x: gaussian_filter1d(x, sigma, axis=0, mode="nearest")
  six = blur(head_pose_lib.rotation_to_6d(signals.rotation))
  return Signals(head_pose_lib.rotation_from_6d(six), blur(signals.translation), blur(signals.scale),
                 blur(signals.codes), blur(signals.coefficients))


def combine(driving, source, motion="relative", strength=1.0):
  """Driving signals moved onto the source (`source` holds one frame)."""
  require(motion in MOTIONS, f"motion must be one of {MOTIONS}, got {motion!r}")
  count = len(driving)
  held = source.repeat(count)
  if motion == "relative":
    delta = driving.rotation @ np.swapaxes(driving.rotation[:1], -1, -2)
    return Signals(
        _scaled_rotation(delta, strength) @ held.rotation,
        held.translation + strength * (driving.translation - driving.translation[:1]),
        held.scale * (driving.scale / driving.scale[:1]) ** strength,
        held.codes + strength * (driving.codes - driving.codes[:1]),
        held.coefficients + strength * (driving.coefficients - driving.coefficients[:1]))
  towards = np.swapaxes(held.rotation, -1, -2) @ driving.rotation
  lerp = lambda a, b: (1 - strength) * a + strength * b
  return Signals(held.rotation @ _scaled_rotation(towards, strength),
                 lerp(held.translation, driving.translation), lerp(held.scale, driving.scale),
                 lerp(held.codes, driving.codes), lerp(held.coefficients, driving.coefficients))


def select(driven, held, drive_pose, drive_expression):
  """Pose from `driven` or `held`, expression likewise (both `Signals` of one length)."""
  pose_from = driven if drive_pose else held
  expression_from = driven if drive_expression else held
  return Signals(pose_from.rotation, pose_from.translation, pose_from.scale,
                 expression_from.codes, expression_from.coefficients)
