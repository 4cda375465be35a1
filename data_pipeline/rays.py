"""Plücker ray maps: per pixel `(d, o x d)`, `d` the unit direction and `o` the camera centre,
both in world coordinates. Pixel centres sit at integer + 0.5."""
import functools

import numpy as np

from data_pipeline.cameras import validate_cameras
from data_pipeline.errors import require, require_resolution

# Wan's causal VAE: one latent cell covers 4 frames (the first frame alone) and 8 x 8 pixels.
VAE_STRIDE = (4, 8, 8)


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


def _ray_matrices(extrinsics):
  """`[T, 3, 6]` float32: a camera-space direction (row vector) times this is its Plücker ray."""
  extrinsics = np.asarray(extrinsics, np.float64)
  rotation, translation = extrinsics[:, :, :3], extrinsics[:, :, 3]
  centre = -np.einsum("tji,tj->ti", rotation, translation)
  return np.concatenate([rotation, rotation @ np.swapaxes(skew(centre), 1, 2)], axis=-1).astype(np.float32)


def plucker_rays(intrinsics, extrinsics, height, width):
  """`[T, H, W, 6]` float32 Plücker rays for cameras `K [T,3,3]`, `[R|t] [T,3,4]`.

  With row vectors `d_world = d_cam R` and `o x d = d_world [o]_x^T`, one `[3, 6]` matrix per
  frame maps the (cached) camera-space directions to the whole ray map: a single small GEMM.
  """
  require_resolution(height, width)
  validate_cameras(intrinsics, extrinsics)
  intrinsics = np.asarray(intrinsics, np.float64)
  to_rays = _ray_matrices(extrinsics)
  out = np.empty((len(extrinsics), height * width, 6), np.float32)
  for frame in range(len(extrinsics)):
    directions = camera_directions(intrinsics[frame], height, width).reshape(-1, 3)
    np.matmul(directions, to_rays[frame], out=out[frame])
  return out.reshape(len(extrinsics), height, width, 6)


def _require_latent_grid(frames, height, width, stride):
  """Rays of `frames` frames at `height x width` must fill whole latent frames and cells."""
  st, sh, sw = stride
  require(frames >= 1 and (frames - 1) % st == 0,
          f"rays have {frames} frames; the latent grid needs 1 + {st}k")
  require(height % sh == 0 and width % sw == 0,
          f"rays of {height}x{width} pixels do not divide into {sh}x{sw} latent cells")


def to_latent_grid(ray_maps, stride=VAE_STRIDE):
  """Plücker maps `[..., T, H, W, 6]` (T = 1 + 4k) -> the DiT's camera input
  `[..., 1 + k, H/8, W/8, 4*8*8*6]`: each latent cell's rays side by side, ordered
  (frame in group, row, column, channel), frames grouped as the causal VAE groups them (the
  first frame fills its group of 4).

  The model embeds this layout as it is. Folding here, on the host, keeps the accelerator's
  copy wide in its last axis: a 6-channel last axis is padded about 21-fold by TPU memory tiles,
  which made the rays the largest buffer of a 14B train step.
  """
  ray_maps = np.asarray(ray_maps)
  st, sh, sw = stride
  *lead, frames, height, width, channels = ray_maps.shape
  _require_latent_grid(frames, height, width, stride)
  first = np.repeat(ray_maps[..., :1, :, :, :], st, axis=-4)
  grouped = np.concatenate([first, ray_maps[..., 1:, :, :, :]], axis=-4)
  cells = grouped.reshape(*lead, grouped.shape[-4] // st, st, height // sh, sh, width // sw, sw, channels)
  n = len(lead)
  cells = cells.transpose(*range(n), n, n + 2, n + 4, n + 1, n + 3, n + 5, n + 6)
  return np.ascontiguousarray(cells).reshape(*cells.shape[:n + 3], -1)


@functools.lru_cache(maxsize=16)
def _cached_cell_directions(intrinsics_key, height, width, cell_height, cell_width):
  """The camera-space directions `[h * w * ch * cw, 3]`, each latent cell's pixels side by side."""
  directions = _cached_directions(intrinsics_key, height, width)
  cells = directions.reshape(height // cell_height, cell_height, width // cell_width, cell_width, 3)
  cells = np.ascontiguousarray(cells.transpose(0, 2, 1, 3, 4)).reshape(-1, 3)
  cells.flags.writeable = False
  return cells


def latent_grid_rays(intrinsics, extrinsics, height, width, stride=VAE_STRIDE):
  """`to_latent_grid(plucker_rays(...))`, the DiT's camera input for a video's cameras, computed
  in place: each frame's rays are written straight into their latent cells from directions kept
  in that order, instead of a whole ray map being made and then transposed (`benchmarks/render.py`:
  29 against 65 ms for 13 frames at 512x512, 65 against 148 ms for 21 at 480x832, 0.5 against
  5.0 ms for the demo's 17 at 64x64; the same values bit for bit)."""
  require_resolution(height, width)
  validate_cameras(intrinsics, extrinsics)
  st, sh, sw = stride
  frames = len(extrinsics)
  _require_latent_grid(frames, height, width, stride)
  to_rays = _ray_matrices(extrinsics)
  cells, pixels = (height // sh) * (width // sw), sh * sw
  out = np.empty((1 + (frames - 1) // st, cells, st, pixels, 6), np.float32)
  frame_rays = np.empty((cells * pixels, 6), np.float32)  # one frame's, contiguous: a plain GEMM
  for frame in range(frames):
    key = tuple(np.asarray(intrinsics[frame], np.float64).ravel().tolist())
    directions = _cached_cell_directions(key, int(height), int(width), sh, sw)
    np.matmul(directions, to_rays[frame], out=frame_rays)
    if frame == 0:  # the first frame fills its whole group, as the causal VAE groups it
      out[0] = frame_rays.reshape(cells, 1, pixels, 6)
    else:  # frame 1 + st * (f - 1) + s is step s of latent frame f
      out[1 + (frame - 1) // st, :, (frame - 1) % st] = frame_rays.reshape(cells, pixels, 6)
  return out.reshape(out.shape[0], height // sh, width // sw, -1)


def visualise(rays):
  """uint8 `[..., H, W, 3]` picture of a ray map: direction as colour, shaded by |moment|."""
  direction = rays[..., :3]
  moment = np.linalg.norm(rays[..., 3:], axis=-1, keepdims=True)
  shade = 0.55 + 0.45 * moment / max(float(moment.max()), 1e-6)
  return np.clip((direction * 0.5 + 0.5) * shade * 255.0, 0, 255).astype(np.uint8)
