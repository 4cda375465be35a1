"""How well expression controls are read (R^2, whole and by how far each face turns from the camera),
and how much of a person the expression latent gives away (a linear identity probe)."""
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


def ridge(features, targets, strength=1e-3):
  """Least squares with a small ridge; returns a function of new features."""
  mean_x, mean_y = features.mean(0), targets.mean(0)
  x = features - mean_x
  weights = np.linalg.solve(x.T @ x + strength * len(x) * np.eye(x.shape[1]), x.T @ (targets - mean_y))
  return lambda new: (new - mean_x) @ weights + mean_y


def identity_probe(latent, identity, clip):
  """Accuracy of a one-hot ridge classifier trained on the first half of each identity's clips and
  scored on the other half."""
  labels = np.unique(identity)
  onehot = (identity[:, None] == labels[None]).astype(np.float64)
  if clip.max() == 0:  # fitted and scored on frames of one clip, near copies of each other
    raise ValueError("the identity probe needs two clips or more of each person")
  fit = clip < clip.max() / 2 + 0.5
  predict = ridge(latent[fit], onehot[fit])
  accuracy = np.mean(labels[np.argmax(predict(latent[~fit]), axis=1)] == identity[~fit])
  return float(accuracy), 1.0 / len(labels)


def identity_probe_null(latent, identity, clip, rounds=200, seed=0):
  """The 95th percentile of `identity_probe`'s accuracy with the people's names shuffled among the
  clips of each clip index (each name keeps one clip per index, so the probe's halves stay
  balanced): what a latent holding no identity scores on these few clips by chance."""
  rng = np.random.default_rng(seed)
  scores = []
  for _ in range(rounds):
    shuffled = identity.copy()
    for index in np.unique(clip):
      rows = clip == index
      people = np.unique(identity[rows])
      renamed = dict(zip(people, rng.permutation(people)))
      shuffled[rows] = [renamed[person] for person in identity[rows]]
    scores.append(identity_probe(latent, shuffled, clip)[0])
  return float(np.percentile(scores, 95))
