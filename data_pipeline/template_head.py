"""The project's own parametric bald head-and-shoulders template, built in code.

A lofted surface: rings of superellipses from the crown (y = 0.30 m) down to the chest
(y = -0.25 m), face looking along +z, x towards the subject's left (FLAME's frame). Facial
features, identity shape directions and expression blend shapes are smooth displacement fields
over the rest surface; two eyeball spheres sit in the eye sockets. Joints: root (torso), neck,
head, jaw, eye_l, eye_r. Everything is deterministic: no random numbers are drawn here.
"""
import functools

import numpy as np
from scipy.interpolate import PchipInterpolator

from data_pipeline.mesh_model import MeshModel

JOINT_NAMES = ("root", "neck", "head", "jaw", "eye_l", "eye_r")
PARENTS = (-1, 0, 1, 2, 2, 2)
SHAPE_NAMES = (
    "head_width", "head_height", "head_depth", "jaw_width", "nose_prominence", "nose_width",
    "eye_spacing", "brow_height", "chin_length", "cheek_fullness", "neck_thickness",
    "shoulder_width", "forehead_slope", "face_length")
EXPRESSION_NAMES = (
    "smile_l", "smile_r", "brow_raise_l", "brow_raise_r", "brow_furrow", "blink_l", "blink_r",
    "pucker", "cheek_puff", "lip_corner_down", "mouth_stretch", "nose_wrinkle", "squint")
LABEL_NAMES = ("skin", "scalp", "lips", "brows", "eyeball", "torso")

EYE_RADIUS = 0.012
EYE_Y = 0.185
EYE_X = 0.032
MOUTH_Y = 0.1135

# Loft profile: control heights (top to bottom) with half-width, front and back depth, centre z.
_PROFILE_Y = (0.300, 0.296, 0.285, 0.265, 0.240, 0.210, 0.190, 0.170, 0.150, 0.130, 0.110,
              0.095, 0.085, 0.075, 0.060, 0.040, 0.010, -0.010, -0.030, -0.050, -0.080, -0.120, -0.250)
_PROFILE_HALF_WIDTH = (0.000, 0.026, 0.046, 0.064, 0.074, 0.078, 0.077, 0.075, 0.072, 0.066,
                       0.058, 0.049, 0.044, 0.050, 0.053, 0.055, 0.060, 0.095, 0.150, 0.188,
                       0.203, 0.205, 0.195)
_PROFILE_FRONT = (0.000, 0.034, 0.058, 0.077, 0.088, 0.093, 0.094, 0.095, 0.096, 0.094, 0.090,
                  0.082, 0.068, 0.042, 0.046, 0.048, 0.053, 0.072, 0.092, 0.104, 0.110, 0.112, 0.110)
_PROFILE_BACK = (0.000, 0.038, 0.064, 0.085, 0.097, 0.101, 0.099, 0.094, 0.086, 0.074, 0.062,
                 0.056, 0.053, 0.050, 0.048, 0.050, 0.055, 0.070, 0.085, 0.095, 0.100, 0.100, 0.095)
_PROFILE_CENTRE_Z = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -0.002, -0.008,
                     -0.020, -0.022, -0.022, -0.022, -0.020, -0.020, -0.020, -0.020, -0.020, -0.020)
# Ring heights: denser over the face, where the detail is.
_RING_SEGMENTS = ((0.300, 0.240, 10), (0.240, 0.080, 42), (0.080, -0.020, 8), (-0.020, -0.100, 6),
                  (-0.100, -0.250, 3))
_AROUND = 80
_EYE_RINGS, _EYE_SEGMENTS = 10, 16


def smoothstep(edge0, edge1, x):
  t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
  return t * t * (3.0 - 2.0 * t)


