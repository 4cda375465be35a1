"""Pinhole cameras (OpenCV convention) and camera trajectories.

x right, y down, z forward. Intrinsics `K [T,3,3]`; extrinsics `[R | t]` `[T,3,4]` map world to
camera: `x_cam = R x_world + t`. The world is the template's frame: y up, the face looks along +z.
"""
import dataclasses
import json
import os

import numpy as np

from data_pipeline import curves
from data_pipeline.errors import InputError, require, require_finite, require_resolution

# Default framing: head and shoulders of the template fill the picture from about 1 m.
DEFAULT_TARGET = (0.0, 0.10, 0.0)
DEFAULT_DISTANCE = 1.0
DEFAULT_FOCAL = 2.0  # focal length over image height


@dataclasses.dataclass(frozen=True)
class Cameras:
  """A camera per frame."""
  intrinsics: np.ndarray  # [T, 3, 3]
  extrinsics: np.ndarray  # [T, 3, 4]

  def __len__(self):
    return self.intrinsics.shape[0]

  @property
  def rotations(self):
    return self.extrinsics[:, :, :3]

  @property
  def centres(self):
    """Camera centres in world coordinates, `o = -R^T t`."""
    return -np.einsum("tji,tj->ti", self.rotations, self.extrinsics[:, :, 3])

  def validate(self, height, width):
    validate_cameras(self.intrinsics, self.extrinsics, height, width)
    return self


def validate_cameras(intrinsics, extrinsics, height=None, width=None):
  intrinsics, extrinsics = np.asarray(intrinsics), np.asarray(extrinsics)
  require(intrinsics.ndim == 3 and intrinsics.shape[1:] == (3, 3),
          f"intrinsics must be [T, 3, 3], got {intrinsics.shape}")
  require(extrinsics.ndim == 3 and extrinsics.shape[1:] == (3, 4),
          f"extrinsics must be [T, 3, 4], got {extrinsics.shape}")
  require(intrinsics.shape[0] == extrinsics.shape[0] and intrinsics.shape[0] > 0,
          f"need one intrinsics and one extrinsics per frame, got {intrinsics.shape[0]} and {extrinsics.shape[0]}")
  require_finite("camera intrinsics", intrinsics)
  require_finite("camera extrinsics", extrinsics)
  focal = intrinsics[:, [0, 1], [0, 1]]
  require(np.all(focal > 0), f"camera focal length must be positive, got min {focal.min():.4g}")
  rotation = extrinsics[:, :, :3]
  error = np.abs(rotation @ np.swapaxes(rotation, 1, 2) - np.eye(3)).max()
  require(error < 1e-4, f"camera rotation is not orthonormal (|R R^T - I| = {error:.3g})")
  require(np.all(np.linalg.det(rotation) > 0), "camera rotation is a reflection (det R < 0)")
  if height is not None:
    require_resolution(height, width)


def intrinsics_matrix(height, width, focal=DEFAULT_FOCAL):
  require_resolution(height, width)
  f = focal * height
  return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


def look_at(eye, target, up=(0.0, 1.0, 0.0)):
  """World-to-camera `[3, 4]` for a camera at `eye` looking at `target`, image y along -up."""
  eye, target, up = (np.asarray(v, np.float64) for v in (eye, target, up))
  forward = target - eye
  forward /= np.linalg.norm(forward)
  right = np.cross(forward, up)
  right /= np.linalg.norm(right)
  down = np.cross(forward, right)
  rotation = np.stack([right, down, forward])
  return np.concatenate([rotation, (-rotation @ eye)[:, None]], axis=1)


def orbit_eye(yaw, pitch, distance, target=DEFAULT_TARGET):
  """Camera position on a sphere around `target`; yaw > 0 moves towards +x, pitch > 0 up."""
  yaw, pitch = np.radians(yaw), np.radians(pitch)
  offset = np.stack([np.sin(yaw) * np.cos(pitch), np.sin(pitch) * np.ones_like(yaw),
                     np.cos(yaw) * np.cos(pitch)], axis=-1)
  return np.asarray(target) + np.asarray(distance)[..., None] * offset


def orbit(yaw, pitch, distance, height, width, focal=DEFAULT_FOCAL, target=DEFAULT_TARGET):
  """Per-frame cameras orbiting `target`; yaw, pitch (degrees), distance and focal are [T]."""
  yaw, pitch, distance, focal = np.broadcast_arrays(*(np.atleast_1d(np.asarray(v, np.float64))
                                                      for v in (yaw, pitch, distance, focal)))
  eyes = orbit_eye(yaw, pitch, distance, target)
  extrinsics = np.stack([look_at(eye, target) for eye in eyes])
  intrinsics = np.stack([intrinsics_matrix(height, width, f) for f in focal])
  return Cameras(intrinsics, extrinsics)


# Trajectories: each returns `Cameras` for `num_frames` frames.

def static_frontal(num_frames, height, width, distance=DEFAULT_DISTANCE, focal=DEFAULT_FOCAL):
  return orbit(np.zeros(num_frames), 0.0, distance, height, width, focal)


