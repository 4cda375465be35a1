"""Face crops from a known head pose: what the expression and pose encoders look at.

A crop is a square around the projected facial landmarks (brows, eyes, lips of the posed mesh,
with the face at rest and with the jaw wide open), `margin` times their extent, resampled to
`size x size`. Parts outside the frame are black. The box follows the head and the camera, never
the expression: a box that grew with an open jaw or raised brows would zoom the crop with the
expression, and the encoders would have to undo the zoom before they could read the face. (Boxes
from the face at rest alone: held-out expression R^2 0.228 against 0.178 at 3000 steps, one seed,
benchmarks/motion.py's encoder trained on fresh people outside the trainer.)
"""
import numpy as np
from PIL import Image

from data_pipeline import controls
from data_pipeline.errors import require

LANDMARK_LABELS = ("brows", "eyeball", "lips")
# Parts of the face seen up close, beside the face crop: the landmark labels each part's box
# bounds, its margin, and the side of the face they are taken from (+1: the subject's left, x > 0
# on the template at rest; -1: the right; 0: both). A gaze of 0.6 moves the pupil about a pixel in
# a 64-pixel face crop; the eyes' close-up is 2.3x to 3.1x closer (the median over a clip of each
# regime), each eye's own closer still. `brows`: both brows and the eyes below them, for the brow
# controls (a pilot, not in the demo's config: docs/motion_runs.md).
PARTS = {"eyes": (("eyeball",), 1.3, 0), "mouth": (("lips",), 1.5, 0),
         "eye_l": (("eyeball",), 2.0, 1), "eye_r": (("eyeball",), 2.0, -1), "brows": (("brows",), 1.3, 0)}
# What each part is in the mirror image of the face (the motion task's mirrored examples).
MIRRORED_PARTS = {"eye_l": "eye_r", "eye_r": "eye_l"}


_LANDMARKS = {}  # (id(model), labels, side) -> (model, indices); holding the model keeps its id unique


def _find_landmarks(model, labels, side):
  if model.vertex_labels is not None and set(labels) <= set(model.label_names):
    wanted = [model.label_names.index(name) for name in labels]
    chosen = np.isin(model.vertex_labels, wanted)
    if side:
      chosen &= np.sign(model.v_template[:, 0]) == side
    indices = np.flatnonzero(chosen)
  else:  # a swapped-in model without labels: vertices moved mostly by the head or jaw joints
    require(labels == LANDMARK_LABELS, f"mesh model has no vertices labelled {labels} to crop a face part around")
    rigid = [model.joint_index(name) for name in ("head", "jaw") if name in model.joint_names]
    indices = np.flatnonzero(np.isin(np.argmax(model.weights, axis=1), rigid))
  require(indices.size >= 3, "mesh model has no facial landmarks to crop around")
  return indices[::max(1, indices.size // 256)]  # a few hundred points bound the face well


def landmarks(model, labels=LANDMARK_LABELS, side=0):
  """Vertex indices whose projections bound the face (or the part of it that `labels` and `side` name)."""
  key = (id(model), tuple(labels), side)
  if key not in _LANDMARKS:
    _LANDMARKS[key] = (model, _find_landmarks(model, tuple(labels), side))
  return _LANDMARKS[key][1]


def check_parts(parts):
  """`parts` as a tuple, each a name in `PARTS` (one-line error otherwise)."""
  parts = tuple(parts)
  for part in parts:
    require(part in PARTS, f"face_crop.parts: unknown part {part!r}; choose from {tuple(PARTS)}")
  return parts


def part_boxes(model, shape, head_pose, head_scale, intrinsics, extrinsics, part):
  """`face_boxes` around one of `PARTS` (its landmarks and margin)."""
  check_parts([part])
  labels, margin, side = PARTS[part]
  return face_boxes(model, shape, head_pose, head_scale, intrinsics, extrinsics, margin, labels, side)


def view_boxes(model, shape, head_pose, head_scale, intrinsics, extrinsics, margin, parts=()):
  """`[face boxes] + [each part's boxes]` (each `[T, 4]`): every crop an encoder reads of a frame."""
  fields = (model, shape, head_pose, head_scale, intrinsics, extrinsics)
  return [face_boxes(*fields, margin)] + [part_boxes(*fields, part) for part in parts]


def face_boxes(model, shape, head_pose, head_scale, intrinsics, extrinsics, margin=1.8, labels=LANDMARK_LABELS,
               side=0):
  """Square crop boxes `[T, 4]` (x0, y0, x1, y1) in pixels, from a clip's stored fields."""
  # The face at rest and with the jaw wide open: the lips' whole travel, so no expression leaves
  # the box, while the box itself never moves with one. Neither uses a blend shape, so the mesh is
  # shaped once for both and every frame.
  head_pose = np.asarray(head_pose, np.float64)
  at_rest = np.zeros((len(head_pose), controls.num_controls(model)))
  jaw_open = at_rest.copy()
  jaw_open[:, controls.control_names(model).index("jaw_open")] = 1.0
  rotations = np.concatenate([controls.joint_rotations(model, head_pose[:, :, :3], pose) for pose in (at_rest, jaw_open)])
  posed = model.pose(shape, np.zeros((1, model.num_expression)), rotations, scale=np.tile(head_scale, 2),
                     translation=np.tile(head_pose[:, :, 3], (2, 1)), subset=landmarks(model, labels, side))
  points = np.concatenate(np.split(posed, 2), axis=1)  # [T, 2 x landmarks, 3]
  extrinsics = np.asarray(extrinsics, np.float64)
  camera = np.einsum("tij,tvj->tvi", extrinsics[:, :, :3], points) + extrinsics[:, None, :, 3]
  require(np.all(camera[..., 2] > 1e-6), "the face is behind the camera in some frame")
  pixels = np.einsum("tij,tvj->tvi", np.asarray(intrinsics, np.float64), camera)
  pixels = pixels[..., :2] / pixels[..., 2:]
  low, high = pixels.min(axis=1), pixels.max(axis=1)
  centre = (low + high) / 2
  half = margin * np.max(high - low, axis=-1, keepdims=True) / 2
  return np.concatenate([centre - half, centre + half], axis=-1).astype(np.float32)


def box_intrinsics(intrinsics, boxes, size):
  """`[T, 3, 3]` intrinsics of cameras that see only each box `[T, 4]`, as `size x size` images:
  the pixel map of `crop` (box corner to 0, box width to `size`) applied after `intrinsics`."""
  boxes = np.asarray(boxes, np.float64)
  zoom = size / (boxes[:, 2] - boxes[:, 0])
  to_crop = np.zeros((len(boxes), 3, 3))
  to_crop[:, 0, 0] = to_crop[:, 1, 1] = zoom
  to_crop[:, 0, 2], to_crop[:, 1, 2] = -boxes[:, 0] * zoom, -boxes[:, 1] * zoom
  to_crop[:, 2, 2] = 1.0
  return to_crop @ np.asarray(intrinsics, np.float64)


def crop(frames, boxes, size):
  """uint8 `[T, size, size, 3]` crops of `frames [T, H, W, 3]` (bilinear, black outside)."""
  require(size >= 8, f"face crop size must be >= 8, got {size}")
  out = np.empty((len(frames), size, size, 3), np.uint8)
  for index, (frame, box) in enumerate(zip(frames, boxes)):
    image = Image.fromarray(np.ascontiguousarray(frame))
    out[index] = np.asarray(image.transform((size, size), Image.Transform.EXTENT,
                                            tuple(float(b) for b in box), Image.Resampling.BILINEAR))
  return out
