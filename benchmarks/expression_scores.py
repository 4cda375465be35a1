"""How well expression controls are read: R^2, whole and by how far each face turns from the camera."""
import numpy as np

from data_pipeline import head_pose

FACING_BINS = ((0, 30), (30, 60), (60, 180))


def r_squared(predicted, truth, axis=None):
  """Pooled over all controls, or (`axis=0`) each control's own: the pooled figure is dominated by
  the controls that vary most."""
  return 1.0 - np.sum(np.square(predicted - truth), axis=axis) / np.sum(np.square(truth - truth.mean(0)), axis=axis)


def mean_control_r_squared(predicted, truth):
  """The controls' own R^2, averaged with equal weights: the pooled figure's other side, where a
  rarely used control counts as much as the jaw."""
  return float(np.mean(r_squared(predicted, truth, axis=0)))


def by_facing(predicted, truth, poses):
  """(low, high, share of the frames, their R^2 or None where there are none) for each of
  FACING_BINS, from camera-frame pose vectors `poses` (head_pose.facing_degrees). Each bin's
  squared error is set against the whole set's variance (per frame), not the bin's own: a bin of
  a few clips holds less of the controls' spread, and its own would lower its figure for the same
  error."""
  facing = head_pose.facing_degrees(poses)
  variance = np.sum(np.square(truth - truth.mean(0))) / len(truth)
  for low, high in FACING_BINS:
    chosen = (facing >= low) & (facing < high)
    r2 = (1.0 - np.sum(np.square(predicted[chosen] - truth[chosen])) / (np.sum(chosen) * variance)
          if np.any(chosen) else None)
    yield low, high, float(np.mean(chosen)), r2


def bootstrap_interval(predicted, truth, groups, rounds=2000, seed=0):
  """A 90% interval of the pooled R^2 over test sets drawn from the `groups` with replacement (a
  clip's frames mostly hold one expression, so the clips, not the frames, are the independent
  draws; fresh people are one frame each). The basic interval, `2 R^2 - q95` to `2 R^2 - q05`: a
  resampled set repeats groups, so holds less of the controls' spread and its R^2 sits below the
  estimate; the percentiles themselves would carry that shift. Over clips it is conditional on the
  test split's few people."""
  keys = np.unique(groups)
  rows = [np.flatnonzero(groups == key) for key in keys]
  rng = np.random.default_rng(seed)
  scores = []
  for _ in range(rounds):
    chosen = np.concatenate([rows[i] for i in rng.integers(len(keys), size=len(keys))])
    scores.append(r_squared(predicted[chosen], truth[chosen]))
  estimate = r_squared(predicted, truth)
  return 2 * estimate - np.percentile(scores, 95), 2 * estimate - np.percentile(scores, 5)
