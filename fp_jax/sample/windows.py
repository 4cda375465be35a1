"""Videos longer than the trained window: overlapping windows blended in latent space.

A video of `1 + 4K` frames has `K` generated latent frames after the reference's slot. Each
window is a trained-length clip of its own: the reference slot, then `k` consecutive generated
latent frames starting at `start` (video frames `4 start ... 4 (start + k)`; the first of them
only conditions the reference slot). At every sampling step each window predicts a velocity for
its frames, and frames seen by several windows take a weighted mean: weights ramp linearly over
the overlap, so each window fades out where the next fades in.
"""
import dataclasses

import jax.numpy as jnp
import numpy as np

from data_pipeline.errors import require


@dataclasses.dataclass(frozen=True)
class WindowPlan:
  total: int  # generated latent frames K
  length: int  # generated latent frames per window k
  starts: tuple
  weights: np.ndarray  # float32 [windows, k], summing to 1 over the windows on every frame

  @property
  def count(self):
    return len(self.starts)

  def video_frames(self, start):
    """Indices of the `1 + 4k` video frames a window starting at `start` conditions on."""
    return np.arange(4 * start, 4 * (start + self.length) + 1)


def plan(total, length, overlap):
  """Windows of `length` latent frames over `total`, neighbours sharing at least `overlap`
  (at most `length - 1`: a window must move on)."""
  require(total >= 1, f"nothing to generate: {total} latent frames")
  require(length >= 1, f"windows need at least one latent frame, got {length}")
  if total <= length:
    return WindowPlan(total, total, (0,), np.ones((1, total), np.float32))
  require(overlap >= 0, f"window overlap must be >= 0, got {overlap}")
  stride = length - min(overlap, length - 1)
  starts = list(range(0, total - length + 1, stride))
  if starts[-1] != total - length:
    starts.append(total - length)
  coverage = np.zeros((len(starts), total), np.float32)
  for index, start in enumerate(starts):
    ramp = np.ones(length, np.float32)
    if index > 0:  # fade in over the frames shared with the previous window
      shared = starts[index - 1] + length - start
      ramp[:shared] = np.minimum(ramp[:shared], (np.arange(shared) + 1) / (shared + 1))
    if index < len(starts) - 1:
      shared = start + length - starts[index + 1]
      ramp[length - shared:] = np.minimum(ramp[length - shared:], (shared - np.arange(shared)) / (shared + 1))
    coverage[index, start:start + length] = ramp
  coverage /= coverage.sum(axis=0, keepdims=True)
  weights = np.stack([coverage[i, s:s + length] for i, s in enumerate(starts)])
  return WindowPlan(total, length, tuple(starts), weights)


def split(latents, window_plan):
  """`[B, K, ...]` -> `[windows * B, k, ...]`, window-major."""
  if window_plan.count == 1:
    return latents
  return jnp.concatenate([latents[:, s:s + window_plan.length] for s in window_plan.starts], axis=0)


def merge(values, window_plan, batch):
  """`[windows * B, k, ...]` -> `[B, K, ...]`: each frame the weighted mean of its windows."""
  if window_plan.count == 1:  # one window covers every frame with weight 1
    return values
  total = jnp.zeros((batch, window_plan.total) + values.shape[2:], values.dtype)
  shape = (1, window_plan.length) + (1,) * (values.ndim - 2)
  for index, start in enumerate(window_plan.starts):
    weight = jnp.asarray(window_plan.weights[index], values.dtype).reshape(shape)
    part = values[index * batch:(index + 1) * batch] * weight
    total = total.at[:, start:start + window_plan.length].add(part)
  return total