def static_view(num_frames, height, width, yaw, pitch, distance=DEFAULT_DISTANCE, focal=DEFAULT_FOCAL):
  return orbit(np.full(num_frames, float(yaw)), pitch, distance, height, width, focal)


def turntable(num_frames, height, width, yaw_start=-60.0, yaw_end=60.0, pitch=0.0,
              distance=DEFAULT_DISTANCE, focal=DEFAULT_FOCAL):
  yaw = np.linspace(yaw_start, yaw_end, num_frames)
  return orbit(yaw, pitch, distance, height, width, focal)


def spiral(num_frames, height, width, yaw_start=-45.0, yaw_end=45.0, pitch_amplitude=15.0,
           turns=1.0, distance=DEFAULT_DISTANCE, focal=DEFAULT_FOCAL):
  progress = np.linspace(0.0, 1.0, num_frames)
  yaw = yaw_start + (yaw_end - yaw_start) * progress
  pitch = pitch_amplitude * np.sin(2.0 * np.pi * turns * progress)
  return orbit(yaw, pitch, distance, height, width, focal)


def dolly(num_frames, height, width, distance_start=1.3, distance_end=0.8, zoom=False,
          yaw=0.0, pitch=0.0, focal=DEFAULT_FOCAL):
  """Camera moves along its axis; with `zoom` the focal length follows (dolly zoom)."""
  distance = np.linspace(distance_start, distance_end, num_frames)
  focal = focal * distance / distance_start if zoom else np.full(num_frames, focal)
  return orbit(np.full(num_frames, float(yaw)), pitch, distance, height, width, focal)


def random_smooth(num_frames, height, width, rng, yaw_range=(-50.0, 50.0), pitch_range=(-20.0, 20.0),
                  distance_range=(0.85, 1.2), fps=25.0, focal=DEFAULT_FOCAL):
  gap = fps * 1.5
  yaw = curves.keyframed(rng, num_frames, *yaw_range, mean_gap=gap)
  pitch = curves.keyframed(rng, num_frames, *pitch_range, mean_gap=gap)
  distance = curves.keyframed(rng, num_frames, *distance_range, mean_gap=gap)
  return orbit(yaw, pitch, distance, height, width, focal)


def from_preset(preset, num_frames, height, width):
  """`frontal`, `novel:<yaw>,<pitch>`, `turntable`, `spiral`, `dolly`, `dolly_zoom` or a JSON path."""
  name, _, arguments = preset.partition(":")
  if name == "frontal":
    return static_frontal(num_frames, height, width)
  if name == "novel":
    try:
      yaw, pitch = (float(v) for v in arguments.split(","))
    except ValueError:
      raise InputError(f"camera preset novel needs novel:<yaw>,<pitch> in degrees, got {preset!r}") from None
    return static_view(num_frames, height, width, yaw, pitch)
  presets = {"turntable": turntable, "spiral": spiral, "dolly": dolly,
             "dolly_zoom": lambda *a: dolly(*a, zoom=True)}
  if name in presets:
    return presets[name](num_frames, height, width)
  if preset.endswith(".json"):
    return load_json(preset, height, width, num_frames)
  raise InputError(f"unknown camera preset {preset!r}; use frontal, novel:<yaw>,<pitch>, "
                   "turntable, spiral, dolly, dolly_zoom or a .json file")


def save_json(cameras, path, height, width):
  """Writes per-frame cameras: {"height", "width", "frames": [{"K": 3x3, "Rt": 3x4}, ...]}."""
  payload = {"height": int(height), "width": int(width), "frames": [
      {"K": k.tolist(), "Rt": rt.tolist()} for k, rt in zip(cameras.intrinsics, cameras.extrinsics)]}
  temporary = f"{path}.tmp"
  with open(temporary, "w") as handle:
    json.dump(payload, handle, indent=1)
  os.replace(temporary, path)


def load_json(path, height, width, num_frames=None):
  """Reads `save_json`'s format; K is rescaled when the file's image size differs."""
  require(os.path.isfile(path), f"camera file not found: {path}")
  try:
    with open(path) as handle:
      payload = json.load(handle)
    frames = payload["frames"]
    intrinsics = np.array([frame["K"] for frame in frames], dtype=np.float64)
    extrinsics = np.array([frame["Rt"] for frame in frames], dtype=np.float64)
  except (ValueError, KeyError, TypeError) as error:
    raise InputError(f"camera file {path} is not valid: {error!r}") from None
  validate_cameras(intrinsics, extrinsics)
  if "height" in payload and "width" in payload:
    scale = np.diag([width / payload["width"], height / payload["height"], 1.0])
    intrinsics = scale @ intrinsics
  if num_frames is not None:
    require(len(frames) == num_frames,
            f"camera file {path} has {len(frames)} frames, the video has {num_frames}")
  return Cameras(intrinsics, extrinsics).validate(height, width)
