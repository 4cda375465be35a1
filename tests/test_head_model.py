import pickle

import numpy as np
import pytest
import scipy.sparse

from data_pipeline import controls, lbs
from data_pipeline.errors import InputError
from data_pipeline.mesh_model import load_model, save_model
from data_pipeline.template_head import MOUTH_Y, build_template


@pytest.fixture(scope="module")
def model():
  return build_template()


def test_template_has_the_promised_parts(model):
  assert model.num_shape >= 10
  assert model.num_expression >= 12
  assert len(model.f) >= 10_000
  for name in ("neck", "head", "jaw", "eye_l", "eye_r"):
    model.joint_index(name)
  for name in ("smile_l", "smile_r", "brow_raise_l", "brow_furrow", "blink_l", "blink_r",
               "pucker", "cheek_puff", "lip_corner_down"):
    assert name in model.expression_names
  # Shoulders: the mesh is much wider below the neck than at the head.
  rest = model.v_template
  assert np.ptp(rest[rest[:, 1] < -0.05, 0]) > 2.0 * np.ptp(rest[rest[:, 1] > 0.15, 0])
  # Closed and oriented outwards: positive signed volume.
  v = rest[model.f]
  assert np.einsum("fi,fi->f", v[:, 0], np.cross(v[:, 1], v[:, 2])).sum() > 0
  np.testing.assert_allclose(model.weights.sum(axis=1), 1.0, atol=1e-9)


def test_template_is_deterministic(model):
  again = build_template.__wrapped__()
  for name in ("v_template", "shapedirs", "J_regressor", "weights", "f"):
    np.testing.assert_array_equal(getattr(model, name), getattr(again, name))


def test_zero_pose_equals_the_template(model):
  rotations = np.tile(np.eye(3), (1, model.num_joints, 1, 1))
  posed = model.pose(np.zeros(model.num_shape), np.zeros((1, model.num_expression)), rotations)
  np.testing.assert_allclose(posed[0], model.v_template, atol=1e-12)


def test_jaw_rotation_moves_only_the_jaw_region(model):
  rotations = np.tile(np.eye(3), (1, model.num_joints, 1, 1))
  rotations[0, model.joint_index("jaw")] = lbs.axis_angle_to_matrix(np.array([0.3, 0.0, 0.0]))
  posed = model.pose(np.zeros(model.num_shape), np.zeros((1, model.num_expression)), rotations)[0]
  moved = np.linalg.norm(posed - model.v_template, axis=1) > 1e-9
  jaw_weight = model.weights[:, model.joint_index("jaw")]
  np.testing.assert_array_equal(moved, jaw_weight > 0)
  region = model.v_template[moved]
  assert moved.sum() > 50
  assert region[:, 1].max() < 0.12  # nothing above the mouth
  assert region[:, 2].min() > -0.04  # nothing behind the ears
  # Opening the jaw moves the chin down.
  chin = np.argmax(jaw_weight * (model.v_template[:, 2] > 0.05) - 10 * (model.v_template[:, 1] - 0.09) ** 2)
  assert posed[chin, 1] < model.v_template[chin, 1] - 0.005


def test_nose_wrinkle_lifts_the_nostril_wings_and_the_upper_lip(model):
  """A real nose wrinkle raises the nostrils and the upper lip (world 1.7.0 on), not the lower lip."""
  rest = model.v_template
  expression = np.zeros((1, model.num_expression))
  expression[0, model.expression_names.index("nose_wrinkle")] = 1.0
  rotations = np.tile(np.eye(3), (1, model.num_joints, 1, 1))
  lift = (model.pose(np.zeros(model.num_shape), expression, rotations)[0] - rest)[:, 1]

  def front_vertex(x, y):  # the surface vertex facing the camera nearest (x, y)
    near = np.flatnonzero(np.hypot(rest[:, 0] - x, rest[:, 1] - y) < 0.004)
    return near[np.argmax(rest[near, 2])]

  upper_lip = front_vertex(0.0, MOUTH_Y + 0.005)
  wings = [front_vertex(side * 0.014, 0.132) for side in (-1.0, 1.0)]
  lower_lip = front_vertex(0.0, MOUTH_Y - 0.012)
  assert lift[upper_lip] > 0.004  # metres: a few millimetres, as a face shows it
  assert min(lift[wings]) > 0.004
  assert abs(lift[lower_lip]) < 0.1 * lift[upper_lip]
  assert lift[front_vertex(0.0, 0.165)] > 0.004  # the bridge bunches up as before


