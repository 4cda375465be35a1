"""The explicit head pose as the networks see it: 6D rotation, translation and scale.

The 6D rotation is the first two columns of `R` (Zhou et al., "On the continuity of rotation
representations"); Gram-Schmidt turns any 6 numbers back into a rotation. A pose vector is
`[r1 (3), r2 (3), t (3), s (1)]`, 10 numbers per frame.
"""
import numpy as np

from data_pipeline.errors import require

POSE_DIM = 10


def rotation_to_6d(rotation):
  """`[..., 3, 3]` -> `[..., 6]`: the first two columns, concatenated."""
  rotation = np.asarray(rotation)
  return np.concatenate([rotation[..., :, 0], rotation[..., :, 1]], axis=-1)


def rotation_from_6d(six):
  """`[..., 6]` -> `[..., 3, 3]` by Gram-Schmidt on the two columns."""
  six = np.asarray(six, np.float64)
  first = six[..., :3] / np.linalg.norm(six[..., :3], axis=-1, keepdims=True)
  second = six[..., 3:] - np.sum(first * six[..., 3:], axis=-1, keepdims=True) * first
  second /= np.linalg.norm(second, axis=-1, keepdims=True)
  return np.stack([first, second, np.cross(first, second)], axis=-1)


def pose_vector(head_pose, head_scale):
  """Stored `head_pose [T,3,4]` and `head_scale [T]` -> float32 `[T, 10]`."""
  head_pose = np.asarray(head_pose)
  require(head_pose.ndim == 3 and head_pose.shape[1:] == (3, 4),
          f"head pose must be [T, 3, 4], got {head_pose.shape}")
  scale = np.asarray(head_scale).reshape(len(head_pose), 1)
  return np.concatenate([rotation_to_6d(head_pose[:, :, :3]), head_pose[:, :, 3], scale],
                        axis=-1).astype(np.float32)


def pose_from_vector(vector):
  """`[T, 10]` -> (`head_pose [T,3,4]`, `head_scale [T]`)."""
  vector = np.asarray(vector, np.float64)
  require(vector.shape[-1] == POSE_DIM, f"pose vectors have {POSE_DIM} entries, got {vector.shape[-1]}")
  rotation = rotation_from_6d(vector[..., :6])
  return np.concatenate([rotation, vector[..., 6:9, None]], axis=-1), vector[..., 9]


def facing_degrees(vectors):
  """Camera-frame pose vectors `[N, 10]` -> `[N]` degrees between where each face points (the
  head's +z, out through the nose) and the direction from the head to the camera: 0 faces the
  camera, 90 shows a profile, beyond 90 the back of the head."""
  vectors = np.asarray(vectors, np.float64)
  forward = rotation_from_6d(vectors[:, :6])[:, :, 2]
  to_camera = -vectors[:, 6:9] / np.linalg.norm(vectors[:, 6:9], axis=-1, keepdims=True)
  return np.degrees(np.arccos(np.clip(np.sum(forward * to_camera, axis=-1), -1.0, 1.0)))


def to_camera_frame(vectors, extrinsics):
  """World-frame pose vectors `[..., 10]` -> the same head seen from cameras `[..., 3, 4]`
  (OpenCV world-to-camera): `R_c = R R_h`, `t_c = R t_h + t`. The 6D columns rotate like the
  rotation, so this is exact on raw 6D and works on numpy and jax arrays alike."""
  xp = vectors.__array_namespace__()
  rotation, offset = extrinsics[..., :3, :3], extrinsics[..., :3, 3]
  turn = lambda v: xp.einsum("...ij,...j->...i", rotation, v)
  return xp.concatenate([turn(vectors[..., 0:3]), turn(vectors[..., 3:6]), turn(vectors[..., 6:9]) + offset,
                         vectors[..., 9:]], axis=-1)


def from_camera_frame(vectors, extrinsics):
  """The inverse of `to_camera_frame`: camera-frame pose vectors back to the world frame, i.e.
  `to_camera_frame` through the inverse cameras `[R^T | -R^T t]`."""
  xp = vectors.__array_namespace__()
  rotation = xp.swapaxes(extrinsics[..., :3, :3], -1, -2)
  offset = -xp.einsum("...ij,...j->...i", rotation, extrinsics[..., :3, 3])
  return to_camera_frame(vectors, xp.concatenate([rotation, offset[..., None]], axis=-1))
