"""Per-video metrics: image similarity (dm-pix), head-pose angle, expression-code and coefficient
distance, and normal-map agreement."""
import dm_pix
import jax.numpy as jnp
import numpy as np

from data_pipeline import head_pose, renderer
from data_pipeline.errors import require


MAX_PSNR_DB = 100.0  # a frame identical to its target: a finite figure, not infinity


def image_scores(generated, target):
  """Mean over frames of each frame's PSNR (dB, at most MAX_PSNR_DB) and SSIM, of uint8 videos
  `[N, H, W, 3]` (frames in [0, 1])."""
  a = jnp.asarray(generated, jnp.float32) / 255.0
  b = jnp.asarray(target, jnp.float32) / 255.0
  psnr = jnp.minimum(dm_pix.psnr(a, b), MAX_PSNR_DB)
  return float(jnp.mean(psnr)), float(jnp.mean(dm_pix.ssim(a, b)))


def rotation_angle_deg(a, b):
  """Angles (degrees) between rotations `a` and `b` `[N, 3, 3]`."""
  cos = (np.trace(np.swapaxes(a, -1, -2) @ b, axis1=-2, axis2=-1) - 1.0) / 2.0
  return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def pose_error_deg(vectors, target_vectors):
  """Mean head-rotation angle between two sets of `(6D, t, s)` pose vectors."""
  rotation = head_pose.rotation_from_6d(np.asarray(vectors, np.float64)[:, :6])
  target = head_pose.rotation_from_6d(np.asarray(target_vectors, np.float64)[:, :6])
  return float(np.mean(rotation_angle_deg(rotation, target)))


def code_distance(codes, target_codes):
  """Mean Euclidean distance between expression codes `[N, D]`, frame by frame."""
  codes, target_codes = np.asarray(codes, np.float64), np.asarray(target_codes, np.float64)
  return float(np.mean(np.linalg.norm(codes - target_codes, axis=-1)))


def code_spread(codes):
  """The mean distance between the codes `[N, D]` of two different frames (every ordered pair):
  what a random other frame of the same set scores in `code_distance`."""
  codes = np.asarray(codes, np.float64)
  require(len(codes) >= 2, "the spread of expression codes needs two frames or more")
  distances = np.linalg.norm(codes[:, None] - codes[None], axis=-1)
  return float(distances.sum() / (len(codes) * (len(codes) - 1)))


def coefficient_error(coefficients, target_coefficients):
  """Root mean square difference of expression coefficients `[N, C]`, in the controls' own units."""
  difference = np.asarray(coefficients, np.float64) - np.asarray(target_coefficients, np.float64)
  return float(np.sqrt(np.mean(np.square(difference))))


def normal_agreement(normals, masks, target_normals, target_masks):
  """How well two videos of stored normal maps agree (`uint8 [N, H, W, 3]`, masks `[N, H, W]`,
  nonzero on the mesh): the mean angle in degrees between unit normals where both show the mesh,
  and the masks' intersection over union (1: the head covers the same pixels)."""
  both, either = (masks > 0) & (target_masks > 0), (masks > 0) | (target_masks > 0)
  cos = np.sum(renderer.decode_normals(normals)[both] * renderer.decode_normals(target_normals)[both], axis=-1)
  angle = float(np.degrees(np.mean(np.arccos(np.clip(cos, -1.0, 1.0))))) if both.any() else 180.0
  return angle, float(both.sum() / max(either.sum(), 1))
