"""A skinned morphable mesh in the array layout of FLAME-style model files.

The same class holds the project's own template head (see `template_head.py`) or a user's
FLAME/SMPL-X-style model file: `v_template [V,3]`, `shapedirs [V,3,S+E]` (identity columns
first, then expression), `posedirs [V,3,9(J-1)]` (FLAME's own files store it as `[V*3... ]`
variants, all accepted), `J_regressor [J,V]` (dense or scipy sparse), `weights [V,J]`,
`kintree_table [2,J]` and `f [F,3]`. Files are `.npz` or pickled dicts (`.pkl`); chumpy arrays
inside a pickle are read without chumpy.
"""
import dataclasses
import os
import pickle
import tempfile

import numpy as np
import scipy.sparse

from data_pipeline import lbs
from data_pipeline.errors import InputError, require, require_finite

# FLAME ships 300 identity columns in `shapedirs`; its files do not say so themselves.
FLAME_NUM_SHAPE = 300
FLAME_JOINT_NAMES = ("global", "neck", "jaw", "eye_l", "eye_r")


@dataclasses.dataclass(frozen=True)
class MeshModel:
  v_template: np.ndarray  # [V, 3] float
  shapedirs: np.ndarray  # [V, 3, S + E]
  posedirs: np.ndarray  # [V, 3, 9 (J - 1)]
  J_regressor: np.ndarray  # [J, V]
  weights: np.ndarray  # [V, J]
  kintree_table: np.ndarray  # [2, J]: parent ids (row 0), joint ids (row 1)
  f: np.ndarray  # [F, 3] int32
  num_shape: int
  joint_names: tuple
  expression_names: tuple = ()
  vertex_labels: np.ndarray | None = None  # [V] material ids, our template only
  label_names: tuple = ()
  shape_limit: float = 3.0  # |identity coefficient| bound, in standard deviations
  expression_range: tuple = (-3.0, 3.0)  # bounds on expression coefficients

  def __post_init__(self):
    validate_model(self)

  @property
  def num_vertices(self):
    return self.v_template.shape[0]

  @property
  def num_expression(self):
    return self.shapedirs.shape[2] - self.num_shape

  @property
  def num_joints(self):
    return self.J_regressor.shape[0]

  @property
  def parents(self):
    parents = self.kintree_table[0].astype(np.int64)
    parents[parents >= self.num_joints] = -1  # FLAME stores the root's parent as uint32 max
    return parents

  def joint_index(self, name):
    require(name in self.joint_names, f"mesh model has no joint {name!r}; joints: {self.joint_names}")
    return self.joint_names.index(name)

  def check_coefficients(self, shape, expression):
    shape = np.asarray(shape, dtype=np.float64)
    expression = np.asarray(expression, dtype=np.float64)
    require(shape.shape[-1] == self.num_shape,
            f"shape coefficients have {shape.shape[-1]} entries, model expects {self.num_shape}")
    require(expression.shape[-1] == self.num_expression,
            f"expression coefficients have {expression.shape[-1]} entries, model expects {self.num_expression}")
    require_finite("shape coefficients", shape)
    require_finite("expression coefficients", expression)
    worst = float(np.max(np.abs(shape), initial=0.0))
    require(worst <= self.shape_limit,
            f"shape coefficient out of range: |{worst:.3g}| > {self.shape_limit}")
    low, high = self.expression_range
    require(np.all(expression >= low) and np.all(expression <= high),
            f"expression coefficient out of range [{low}, {high}]: "
            f"min {expression.min():.3g}, max {expression.max():.3g}")
    return shape, expression

  def pose(self, shape, expression, joint_rotations, scale=None, translation=None, subset=None):
    """Posed vertices `[T, V, 3]`: `scale * LBS(template + blend shapes) + translation`.

    `subset` (vertex indices) poses only those vertices, exactly as in the full mesh (the joints
    are still regressed from every vertex), at a fraction of the cost.

    Args:
      shape: [S] identity coefficients.
      expression: [T, E] expression coefficients, or [1, E]: one expression for every frame, the
        mesh shaped once.
      joint_rotations: [T, J, 3, 3] local joint rotations.
      scale: optional [T] global scale.
      translation: optional [T, 3] global translation.
    """
    shape, expression = self.check_coefficients(shape, expression)
    expression = np.atleast_2d(expression)
    joint_rotations = np.asarray(joint_rotations, dtype=np.float64)
    num_frames = joint_rotations.shape[0] if expression.shape[0] == 1 else expression.shape[0]
    require(joint_rotations.shape == (num_frames, self.num_joints, 3, 3),
            f"joint rotations must be [{num_frames}, {self.num_joints}, 3, 3], got {joint_rotations.shape}")
    require_finite("joint rotations", joint_rotations)
    shape_offsets = self.shapedirs[:, :, :self.num_shape] @ shape
    v_shaped = (self.v_template + shape_offsets)[None] + lbs.blend_shapes(
        expression, self.shapedirs[:, :, self.num_shape:])
    joints = np.einsum("jv,tvc->tjc", self.J_regressor, v_shaped)
    v_shaped, joints = (np.broadcast_to(x, (num_frames, *x.shape[1:])) for x in (v_shaped, joints))
    weights, posedirs = self.weights, self.posedirs
    if subset is not None:
      v_shaped, weights, posedirs = v_shaped[:, subset], weights[subset], posedirs[subset]
    posed, _ = lbs.linear_blend_skinning(v_shaped, joint_rotations, joints, self.parents, weights, posedirs)
    if scale is not None:
      scale = np.asarray(scale, dtype=np.float64).reshape(num_frames)
      require_finite("head scale", scale)
      require(np.all(scale > 0), "head scale must be positive")
      posed = posed * scale[:, None, None]
    if translation is not None:
      translation = np.asarray(translation, dtype=np.float64).reshape(num_frames, 3)
      require_finite("translation", translation)
      posed = posed + translation[:, None, :]
    return posed

  def rest_joints(self, shape=None):
    """Joint locations `[J, 3]` of the (shaped) template."""
    vertices = self.v_template
    if shape is not None:
      vertices = vertices + self.shapedirs[:, :, :self.num_shape] @ np.asarray(shape, np.float64)
    return self.J_regressor @ vertices


