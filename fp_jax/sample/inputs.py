"""What a person brings to `fp-sample`, read and checked before any compute.

- The portrait (`--image`): PNG, JPEG, WebP, BMP...; RGBA is composited on mid grey, grayscale and
  palette images become RGB. The largest centred region with the model's aspect ratio is cut out
  and resized to the model's resolution: the model expects the face framed as the synthetic
  world's frontal camera frames it (head centred, shoulders at the bottom). `--crop=x0,y0,x1,y1`
  picks another region. The region is kept, for pasting the result back.
- The driving clip (`--driving`): a video file, a folder of frames (sorted by name), or a stored
  synthetic clip `clip:SPLIT/INDEX` of the config's dataset, which brings its tracking.
- A tracking file (`--tracking`, `.npz` or `.json`, one entry per driving frame):
  `head_pose [T, 3, 4]` (world-from-head rotation and translation) and `head_scale [T]`,
  optionally `expression [T, E]` (the template's expression controls) and the driving camera
  `intrinsics [T, 3, 3]`, `extrinsics [T, 3, 4]` (for face crops placed from the mesh).

A stored clip also serves as a portrait: `clip:SPLIT/INDEX@FRAME`.
"""
import dataclasses
import json
import os

import imageio.v3 as iio
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from data_pipeline import cameras, face_crop, records
from data_pipeline.errors import InputError, require, require_finite
from data_pipeline.template_head import build_template

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
MIN_IMAGE_SIZE = 64
GREY = (128, 128, 128)


@dataclasses.dataclass
class Portrait:
  image: np.ndarray  # uint8 [H, W, 3] at the model's resolution
  original: np.ndarray  # uint8 [H0, W0, 3] as given
  box: tuple  # (x0, y0, x1, y1): where `image` came from in `original`
  truth: dict = None  # a stored clip's frame: head_pose, head_scale, expression, shape, cameras


@dataclasses.dataclass
class Driving:
  frames: np.ndarray  # uint8 [N, H, W, 3]
  fps: float
  source: str
  has_audio: bool = False
  tracking: dict = None


# -- stored clips ----------------------------------------------------------------------------

def _stored_clip(spec, input_config):
  """`clip:SPLIT/INDEX[@FRAME]` -> (clip record, frame or None)."""
  body = spec[len("clip:"):]
  body, _, frame = body.partition("@")
  split, _, index = body.partition("/")
  require(split and index.isdigit() and (not frame or frame.isdigit()),
          f"a stored clip is clip:SPLIT/INDEX[@FRAME], got {spec!r}")
  clips = records.ClipRecords(input_config.data_dir, input_config.dataset, split)
  require(int(index) < len(clips), f"{spec}: the {split} split has {len(clips)} clips")
  clip = clips[int(index)]
  if frame:
    require(int(frame) < len(clip["frames"]), f"{spec}: the clip has {len(clip['frames'])} frames")
  return clip, clips.fps, (int(frame) if frame else None)


def _clip_tracking(clip, frames):
  return {key: np.asarray(clip[key][frames], np.float64) for key in
          ("head_pose", "head_scale", "expression", "intrinsics", "extrinsics")} | {
              "shape": np.asarray(clip["shape"], np.float64)}


# -- the portrait ------------------------------------------------------------------------------

def centred_box(width, height, aspect):
  """The largest centred (x0, y0, x1, y1) of `aspect` = width / height inside the image."""
  crop_width = min(width, height * aspect)
  crop_height = crop_width / aspect
  x0, y0 = (width - crop_width) / 2, (height - crop_height) / 2
  return (x0, y0, x0 + crop_width, y0 + crop_height)


def parse_box(text):
  try:
    box = tuple(float(v) for v in text.split(","))
  except ValueError:
    box = ()
  require(len(box) == 4 and box[2] > box[0] and box[3] > box[1],
          f"--crop must be x0,y0,x1,y1 with x1 > x0 and y1 > y0, got {text!r}")
  return box


def _to_rgb(image):
  image = ImageOps.exif_transpose(image)
  if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, GREY + (255,))
    return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
  return np.asarray(image.convert("RGB"))


def read_image(path):
  require(os.path.isfile(path), f"image not found: {path}")
  try:
    with Image.open(path) as image:
      image.load()
      rgb = _to_rgb(image)
  except (UnidentifiedImageError, OSError, SyntaxError) as error:
    raise InputError(f"{path} is not a readable image ({type(error).__name__})") from None
  height, width = rgb.shape[:2]
  require(min(height, width) >= MIN_IMAGE_SIZE,
          f"{path} is {width}x{height}; portraits must be at least {MIN_IMAGE_SIZE} px on each side")
  return rgb


def resize(image, box, height, width):
  """The `box` region of `image` resampled to `height x width`."""
  return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.LANCZOS, box=box))


def load_portrait(spec, height, width, input_config, crop=None):
  if spec.startswith("clip:"):
    clip, _, frame = _stored_clip(spec, input_config)
    frame = frame or 0
    original = np.asarray(clip["frames"][frame])
    truth = _clip_tracking(clip, [frame])
  else:
    original, truth = read_image(spec), None
  image_height, image_width = original.shape[:2]
  box = parse_box(crop) if crop else centred_box(image_width, image_height, width / height)
  require(box[0] >= 0 and box[1] >= 0 and box[2] <= image_width and box[3] <= image_height,
          f"--crop {box} reaches outside the {image_width}x{image_height} image")
  if truth is not None:  # the stored camera, moved to the cut-out region and its new size
    scale = np.diag([width / (box[2] - box[0]), height / (box[3] - box[1]), 1.0])
    shift = np.array([[1, 0, -box[0]], [0, 1, -box[1]], [0, 0, 1]], np.float64)
    truth["intrinsics"] = scale @ shift @ truth["intrinsics"]
  return Portrait(resize(original, box, height, width), original, box, truth)