def gaussian(x, y, cx, cy, sx, sy):
  return np.exp(-0.5 * (((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2))


def _ring_heights():
  heights = [np.linspace(top, bottom, count, endpoint=False) for top, bottom, count in _RING_SEGMENTS]
  return np.concatenate(heights + [np.array([_RING_SEGMENTS[-1][1]])])


def _around_angles():
  # Concentrates columns at the front (angle 0) where the face is.
  u = np.linspace(0.0, 2.0 * np.pi, _AROUND, endpoint=False)
  return u - 0.35 * np.sin(u)


def _loft():
  """Vertices and faces of the lofted skin: apex, rings, bottom centre."""
  heights = _ring_heights()
  interp = lambda values: PchipInterpolator(_PROFILE_Y[::-1], values[::-1])(heights)
  half_width, front, back, centre_z = (interp(np.array(v)) for v in (
      _PROFILE_HALF_WIDTH, _PROFILE_FRONT, _PROFILE_BACK, _PROFILE_CENTRE_Z))
  exponent = np.where(heights > 0.0, 2.3, np.where(heights > -0.03, 2.4, 3.2))
  phi = _around_angles()
  sin, cos = np.sin(phi), np.cos(phi)
  power = 2.0 / exponent[:, None]
  x = half_width[:, None] * np.sign(sin) * np.abs(sin) ** power
  depth = np.where(cos >= 0.0, front[:, None], back[:, None])
  z = centre_z[:, None] + depth * np.sign(cos) * np.abs(cos) ** power
  y = np.broadcast_to(heights[:, None], x.shape)
  rings = np.stack([x, y, z], axis=-1)[1:]  # ring 0 collapses to the apex
  apex = np.array([[0.0, heights[0], centre_z[0]]])
  bottom = np.array([[0.0, heights[-1], centre_z[-1]]])
  vertices = np.concatenate([apex, rings.reshape(-1, 3), bottom])

  num_rings, n = rings.shape[0], _AROUND
  ring_index = lambda r, i: 1 + r * n + (i % n)
  faces = []
  for i in range(n):  # crown fan, oriented outwards
    faces.append((0, ring_index(0, i), ring_index(0, i + 1)))
  for r in range(num_rings - 1):
    for i in range(n):
      a, b = ring_index(r, i), ring_index(r, i + 1)
      c, d = ring_index(r + 1, i + 1), ring_index(r + 1, i)
      faces.extend([(a, c, b), (a, d, c)])
  last = len(vertices) - 1
  for i in range(n):
    faces.append((last, ring_index(num_rings - 1, i + 1), ring_index(num_rings - 1, i)))
  return vertices, np.array(faces, dtype=np.int32)


def _front_weight(p):
  """1 on the face, 0 behind the ears."""
  return smoothstep(-0.01, 0.05, p[:, 2]) * smoothstep(0.07, 0.09, p[:, 1])


def _facial_features(p):
  """Rest-shape displacement of the skin: nose, sockets, brows, cheeks, lips, chin, ears."""
  x, y, z = p[:, 0], p[:, 1], p[:, 2]
  front = _front_weight(p)
  rise = smoothstep(0.197, 0.150, y) * smoothstep(0.136, 0.150, y)
  nose_width = 0.007 + 0.006 * smoothstep(0.19, 0.15, y)
  dz = 0.024 * rise * np.exp(-0.5 * (x / nose_width) ** 2)
  for side in (-1.0, 1.0):
    dz += 0.007 * gaussian(x, y, side * 0.012, 0.146, 0.005, 0.005)
    dz -= 0.014 * gaussian(x, y, side * EYE_X, EYE_Y, 0.013, 0.009)
    dz += 0.006 * gaussian(x, y, side * 0.033, 0.203, 0.02, 0.006)
    dz += 0.006 * gaussian(x, y, side * 0.045, 0.160, 0.015, 0.012)
  dz += 0.007 * gaussian(x, y, 0.0, 0.121, 0.018, 0.005)
  dz += 0.006 * gaussian(x, y, 0.0, 0.106, 0.016, 0.005)
  dz -= 0.004 * gaussian(x, y, 0.0, MOUTH_Y, 0.022, 0.0018)
  dz += 0.006 * gaussian(x, y, 0.0, 0.092, 0.015, 0.008)
  offsets = np.zeros_like(p)
  offsets[:, 2] = dz * front
  ear = gaussian(y, z, 0.172, -0.008, 0.016, 0.011) * smoothstep(0.05, 0.07, np.abs(x))
  offsets[:, 0] = 0.011 * np.sign(x) * ear
  return offsets


def _eyeball(centre):
  """A UV sphere with its pole looking along +z."""
  theta = np.linspace(0.0, np.pi, _EYE_RINGS + 1)[1:-1]
  phi = np.linspace(0.0, 2.0 * np.pi, _EYE_SEGMENTS, endpoint=False)
  t, f = np.meshgrid(theta, phi, indexing="ij")
  ring = np.stack([np.sin(t) * np.cos(f), np.sin(t) * np.sin(f), np.cos(t)], -1).reshape(-1, 3)
  unit = np.concatenate([[[0.0, 0.0, 1.0]], ring, [[0.0, 0.0, -1.0]]])
  n, rings = _EYE_SEGMENTS, _EYE_RINGS - 1
  idx = lambda r, i: 1 + r * n + (i % n)
  faces = [(0, idx(0, i), idx(0, i + 1)) for i in range(n)]
  for r in range(rings - 1):
    for i in range(n):
      a, b, c, d = idx(r, i), idx(r, i + 1), idx(r + 1, i + 1), idx(r + 1, i)
      faces.extend([(a, d, c), (a, c, b)])
  last = len(unit) - 1
  faces += [(last, idx(rings - 1, i + 1), idx(rings - 1, i)) for i in range(n)]
  return centre + EYE_RADIUS * unit, np.array(faces, dtype=np.int32)


def _identity_fields(p):
  """[N, 3, 14] identity shape directions (one standard deviation each)."""
  x, y, z = p[:, 0], p[:, 1], p[:, 2]
  head = smoothstep(0.06, 0.09, y)
  face = _front_weight(p)
  torso = smoothstep(0.0, -0.03, y)
  neck = smoothstep(-0.03, 0.0, y) * smoothstep(0.09, 0.06, y)
  dirs = np.zeros(p.shape + (len(SHAPE_NAMES),))
  dirs[:, 0, 0] = 0.006 * x / 0.078 * head
  dirs[:, 1, 1] = 0.008 * np.clip(y - 0.08, 0.0, None) / 0.22
  dirs[:, 2, 2] = 0.007 * z / 0.1 * head
  jaw_region = gaussian(np.zeros_like(y), y, 0.0, 0.105, 1.0, 0.025) * head
  dirs[:, 0, 3] = 0.005 * x / 0.06 * jaw_region
  nose = gaussian(x, y, 0.0, 0.160, 0.015, 0.02) * face
  dirs[:, 2, 4] = 0.005 * nose
  dirs[:, 0, 5] = 0.003 * np.clip(x / 0.013, -1.5, 1.5) * nose
  eyes = sum(gaussian(x, y, s * EYE_X, EYE_Y, 0.016, 0.014) for s in (-1.0, 1.0)) * face
  dirs[:, 0, 6] = 0.003 * np.sign(x) * eyes
  brows = sum(gaussian(x, y, s * 0.033, 0.203, 0.025, 0.012) for s in (-1.0, 1.0)) * face
  dirs[:, 1, 7] = 0.003 * brows
  chin = smoothstep(MOUTH_Y, 0.09, y) * face
  dirs[:, 1, 8] = -0.005 * chin
  cheeks = sum(gaussian(x, y, s * 0.05, 0.14, 0.02, 0.025) for s in (-1.0, 1.0)) * head
  dirs[:, 0, 9] = 0.004 * np.sign(x) * cheeks
  dirs[:, 2, 9] = 0.002 * cheeks
  dirs[:, 0, 10] = 0.006 * x / 0.055 * neck
  dirs[:, 2, 10] = 0.006 * (z + 0.02) / 0.05 * neck
  dirs[:, 0, 11] = 0.015 * x / 0.2 * torso
  forehead = smoothstep(0.19, 0.21, y) * smoothstep(0.27, 0.24, y) * face
  dirs[:, 2, 12] = -0.005 * forehead
  dirs[:, 1, 13] = 0.008 * (np.clip(y, 0.09, 0.21) - 0.21) / 0.12 * face
  return dirs


def _expression_fields(p):
  """[N, 3, 13] expression blend shapes at full activation.

  Full activation moves the skin about as far as a real face's strongest expressions do (a smile
  lifts the mouth corners 1.6 cm, raised brows rise 1.2 cm). At half these amplitudes (dataset
  versions before 1.4.0) the expressions the world draws changed a 64x64 face crop by a tenth of a
  grey level on average, and the motion encoders learned to memorise people instead of reading
  expressions (benchmarks/motion.py). Blinks keep their depth: a deeper lid bulges out of the
  socket."""
  x, y = p[:, 0], p[:, 1]
  face = _front_weight(p)
  dirs = np.zeros(p.shape + (len(EXPRESSION_NAMES),))
  for column, side in ((0, 1.0), (1, -1.0)):  # smile: corners up, out, back; cheek rises
    corner = gaussian(x, y, side * 0.026, MOUTH_Y, 0.012, 0.010) * face
    cheek = gaussian(x, y, side * 0.040, 0.140, 0.015, 0.015) * face
    dirs[:, 0, column] = 0.008 * side * corner
    dirs[:, 1, column] = 0.016 * corner + 0.006 * cheek
    dirs[:, 2, column] = -0.004 * corner + 0.006 * cheek
  for column, side in ((2, 1.0), (3, -1.0)):  # brow raise
    dirs[:, 1, column] = 0.012 * gaussian(x, y, side * 0.033, 0.205, 0.022, 0.012) * face
  inner = sum(gaussian(x, y, s * 0.018, 0.200, 0.010, 0.008) for s in (-1.0, 1.0)) * face
  dirs[:, 0, 4] = -0.006 * np.sign(x) * inner  # furrow: inner brows down and together
  dirs[:, 1, 4] = -0.008 * inner
  for column, side in ((5, 1.0), (6, -1.0)):  # blink: the lid fills the socket over the eye
    dirs[:, 2, column] = 0.010 * gaussian(x, y, side * EYE_X, EYE_Y, 0.013, 0.009) * face
  lips = gaussian(x, y, 0.0, MOUTH_Y, 0.022, 0.010) * face
  dirs[:, 0, 7] = -0.012 * np.clip(x / 0.022, -1.0, 1.0) * lips  # pucker
  dirs[:, 2, 7] = 0.018 * lips
  cheeks = sum(gaussian(x, y, s * 0.045, 0.125, 0.016, 0.018) for s in (-1.0, 1.0)) * face
  dirs[:, 0, 8] = 0.015 * np.sign(x) * cheeks  # cheek puff
  dirs[:, 2, 8] = 0.009 * cheeks
  corners = sum(gaussian(x, y, s * 0.026, MOUTH_Y, 0.010, 0.009) for s in (-1.0, 1.0)) * face
  dirs[:, 1, 9] = -0.012 * corners  # lip corners down
  dirs[:, 0, 10] = 0.016 * np.sign(x) * corners  # mouth stretch
  # Nose wrinkle: the skin of the nose's bridge bunches up, and (as in a real one) the nostril
  # wings and the upper lip's centre rise with it. Before world 1.7.0 only the bridge moved, which
  # changed the mouth's close-up by 0.05 grey levels and no encoder read it
  # (benchmarks/expression_visibility.py); the lift makes that 0.8, near a smile's 1.2.
  nose = gaussian(x, y, 0.0, 0.165, 0.014, 0.012) * face
  wings = sum(gaussian(x, y, s * 0.014, 0.132, 0.008, 0.008) for s in (-1.0, 1.0)) * face
  upper_lip = gaussian(x, y, 0.0, MOUTH_Y + 0.005, 0.014, 0.006) * face
  dirs[:, 1, 11] = 0.006 * nose + 0.006 * wings + 0.006 * upper_lip
  dirs[:, 2, 11] = -0.002 * nose
  lids = sum(gaussian(x, y, s * EYE_X, EYE_Y - 0.007, 0.012, 0.004) for s in (-1.0, 1.0)) * face
  dirs[:, 2, 12] = 0.012 * lids  # squint: lower lids rise over the eye
  dirs[:, 1, 12] = 0.004 * lids
  return dirs


def _skin_weights(p):
  y = p[:, 1]
  head = smoothstep(0.05, 0.09, y)
  neck = np.clip(smoothstep(-0.03, 0.01, y) - head, 0.0, 1.0)
  root = 1.0 - head - neck
  below_mouth = smoothstep(MOUTH_Y + 0.003, MOUTH_Y - 0.003, y)
  jaw = below_mouth * smoothstep(-0.035, 0.0, p[:, 2]) * smoothstep(0.06, 0.085, y) * head
  weights = np.zeros((len(p), len(JOINT_NAMES)))
  weights[:, 0], weights[:, 1], weights[:, 2], weights[:, 3] = root, neck, head - jaw, jaw
  return weights


def _labels(p):
  x, y, z = p[:, 0], p[:, 1], p[:, 2]
  labels = np.zeros(len(p), dtype=np.int32)
  front = z > 0.04
  labels[(y > 0.17) & ~(front & (y < 0.235))] = LABEL_NAMES.index("scalp")
  labels[(y > 0.235)] = LABEL_NAMES.index("scalp")
  lips = (gaussian(x, y, 0.0, MOUTH_Y, 0.020, 0.0075) > 0.5) & front
  labels[lips] = LABEL_NAMES.index("lips")
  brows = np.zeros(len(p), bool)
  for side in (-1.0, 1.0):
    brows |= (np.abs(x - side * 0.034) < 0.019) & (np.abs(y - (0.204 - 0.15 * (np.abs(x) - 0.034) ** 2 * 40)) < 0.0035)
  labels[brows & front] = LABEL_NAMES.index("brows")
  labels[y < -0.015] = LABEL_NAMES.index("torso")
  return labels


def _regressor_rows(p, skin_count, eye_slices):
  y = p[:skin_count, 1]
  rows = np.zeros((len(JOINT_NAMES), len(p)))

  def ring_mean(joint, height):
    nearest = np.abs(y - height)
    chosen = np.flatnonzero(nearest <= nearest.min() + 1e-9)
    rows[joint, chosen] = 1.0 / len(chosen)

  ring_mean(0, -0.05)
  ring_mean(1, 0.0)
  ring_mean(2, 0.075)
  hinge = np.flatnonzero((np.abs(p[:skin_count, 0]) > 0.055) & (np.abs(y - 0.165) < 0.008)
                         & (np.abs(p[:skin_count, 2] + 0.012) < 0.012))
  rows[3, hinge] = 1.0 / len(hinge)
  for joint, eye in zip((4, 5), eye_slices):
    rows[joint, eye] = 1.0 / (eye.stop - eye.start)
  return rows


@functools.lru_cache(maxsize=1)
def build_template():
  """The template as a `MeshModel` (cached: it is deterministic)."""
  skin, skin_faces = _loft()
  skin = skin + _facial_features(skin)
  front = skin[:, 2] > 0.05
  pieces, faces, eye_slices = [skin], [skin_faces], []
  offset = len(skin)
  for side in (1.0, -1.0):  # eye_l at +x, as in FLAME
    target = np.array([side * EYE_X, EYE_Y])
    nearest = np.argmin(np.where(front, np.sum((skin[:, :2] - target) ** 2, axis=1), np.inf))
    centre = np.array([target[0], target[1], skin[nearest, 2] - EYE_RADIUS + 0.004])
    eye, eye_faces = _eyeball(centre)
    pieces.append(eye)
    faces.append(eye_faces + offset)
    eye_slices.append(slice(offset, offset + len(eye)))
    offset += len(eye)
  vertices = np.concatenate(pieces)
  skin_count = len(skin)

  # Eyeballs move rigidly with their socket: identity fields are read at the eye centre.
  anchors = vertices.copy()
  for eye in eye_slices:
    anchors[eye] = vertices[eye].mean(axis=0)
  identity = _identity_fields(anchors)
  expression = _expression_fields(vertices)
  labels = _labels(vertices)
  weights = _skin_weights(vertices)
  for joint, eye in zip((4, 5), eye_slices):
    expression[eye] = 0.0
    labels[eye] = LABEL_NAMES.index("eyeball")
    weights[eye] = 0.0
    weights[eye, joint] = 1.0

  num_joints = len(JOINT_NAMES)
  return MeshModel(
      v_template=vertices,
      shapedirs=np.concatenate([identity, expression], axis=2),
      posedirs=np.zeros((len(vertices), 3, 9 * (num_joints - 1))),
      J_regressor=_regressor_rows(vertices, skin_count, eye_slices),
      weights=weights,
      kintree_table=np.array([PARENTS, range(num_joints)], dtype=np.int64),
      f=np.concatenate(faces).astype(np.int32),
      num_shape=len(SHAPE_NAMES),
      joint_names=JOINT_NAMES,
      expression_names=EXPRESSION_NAMES,
      vertex_labels=labels,
      label_names=LABEL_NAMES,
      shape_limit=3.0,
      expression_range=(-0.5, 1.0),
  )