def validate_model(model):
  num_vertices = model.v_template.shape[0] if model.v_template.ndim == 2 else 0
  require(model.v_template.ndim == 2 and model.v_template.shape[1] == 3 and num_vertices > 0,
          f"mesh model is empty or v_template is not [V, 3]: shape {model.v_template.shape}")
  require(model.f.ndim == 2 and model.f.shape[1] == 3 and model.f.shape[0] > 0,
          f"mesh model has no triangles: f has shape {model.f.shape}")
  require(model.f.min() >= 0 and model.f.max() < num_vertices,
          f"mesh model faces index vertices outside [0, {num_vertices})")
  require(model.shapedirs.shape[:2] == (num_vertices, 3), f"shapedirs must be [{num_vertices}, 3, K]")
  require(0 <= model.num_shape <= model.shapedirs.shape[2],
          f"num_shape {model.num_shape} exceeds shapedirs columns {model.shapedirs.shape[2]}")
  num_joints = model.J_regressor.shape[0]
  require(model.J_regressor.shape == (num_joints, num_vertices), "J_regressor must be [J, V]")
  require(model.weights.shape == (num_vertices, num_joints), "weights must be [V, J]")
  require(model.kintree_table.shape == (2, num_joints), "kintree_table must be [2, J]")
  require(model.posedirs.shape == (num_vertices, 3, 9 * (num_joints - 1)),
          f"posedirs must be [{num_vertices}, 3, {9 * (num_joints - 1)}], got {model.posedirs.shape}")
  require(len(model.joint_names) == num_joints, "one joint name per joint is needed")
  for name in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights"):
    require_finite(f"mesh model {name}", getattr(model, name))


class _ChumpyStub:
  """Stands in for chumpy's `Ch` when unpickling FLAME files; keeps the array in state['x']."""

  def __init__(self, *args, **kwargs):
    self.state = {}

  def __setstate__(self, state):
    self.state = state

  def __array__(self, dtype=None, copy=None):
    return np.asarray(self.state["x"], dtype=dtype)


class _FlameUnpickler(pickle.Unpickler):

  def find_class(self, module, name):
    if module.startswith("chumpy"):
      return _ChumpyStub
    return super().find_class(module, name)