# -- the driving clip --------------------------------------------------------------------------

def _read_video(path):
  try:
    meta = iio.immeta(path, plugin="FFMPEG")
    frames = iio.imread(path, plugin="FFMPEG", index=None)
  except Exception as error:  # pylint: disable=broad-except
    raise InputError(f"{path} is not a readable video ({str(error).splitlines()[0][:120]})") from None
  return np.asarray(frames), float(meta.get("fps") or 0.0), "audio_codec" in meta


def _read_frames_folder(path):
  names = sorted(n for n in os.listdir(path) if n.lower().endswith(IMAGE_EXTENSIONS))
  require(names, f"{path} holds no image frames ({', '.join(IMAGE_EXTENSIONS)})")
  frames = [_to_rgb(Image.open(os.path.join(path, name))) for name in names]
  require(len({f.shape for f in frames}) == 1, f"the frames in {path} differ in size")
  return np.stack(frames)


def load_driving(spec, input_config, tracking_path=None, default_fps=25.0):
  if spec.startswith("clip:"):
    clip, fps, _ = _stored_clip(spec, input_config)
    frames = np.asarray(clip["frames"])
    driving = Driving(frames, fps, spec, tracking=_clip_tracking(clip, slice(None)))
  elif os.path.isdir(spec):
    driving = Driving(_read_frames_folder(spec), default_fps, spec)
  else:
    require(os.path.isfile(spec), f"driving video not found: {spec}")
    frames, fps, has_audio = _read_video(spec)
    driving = Driving(frames, fps or default_fps, spec, has_audio)
  require(driving.frames.ndim == 4 and len(driving.frames) > 0, f"driving video {spec} has no frames")
  if tracking_path:
    driving.tracking = load_tracking(tracking_path, len(driving.frames))
  return driving


TRACKING_SHAPES = {"head_pose": (3, 4), "head_scale": (), "expression": None,
                   "intrinsics": (3, 3), "extrinsics": (3, 4)}


def load_tracking(path, num_frames):
  """A tracking file's arrays, checked against the driving clip's `num_frames`."""
  require(os.path.isfile(path), f"tracking file not found: {path}")
  try:
    if path.endswith(".json"):
      with open(path) as handle:
        raw = json.load(handle)
    else:
      with np.load(path) as archive:
        raw = dict(archive)
    values = {key: np.asarray(raw[key], np.float64) for key in TRACKING_SHAPES if key in raw}
    if "shape" in raw:
      values["shape"] = np.asarray(raw["shape"], np.float64)
  except (ValueError, TypeError, OSError, KeyError) as error:
    raise InputError(f"tracking file {path} is not valid: {error!r}") from None
  require("head_pose" in values and "head_scale" in values,
          f"tracking file {path} needs head_pose [T, 3, 4] and head_scale [T]")
  for key, value in values.items():
    require_finite(f"{path}: {key}", value)
    if key == "shape":
      continue
    require(len(value) == num_frames,
            f"tracking file {path}: {key} has {len(value)} frames, the driving video {num_frames}")
    want = TRACKING_SHAPES[key]
    require(want is None and value.ndim == 2 or value.shape[1:] == want,
            f"tracking file {path}: {key} must be [T{''.join(f', {n}' for n in want or ('E',))}], "
            f"got {list(value.shape)}")
  require(("intrinsics" in values) == ("extrinsics" in values),
          f"tracking file {path}: give both intrinsics and extrinsics, or neither")
  return values


# -- face crops for the encoders -----------------------------------------------------------------

def frontal_view_boxes(height, width, margin, parts=()):
  """The face box and each part's (face_crop.view_boxes, `[1, 4]` each, pixels) of the template at
  rest seen by the frontal camera."""
  model = build_template()
  camera = cameras.static_frontal(1, height, width)
  rest = np.concatenate([np.eye(3), np.zeros((3, 1))], axis=1)[None]
  return face_crop.view_boxes(model, np.zeros(model.num_shape), rest, np.ones(1), camera.intrinsics,
                              camera.extrinsics, margin, parts)


def face_crops(frames, tracking, size, margin, parts=()):
  """Encoder inputs `[N, size, size, 3]`: boxes from the tracked mesh when the tracking has
  cameras, else the frontal framing's box. With `parts` (face_crop.PARTS) `[N, 1 + P, size, size, 3]`:
  the face, then each part's close-up, boxed the same way."""
  height, width = frames.shape[1:3]
  if tracking is not None and "intrinsics" in tracking:
    model = build_template()
    shape = tracking.get("shape", np.zeros(model.num_shape))
    boxes = face_crop.view_boxes(model, shape, tracking["head_pose"], tracking["head_scale"], tracking["intrinsics"],
                                 tracking["extrinsics"], margin, parts)
  else:
    boxes = [np.repeat(box, len(frames), axis=0) for box in frontal_view_boxes(height, width, margin, parts)]
  crops = [face_crop.crop(frames, b, size) for b in boxes]
  return np.stack(crops, axis=1) if parts else crops[0]
