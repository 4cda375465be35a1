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


def rope_tables(grid, head_dim, theta=10000.0):
  """(cos, sin), each `[tokens, head_dim // 2]` float32, for tokens laid out as `grid` (a
  `TokenGrid`); channels in Wan's (time, height, width) split."""
  t_dim, h_dim, w_dim = axis_split(head_dim)
  layout = np.meshgrid(*(np.arange(size) for size in grid.shape), indexing="ij")
  position = {axis: layout[grid.order.index(axis)].ravel() for axis in grid.order}
  parts = [_angles(getattr(grid, axis), dim, theta)[position[axis]]
           for axis, dim in zip(("frames", "rows", "columns"), (t_dim, h_dim, w_dim))]
  angles = np.concatenate(parts, axis=-1)
  return jnp.asarray(np.cos(angles), jnp.float32), jnp.asarray(np.sin(angles), jnp.float32)


def apply_rope(x, cos, sin):
  """Rotates `x [B, L, N, D]` by tables `[L, D/2]` (float32 math, result in x's dtype).

  As one elementwise expression, `x * cos' + swap(x) * sin'`, with each pair's partners swapped
  by reversing a size-2 axis and the tables repeated per pair (`sin'` signed `-, +`): XLA fuses
  it into one pass forward and one backward, where slicing the pairs apart and stacking them
  again cost a slice, a stack and their padded gradients.
  """
  pairs = x.astype(jnp.float32).reshape(*x.shape[:-1], -1, 2)
  cos = jnp.repeat(cos, 2, axis=-1).reshape(1, cos.shape[0], 1, -1, 2)
  sin = (sin[..., None] * jnp.asarray([-1.0, 1.0], jnp.float32)).reshape(1, sin.shape[0], 1, -1, 2)
  rotated = pairs * cos + pairs[..., ::-1] * sin
  return rotated.reshape(x.shape).astype(x.dtype)
