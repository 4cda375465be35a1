"""How well expression controls are read: R^2, whole and by how far each face turns from the camera."""
import numpy as np

from data_pipeline import head_pose

FACING_BINS = ((0, 30), (30, 60), (60, 180))


def r_squared(predicted, truth, axis=None):
  """Pooled over all controls, or (`axis=0`) each control's own: the pooled figure is dominated by
  the controls that vary most."""
  return 1.0 - np.sum(np.square(predicted - truth), axis=axis) / np.sum(np.square(truth - truth.mean(0)), axis=axis)


def by_facing(predicted, truth, poses):
  """(low, high, share of the frames, their pooled R^2 or None where there are none) for each of
  FACING_BINS, from camera-frame pose vectors `poses` (head_pose.facing_degrees)."""
  facing = head_pose.facing_degrees(poses)
  for low, high in FACING_BINS:
    chosen = (facing >= low) & (facing < high)
    yield low, high, float(np.mean(chosen)), (r_squared(predicted[chosen], truth[chosen]) if np.any(chosen) else None)
