"""The synthetic portrait world: identities, motion, camera regimes, rendered clips.

Regimes, as in FactorPortrait: `phone` (static frontal camera; pose and expression move),
`studio` (fixed novel-view camera; pose and expression move), `viewsweep` (pose and expression
frozen; the camera sweeps: turntable or spiral) and `dynamicsweep` (all three move).
Every clip is a pure function of (seed, identity, clip index): same seed, same bytes.
"""
import dataclasses
import functools

import numpy as np

from data_pipeline import appearance, cameras, controls, curves, face_crop
from data_pipeline.errors import require, require_frame_count, require_resolution
from data_pipeline.lbs import axis_angle_to_matrix
from data_pipeline.renderer import Renderer
from data_pipeline.template_head import build_template

REGIMES = ("phone", "studio", "viewsweep", "dynamicsweep")


@dataclasses.dataclass(frozen=True)
class ClipSpec:
  height: int = 64
  width: int = 64
  num_frames: int = 17
  fps: float = 25.0
  supersample: int = 1
  face_size: int = 0  # > 0: also render each frame's face crop at this size (`face`)
  face_margin: float = 1.8  # the crop box is this times the facial landmarks' extent
  face_parts: tuple = ()  # with face_size: close-ups of these parts too (face_crop.PARTS; `face_PART`)

  def __post_init__(self):
    require_resolution(self.height, self.width)
    require_frame_count(self.num_frames)
    require(self.fps > 0, f"fps must be positive, got {self.fps}")
    require(int(self.supersample) == self.supersample and self.supersample >= 1,
            f"supersample must be an integer >= 1, got {self.supersample}")


@functools.lru_cache(maxsize=4)
def renderer_for(faces_key, height, width, supersample):
  return Renderer(np.frombuffer(faces_key, np.int32).reshape(-1, 3), height, width, supersample)


def _renderer(model, spec):
  return renderer_for(model.f.tobytes(), spec.height, spec.width, spec.supersample)


def identity_rng(seed, identity):
  return np.random.default_rng([seed, identity, 0])


def clip_rng(seed, identity, clip):
  return np.random.default_rng([seed, identity, 1, clip])


def sample_expression(model, rng, num_frames, fps):
  """Smooth, natural expression controls `[T, E + 3]`: keyframed curves, blinks, speech."""
  names = controls.control_names(model)
  low, high = model.expression_range
  gap = fps * rng.uniform(0.6, 1.4)
  out = np.zeros((num_frames, len(names)))
  column = {name: i for i, name in enumerate(names)}

  def sparse():  # mostly at rest, now and then active
    return np.clip(curves.keyframed(rng, num_frames, -0.8, 1.0, gap), 0.0, high)

  if "smile_l" in column:
    smile, asymmetry = sparse(), curves.keyframed(rng, num_frames, -0.25, 0.25, gap)
    out[:, column["smile_l"]] = np.clip(smile * (1 + asymmetry), 0, high)
    out[:, column["smile_r"]] = np.clip(smile * (1 - asymmetry), 0, high)
    raise_ = curves.keyframed(rng, num_frames, -0.6, 1.0, gap)
    out[:, column["brow_raise_l"]] = np.clip(raise_ + 0.15 * rng.normal(), 0, high)
    out[:, column["brow_raise_r"]] = np.clip(raise_ + 0.15 * rng.normal(), 0, high)
    out[:, column["brow_furrow"]] = np.clip(-raise_ * 0.8, 0, high)
    blink = curves.pulses(rng, num_frames, rate_per_frame=rng.uniform(0.15, 0.45) / fps,
                          width_frames=max(1.5, 0.09 * fps))
    wink = curves.pulses(rng, num_frames, rate_per_frame=0.03 / fps, width_frames=max(1.5, 0.15 * fps))
    squint = sparse() * 0.6
    out[:, column["blink_l"]] = np.maximum(blink, wink)
    out[:, column["blink_r"]] = blink
    out[:, column["squint"]] = squint
    for name in ("pucker", "cheek_puff", "lip_corner_down", "mouth_stretch", "nose_wrinkle"):
      out[:, column[name]] = sparse() * rng.uniform(0.3, 1.0)
  else:  # a user's PCA model: smooth random coefficients
    out[:, :model.num_expression] = np.clip(curves.keyframed(
        rng, num_frames, -1.0, 1.0, gap, size=(model.num_expression,)), low, high)
  talking = rng.uniform() < 0.7
  jaw = curves.speech(rng, num_frames, fps) if talking else np.zeros(num_frames)
  out[:, column["jaw_open"]] = np.clip(jaw + np.clip(curves.keyframed(rng, num_frames, -0.5, 0.5, gap), 0, 1), 0, 1)
  out[:, column["gaze_yaw"]] = curves.keyframed(rng, num_frames, -0.6, 0.6, gap)
  out[:, column["gaze_pitch"]] = curves.keyframed(rng, num_frames, -0.5, 0.5, gap)
  return out


def sample_head_motion(rng, num_frames, fps, amplitude=1.0):
  """Head rotation `[T,3,3]`, translation `[T,3]` and scale `[T]`: smooth keyframed curves."""
  gap = fps * rng.uniform(0.8, 1.6)
  limits = np.radians([20.0, 35.0, 12.0]) * amplitude  # pitch, yaw, roll
  angles = curves.keyframed(rng, num_frames, -limits, limits, gap, size=(3,))
  rotation = axis_angle_to_matrix(np.zeros((num_frames, 3)))
  for axis in (1, 0, 2):  # yaw, then pitch, then roll
    vector = np.zeros((num_frames, 3))
    vector[:, axis] = angles[:, axis]
    rotation = rotation @ axis_angle_to_matrix(vector)
  translation = curves.keyframed(rng, num_frames, [-0.01, -0.01, -0.02], [0.01, 0.01, 0.02], gap, size=(3,))
  scale = np.full(num_frames, rng.uniform(0.95, 1.05))
  return rotation, translation * amplitude, scale


