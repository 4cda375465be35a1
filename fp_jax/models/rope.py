"""Wan's 3D rotary position embedding: head channels split over time, height and width.

Height and width get `2 * (head_dim // 6)` channels each and time the rest. Channel pairs
`(2i, 2i+1)` rotate by `position * theta^(-2i / d)`, `d` the channels of that axis.
"""
import jax.numpy as jnp
import numpy as np


def axis_split(head_dim):
  spatial = 2 * (head_dim // 6)
  return head_dim - 2 * spatial, spatial, spatial


def _angles(positions, dim, theta):
  frequencies = 1.0 / theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
  return np.outer(np.arange(positions, dtype=np.float64), frequencies)


def rope_tables(height, frames, width, head_dim, theta=10000.0):
  """(cos, sin), each `[height * frames * width, head_dim // 2]` float32, for tokens in the
  DiT's (row, frame, column) order; channels in Wan's (time, height, width) split."""
  t_dim, h_dim, w_dim = axis_split(head_dim)
  rows, frame_index, columns = np.meshgrid(np.arange(height), np.arange(frames), np.arange(width),
                                           indexing="ij")
  parts = [_angles(size, dim, theta)[grid.ravel()]
           for size, dim, grid in zip((frames, height, width), (t_dim, h_dim, w_dim),
                                      (frame_index, rows, columns))]
  angles = np.concatenate(parts, axis=-1)
  return jnp.asarray(np.cos(angles), jnp.float32), jnp.asarray(np.sin(angles), jnp.float32)


def apply_rope(x, cos, sin):
  """Rotates `x [B, L, N, D]` by tables `[L, D/2]` (float32 math, result in x's dtype)."""
  pairs = x.astype(jnp.float32).reshape(*x.shape[:-1], -1, 2)
  first, second = pairs[..., 0], pairs[..., 1]
  cos, sin = cos[None, :, None, :], sin[None, :, None, :]
  rotated = jnp.stack([first * cos - second * sin, first * sin + second * cos], axis=-1)
  return rotated.reshape(x.shape).astype(x.dtype)