def _dense(value):
  if scipy.sparse.issparse(value):
    return value.toarray()
  return np.asarray(value)


def _read_arrays(path):
  require(os.path.isfile(path), f"mesh model file not found: {path}")
  try:
    if path.endswith(".npz"):
      with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}
    with open(path, "rb") as handle:
      return dict(_FlameUnpickler(handle, encoding="latin1").load())
  except (OSError, ValueError, pickle.UnpicklingError, EOFError) as error:
    raise InputError(f"cannot read mesh model {path}: {error}") from None


def load_model(path, num_shape=None):
  """Reads a FLAME-layout model (`.npz` or `.pkl`).

  `num_shape` (identity columns of `shapedirs`) defaults to the file's `num_shape` entry, else
  FLAME's 300 when `shapedirs` has more columns than that, else all columns.
  """
  data = _read_arrays(path)
  missing = [k for k in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights",
                         "kintree_table", "f") if k not in data]
  require(not missing, f"mesh model {path} lacks {', '.join(missing)}")
  v_template = _dense(data["v_template"]).astype(np.float64)
  num_vertices = v_template.shape[0] if v_template.ndim == 2 else 0
  shapedirs = _dense(data["shapedirs"]).astype(np.float64)
  posedirs = _dense(data["posedirs"]).astype(np.float64)
  if posedirs.ndim == 2:  # [V*3, P] or [P, V*3] flattened layouts
    posedirs = posedirs.reshape(num_vertices, 3, -1) if posedirs.shape[0] == num_vertices * 3 \
        else posedirs.T.reshape(num_vertices, 3, -1)
  if num_shape is None:
    if "num_shape" in data:
      num_shape = int(np.asarray(data["num_shape"]))
    elif shapedirs.ndim == 3 and shapedirs.shape[2] > FLAME_NUM_SHAPE:
      num_shape = FLAME_NUM_SHAPE
    else:
      num_shape = shapedirs.shape[2] if shapedirs.ndim == 3 else 0
  num_joints = np.asarray(data["kintree_table"]).shape[-1]
  default_names = FLAME_JOINT_NAMES if num_joints == 5 else tuple(f"joint{i}" for i in range(num_joints))
  names = lambda key, default: tuple(str(n) for n in np.asarray(data[key]).tolist()) if key in data else default
  labels = np.asarray(data["vertex_labels"]) if "vertex_labels" in data else None
  expression_range = tuple(np.asarray(data["expression_range"], np.float64).tolist()) \
      if "expression_range" in data else (-3.0, 3.0)
  return MeshModel(
      v_template=v_template,
      shapedirs=shapedirs,
      posedirs=posedirs,
      J_regressor=_dense(data["J_regressor"]).astype(np.float64),
      weights=_dense(data["weights"]).astype(np.float64),
      kintree_table=np.asarray(data["kintree_table"]).astype(np.int64),
      f=np.asarray(data["f"]).astype(np.int32),
      num_shape=num_shape,
      joint_names=names("joint_names", default_names),
      expression_names=names("expression_names", ()),
      vertex_labels=labels,
      label_names=names("label_names", ()),
      shape_limit=float(np.asarray(data.get("shape_limit", 3.0))),
      expression_range=expression_range,
  )


def save_model(model, path):
  """Writes `model` as `.npz` in the FLAME layout (atomically: temp file, then rename)."""
  arrays = dict(
      v_template=model.v_template, shapedirs=model.shapedirs, posedirs=model.posedirs,
      J_regressor=model.J_regressor, weights=model.weights, kintree_table=model.kintree_table,
      f=model.f, num_shape=np.int64(model.num_shape), joint_names=np.array(model.joint_names),
      expression_names=np.array(model.expression_names, dtype=str),
      label_names=np.array(model.label_names, dtype=str), shape_limit=np.float64(model.shape_limit),
      expression_range=np.array(model.expression_range, np.float64))
  if model.vertex_labels is not None:
    arrays["vertex_labels"] = model.vertex_labels
  directory = os.path.dirname(os.path.abspath(path))
  with tempfile.NamedTemporaryFile(dir=directory, suffix=".npz", delete=False) as handle:
    np.savez(handle, **arrays)
  os.replace(handle.name, path)