def sample_cameras(regime, rng, spec):
  """Cameras for a regime and the trajectory's name."""
  t, h, w = spec.num_frames, spec.height, spec.width
  if regime == "phone":
    return cameras.static_view(t, h, w, rng.uniform(-3, 3), rng.uniform(-3, 3),
                               distance=rng.uniform(0.9, 1.1)), "static_frontal"
  if regime == "studio":
    yaw = rng.choice([-1, 1]) * rng.uniform(20, 70)
    return cameras.static_view(t, h, w, yaw, rng.uniform(-15, 20),
                               distance=rng.uniform(0.9, 1.15)), "static_novel"
  sweep = rng.integers(2) if regime == "viewsweep" else rng.integers(4)
  direction = rng.choice([-1.0, 1.0])
  if sweep == 0:
    start, end = rng.uniform(30, 75), rng.uniform(30, 75)
    return cameras.turntable(t, h, w, -direction * start, direction * end, pitch=rng.uniform(-10, 15)), "turntable"
  if sweep == 1:
    return cameras.spiral(t, h, w, -direction * rng.uniform(30, 60), direction * rng.uniform(30, 60),
                          pitch_amplitude=rng.uniform(8, 20), turns=rng.uniform(0.5, 1.5)), "spiral"
  if sweep == 2:
    return cameras.random_smooth(t, h, w, rng, fps=spec.fps), "random_smooth"
  return cameras.dolly(t, h, w, rng.uniform(1.1, 1.3), rng.uniform(0.8, 0.95), zoom=bool(rng.integers(2)),
                       yaw=rng.uniform(-40, 40), pitch=rng.uniform(-10, 15)), "dolly"


def generate_clip(seed, identity, clip_index, regime, spec, model=None):
  """One clip in the stored schema (see docs/data_format.md)."""
  require(regime in REGIMES, f"unknown regime {regime!r}; choose from {REGIMES}")
  model = model or build_template()
  person = appearance.sample_identity(model, identity_rng(seed, identity))
  rng = clip_rng(seed, identity, clip_index)
  t = spec.num_frames
  if regime == "viewsweep":  # expression and pose frozen at one random state
    expression = np.repeat(sample_expression(model, rng, 1, spec.fps), t, axis=0)
    rotation, translation, scale = sample_head_motion(rng, 1, spec.fps, amplitude=0.6)
    rotation, translation, scale = (np.repeat(a, t, axis=0) for a in (rotation, translation, scale))
  else:
    expression = sample_expression(model, rng, t, spec.fps)
    rotation, translation, scale = sample_head_motion(rng, t, spec.fps)
  cams, trajectory = sample_cameras(regime, rng, spec)
  head_pose = np.concatenate([rotation, translation[:, :, None]], axis=2)
  vertices = controls.pose_vertices(model, person.shape, expression, head_pose, scale)
  lighting = appearance.sample_lighting(rng)
  background = appearance.sample_background(rng)
  images = _renderer(model, spec).render_clip(vertices, cams.intrinsics, cams.extrinsics,
                                              albedo=person.albedo, lighting=lighting, background=background)
  clip = {
      "frames": images["rgb"],
      "normals": images["normals"],
      "mask": images["mask"],
      "intrinsics": cams.intrinsics.astype(np.float32),
      "extrinsics": cams.extrinsics.astype(np.float32),
      "head_pose": head_pose.astype(np.float32),
      "head_scale": scale.astype(np.float32),
      "expression": expression.astype(np.float32),
      "shape": person.shape.astype(np.float32),
      "identity": np.int64(identity),
      "regime": regime,
      "camera_trajectory": trajectory,
      "clip_id": f"id{identity:06d}_clip{clip_index:03d}",
  }
  if spec.face_size:
    # The face as a camera zoomed onto its crop box sees it: the detail a crop of a high-resolution
    # driving video has, which a crop of the small frames cannot give the motion encoders.
    boxes = face_crop.view_boxes(model, person.shape, head_pose, scale, cams.intrinsics, cams.extrinsics,
                                 spec.face_margin, spec.face_parts)
    views = dict(zip(("face",) + tuple(f"face_{part}" for part in spec.face_parts), boxes))
    renderer = renderer_for(model.f.tobytes(), spec.face_size, spec.face_size, spec.supersample)
    for name, view_boxes in views.items():
      zoomed = face_crop.box_intrinsics(cams.intrinsics, view_boxes, spec.face_size)
      clip[name] = renderer.render_clip(vertices, zoomed, cams.extrinsics, albedo=person.albedo, lighting=lighting,
                                        background=background)["rgb"]
  return clip


def render_normals(model, shape, expression, head_pose, head_scale, intrinsics, extrinsics, spec):
  """Re-renders a stored clip's normal maps and masks (e.g. at another resolution)."""
  vertices = controls.pose_vertices(model, shape, expression, head_pose, head_scale)
  images = _renderer(model, spec).render_clip(vertices, intrinsics, extrinsics)
  return images["normals"], images["mask"]