def test_head_rotation_turns_the_skull_by_exactly_R(model):
  rotation = lbs.axis_angle_to_matrix(np.array([0.1, 0.5, -0.2]))[None]
  expression = np.zeros((1, controls.num_controls(model)))
  head_pose = np.concatenate([rotation, np.zeros((1, 3, 1))], axis=2)
  posed = controls.pose_vertices(model, np.zeros(model.num_shape), expression, head_pose, np.ones(1))[0]
  skull = model.weights[:, model.joint_index("head")] > 0.999
  rest = model.v_template[skull]
  moved = posed[skull]
  # A rigid motion with rotation R: differences of points rotate by R.
  np.testing.assert_allclose((moved - moved.mean(0)), (rest - rest.mean(0)) @ rotation[0].T, atol=1e-9)
  torso = model.weights[:, model.joint_index("root")] > 0.999
  np.testing.assert_allclose(posed[torso], model.v_template[torso], atol=1e-12)


def test_one_expression_for_every_frame_poses_as_if_repeated(model):
  rng = np.random.default_rng(0)
  shape = rng.normal(size=model.num_shape)
  expression = rng.uniform(0.0, 0.5, (1, model.num_expression))
  rotations = lbs.axis_angle_to_matrix(rng.normal(0, 0.2, (4, model.num_joints, 3)).reshape(-1, 3))
  rotations = rotations.reshape(4, model.num_joints, 3, 3)
  once = model.pose(shape, expression, rotations, scale=np.full(4, 1.1), translation=np.ones((4, 3)))
  repeated = model.pose(shape, np.repeat(expression, 4, axis=0), rotations, scale=np.full(4, 1.1),
                        translation=np.ones((4, 3)))
  assert once.shape == (4, model.v_template.shape[0], 3)
  np.testing.assert_array_equal(once, repeated)


def test_out_of_range_coefficients_are_rejected(model):
  rotations = np.tile(np.eye(3), (1, model.num_joints, 1, 1))
  with pytest.raises(InputError, match="shape coefficient out of range"):
    model.pose(np.full(model.num_shape, 5.0), np.zeros((1, model.num_expression)), rotations)
  with pytest.raises(InputError, match="expression coefficient out of range"):
    model.pose(np.zeros(model.num_shape), np.full((1, model.num_expression), 2.0), rotations)
  with pytest.raises(InputError, match="NaN"):
    model.pose(np.full(model.num_shape, np.nan), np.zeros((1, model.num_expression)), rotations)
  with pytest.raises(InputError, match="jaw_open"):
    controls.joint_rotations(model, np.eye(3)[None], np.r_[np.zeros(model.num_expression), 1.5, 0, 0][None])


def test_template_file_round_trip(model, tmp_path):
  path = str(tmp_path / "template.npz")
  save_model(model, path)
  loaded = load_model(path)
  for name in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f", "vertex_labels"):
    np.testing.assert_array_equal(getattr(loaded, name), getattr(model, name))
  assert loaded.num_shape == model.num_shape and loaded.joint_names == model.joint_names
  assert loaded.expression_range == model.expression_range


def _flame_like_file(path):
  """A two-joint FLAME-layout model: a bar whose tip is skinned to the second joint."""
  v_template = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [2.0, 0.0, 0.0], [2.0, 1.0, 0.0]])
  shapedirs = np.zeros((4, 3, 3))
  shapedirs[:, 1, 0] = 1.0  # identity 0: everything up by 1
  shapedirs[3, 2, 2] = 0.5  # expression 1 (of 2): tip forward
  posedirs = np.zeros((4 * 3, 9))  # FLAME's flattened [V*3, P] layout
  posedirs[3 * 3 + 0, 0] = 0.1  # tip x follows (R_joint1 - I)[0, 0]
  weights = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
  regressor = scipy.sparse.csc_matrix(np.array([[1.0, 0, 0, 0], [0, 1.0, 0, 0]]))
  kintree = np.array([[4294967295, 0], [0, 1]], dtype=np.uint32)
  faces = np.array([[0, 1, 3], [1, 2, 3]], dtype=np.uint32)
  with open(path, "wb") as handle:
    pickle.dump(dict(v_template=v_template, shapedirs=shapedirs, posedirs=posedirs, J_regressor=regressor,
                     weights=weights, kintree_table=kintree, f=faces, num_shape=1), handle)


def test_flame_layout_file_is_read_and_posed_like_flame(tmp_path):
  path = str(tmp_path / "toy_flame.pkl")
  _flame_like_file(path)
  toy = load_model(path)
  assert toy.num_shape == 1 and toy.num_expression == 2 and toy.parents.tolist() == [-1, 0]
  angle = np.pi / 2
  rotations = np.tile(np.eye(3), (1, 2, 1, 1))
  rotations[0, 1] = lbs.axis_angle_to_matrix(np.array([0.0, 0.0, angle]))
  posed = toy.pose(np.array([1.0]), np.array([[0.0, 1.0]]), rotations)[0]
  # Analytic answer: shape lifts all by y+1; expression moves the tip z+0.5; the pose
  # corrective adds 0.1 * (cos(90) - 1) to the tip's x; then joint 1 (at (1,1,0)) turns the
  # bar's far half by 90 degrees about z.
  joint = np.array([1.0, 1.0, 0.0])
  rest_tip = np.array([2.0 + 0.1 * (np.cos(angle) - 1.0), 2.0, 0.5])
  turn = lbs.axis_angle_to_matrix(np.array([0.0, 0.0, angle]))
  np.testing.assert_allclose(posed[3], joint + turn @ (rest_tip - joint), atol=1e-9)
  np.testing.assert_allclose(posed[2], joint + turn @ (np.array([2.0, 1.0, 0.0]) - joint), atol=1e-9)
  np.testing.assert_allclose(posed[0], [0.0, 1.0, 0.0], atol=1e-12)


