"""Semantic controls -> mesh model inputs.

The stored `expression` vector of a clip holds the model's expression blend-shape coefficients
followed by three controls that act through joints: `jaw_open` in [0, 1] (jaw pitch, up to
`JAW_MAX_DEG`), `gaze_yaw` and `gaze_pitch` in [-1, 1] (eye rotations, up to `GAZE_MAX_DEG`;
positive looks to the subject's left and up). The head rotation `R` is shared by the neck and
head joints (35% / 65%) so the skull turns by exactly `R` relative to the torso.
"""
import numpy as np

from data_pipeline.errors import require
from data_pipeline.lbs import axis_angle_to_matrix, matrix_to_axis_angle

JOINT_CONTROLS = ("jaw_open", "gaze_yaw", "gaze_pitch")
JAW_MAX_DEG = 22.0
GAZE_MAX_DEG = (25.0, 15.0)
NECK_SHARE = 0.35


def control_names(model):
  names = model.expression_names or tuple(f"expression_{i}" for i in range(model.num_expression))
  return tuple(names) + JOINT_CONTROLS


def num_controls(model):
  return model.num_expression + len(JOINT_CONTROLS)


def clip_to_range(controls):
  """Joint controls moved into their ranges (jaw [0, 1], gaze [-1, 1]); e.g. after retargeting
  added a driving clip's change to another face's values."""
  controls = np.array(controls, np.float64)
  controls[..., -3] = np.clip(controls[..., -3], 0.0, 1.0)
  controls[..., -2:] = np.clip(controls[..., -2:], -1.0, 1.0)
  return controls


def joint_rotations(model, head_rotation, controls):
  """`[T, J, 3, 3]` local rotations from head rotation `[T, 3, 3]` and controls `[T, E + 3]`."""
  controls = np.atleast_2d(controls)
  num_frames = controls.shape[0]
  require(controls.shape[1] == num_controls(model),
          f"expression has {controls.shape[1]} entries, this model needs {num_controls(model)}")
  jaw, gaze_yaw, gaze_pitch = controls[:, -3], controls[:, -2], controls[:, -1]
  require(np.all((jaw >= 0) & (jaw <= 1)), "jaw_open must lie in [0, 1]")
  require(np.all(np.abs(controls[:, -2:]) <= 1), "gaze controls must lie in [-1, 1]")
  rotations = np.tile(np.eye(3), (num_frames, model.num_joints, 1, 1))
  axis_angle = matrix_to_axis_angle(head_rotation)
  if "head" in model.joint_names:
    rotations[:, model.joint_index("neck")] = axis_angle_to_matrix(NECK_SHARE * axis_angle)
    rotations[:, model.joint_index("head")] = axis_angle_to_matrix((1.0 - NECK_SHARE) * axis_angle)
  else:  # FLAME: the neck joint carries the whole head rotation
    rotations[:, model.joint_index("neck")] = head_rotation
  zeros = np.zeros(num_frames)
  rotations[:, model.joint_index("jaw")] = axis_angle_to_matrix(
      np.stack([np.radians(JAW_MAX_DEG) * jaw, zeros, zeros], axis=-1))
  gaze = axis_angle_to_matrix(np.stack([-np.radians(GAZE_MAX_DEG[1]) * gaze_pitch,
                                        np.radians(GAZE_MAX_DEG[0]) * gaze_yaw, zeros], axis=-1))
  for eye in ("eye_l", "eye_r"):
    rotations[:, model.joint_index(eye)] = gaze
  return rotations


def pose_vertices(model, shape, controls, head_pose, head_scale, subset=None):
  """Posed vertices `[T, V, 3]` from a clip's stored fields (`subset`: only those vertices).

  `head_pose [T, 3, 4]` is `[R | t]`: the head rotation relative to the torso and the global
  translation; `head_scale [T]` scales the whole model about its origin (applied before `t`).
  """
  head_pose = np.asarray(head_pose, np.float64)
  controls = np.atleast_2d(controls)
  rotations = joint_rotations(model, head_pose[:, :, :3], controls)
  blend = controls[:, :model.num_expression]
  return model.pose(shape, blend, rotations, scale=head_scale, translation=head_pose[:, :, 3],
                    subset=subset)


def mirror_map(names):
  """How a face's controls read in its mirror image: `(order, signs)` with
  `mirrored = controls[..., order] * signs`. Left and right swap (`*_l` <-> `*_r`) and a sideways
  gaze turns the other way; controls a mirror cannot tell apart (a PCA model's unnamed
  coefficients) have no mirror map, which is an error."""
  index = {name: i for i, name in enumerate(names)}
  order, signs = [], []
  for name in names:
    stem, side = name[:-2], name[-2:]
    if side in ("_l", "_r"):
      twin = stem + ("_r" if side == "_l" else "_l")
      require(twin in index, f"control {name!r} has no mirror control {twin!r}")
      order.append(index[twin])
    else:
      require(not name.startswith("expression_"),
              f"control {name!r}: unnamed controls have no known mirror image")
      order.append(index[name])
    signs.append(-1.0 if name == "gaze_yaw" else 1.0)
  return np.array(order), np.array(signs, np.float32)
