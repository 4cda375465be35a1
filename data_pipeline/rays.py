"""Plücker ray maps: per pixel `(d, o x d)`, `d` the unit direction and `o` the camera centre,
both in world coordinates. Pixel centres sit at integer + 0.5."""
import functools

import numpy as np

from data_pipeline.cameras import validate_cameras
from data_pipeline.errors import require_resolution


def _directions(intrinsics, height, width):
  inverse = np.linalg.inv(np.asarray(intrinsics, np.float64)).astype(np.float32)
  u = (np.arange(width, dtype=np.float32) + 0.5)[None, :, None]
  v = (np.arange(height, dtype=np.float32) + 0.5)[:, None, None]
  directions = u * inverse[:, 0] + v * inverse[:, 1] + inverse[:, 2]
  directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
  return directions


@functools.lru_cache(maxsize=16)
def _cached_directions(intrinsics_key, height, width):
  directions = _directions(np.array(intrinsics_key).reshape(3, 3), height, width)
  directions.flags.writeable = False
  return directions


def camera_directions(intrinsics, height, width):
  """Unit ray directions in camera coordinates through pixel centres, `[H, W, 3]` float32."""
  require_resolution(height, width)
  key = tuple(np.asarray(intrinsics, np.float64).ravel().tolist())
  return _cached_directions(key, int(height), int(width))


def skew(vectors):
  """Cross-product matrices: `skew(a) @ b == a x b`."""
  x, y, z = np.moveaxis(np.asarray(vectors), -1, 0)
  zero = np.zeros_like(x)
  return np.stack([zero, -z, y, z, zero, -x, -y, x, zero], axis=-1).reshape(x.shape + (3, 3))


def plucker_rays(intrinsics, extrinsics, height, width):
  """`[T, H, W, 6]` float32 Plücker rays for cameras `K [T,3,3]`, `[R|t] [T,3,4]`.

  With row vectors `d_world = d_cam R` and `o x d = d_world [o]_x^T`, one `[3, 6]` matrix per
  frame maps the (cached) camera-space directions to the whole ray map: a single small GEMM.
  """
  require_resolution(height, width)
  validate_cameras(intrinsics, extrinsics)
  intrinsics = np.asarray(intrinsics, np.float64)
  extrinsics = np.asarray(extrinsics, np.float64)
  rotation, translation = extrinsics[:, :, :3], extrinsics[:, :, 3]
  centre = -np.einsum("tji,tj->ti", rotation, translation)
  to_rays = np.concatenate([rotation, rotation @ np.swapaxes(skew(centre), 1, 2)], axis=-1)
  to_rays = to_rays.astype(np.float32)
  out = np.empty((len(extrinsics), height * width, 6), np.float32)
  for frame in range(len(extrinsics)):
    directions = camera_directions(intrinsics[frame], height, width).reshape(-1, 3)
    np.matmul(directions, to_rays[frame], out=out[frame])
  return out.reshape(len(extrinsics), height, width, 6)


def visualise(rays):
  """uint8 `[..., H, W, 3]` picture of a ray map: direction as colour, shaded by |moment|."""
  direction = rays[..., :3]
  moment = np.linalg.norm(rays[..., 3:], axis=-1, keepdims=True)
  shade = 0.55 + 0.45 * moment / max(float(moment.max()), 1e-6)
  return np.clip((direction * 0.5 + 0.5) * shade * 255.0, 0, 255).astype(np.uint8)