def test_bad_model_files_are_rejected(tmp_path):
  with pytest.raises(InputError, match="not found"):
    load_model(str(tmp_path / "missing.pkl"))
  empty = tmp_path / "empty.npz"
  np.savez(empty, v_template=np.zeros((0, 3)), shapedirs=np.zeros((0, 3, 1)), posedirs=np.zeros((0, 3, 0)),
           J_regressor=np.zeros((1, 0)), weights=np.zeros((0, 1)), kintree_table=np.array([[-1], [0]]),
           f=np.zeros((0, 3), np.int32))
  with pytest.raises(InputError, match="empty"):
    load_model(str(empty))
  partial = tmp_path / "partial.npz"
  np.savez(partial, v_template=np.zeros((3, 3)))
  with pytest.raises(InputError, match="lacks"):
    load_model(str(partial))
  garbage = tmp_path / "garbage.pkl"
  garbage.write_bytes(b"not a pickle")
  with pytest.raises(InputError, match="cannot read"):
    load_model(str(garbage))


def test_mirrored_controls_pose_the_mirror_image_of_the_face(model):
  """The world's own geometry says what a face's mirror image wears: the face posed with the
  mirrored controls is the face posed with the originals, reflected (x -> -x)."""
  from scipy.spatial import cKDTree  # pylint: disable=g-import-not-at-top
  names = controls.control_names(model)
  order, signs = controls.mirror_map(names)
  rest = model.v_template
  distance, partner = cKDTree(rest).query(rest * [-1.0, 1.0, 1.0])
  assert distance.max() < 1e-6  # the template is symmetric: every vertex has a mirror partner
  values = np.zeros((1, len(names)))
  for name, value in (("smile_l", 0.8), ("smile_r", 0.1), ("blink_r", 0.6), ("brow_raise_l", 0.5),
                      ("jaw_open", 0.4), ("gaze_yaw", 0.7), ("gaze_pitch", -0.3), ("pucker", 0.3)):
    values[0, names.index(name)] = value
  shape, pose, scale = np.zeros(model.num_shape), np.eye(3, 4)[None], np.ones(1)
  posed = controls.pose_vertices(model, shape, values, pose, scale)[0]
  mirrored = controls.pose_vertices(model, shape, values[:, order] * signs, pose, scale)[0]
  np.testing.assert_allclose(posed[partner] * [-1.0, 1.0, 1.0], mirrored, atol=1e-6)
  # The mirror is not the face itself: swapping left and right changed it.
  assert np.abs(posed - mirrored).max() > 1e-3
  with pytest.raises(InputError, match="no known mirror image"):
    controls.mirror_map(("expression_0", "jaw_open"))
  with pytest.raises(InputError, match="no mirror control 'smile_r'"):
    controls.mirror_map(("smile_l", "jaw_open"))


def test_facing_degrees_says_how_far_a_face_turns_from_the_camera():
  from data_pipeline import cameras, head_pose  # pylint: disable=g-import-not-at-top
  # Analytic: a head straight ahead of the camera (its +z towards it) turned by yaw about the
  # camera's vertical; then a head facing along -z but off to the side, seen at 45 degrees.
  toward_camera = np.diag([1.0, -1.0, -1.0])
  turned = lambda degrees: np.array([[np.cos(np.radians(degrees)), 0, np.sin(np.radians(degrees))], [0, 1, 0],
                                     [-np.sin(np.radians(degrees)), 0, np.cos(np.radians(degrees))]])
  poses = [np.concatenate([turned(d) @ toward_camera, [[0.0], [0.0], [2.0]]], axis=1) for d in (0, 30, -90, 150)]
  poses.append(np.concatenate([toward_camera, [[1.0], [0.0], [1.0]]], axis=1))
  vectors = head_pose.pose_vector(np.stack(poses), np.ones(len(poses)))
  np.testing.assert_allclose(head_pose.facing_degrees(vectors), [0, 30, 90, 150, 45], atol=1e-6)
  # The world's own cameras: a head at rest seen by cameras orbiting it at a yaw faces that far
  # from them (within the few degrees by which the orbit's centre sits off the head's origin).
  at_rest = head_pose.pose_vector(np.eye(3, 4)[None], np.ones(1))
  for yaw in (0.0, 30.0, -70.0, 120.0):
    seen = head_pose.to_camera_frame(at_rest, cameras.static_view(1, 64, 64, yaw, 0.0).extrinsics)
    assert abs(head_pose.facing_degrees(seen)[0] - abs(yaw)) < 6.0
