import numpy as np
import pytest

from data_pipeline import controls, face_crop, world
from data_pipeline.errors import InputError
from data_pipeline.template_head import build_template

SPEC = world.ClipSpec(height=32, width=32, num_frames=9)


@pytest.fixture(scope="module")
def clips():
  return {regime: world.generate_clip(7, i, 0, regime, SPEC) for i, regime in enumerate(world.REGIMES)}


def test_clip_schema(clips):
  model = build_template()
  clip = clips["phone"]
  t, h, w = 9, 32, 32
  expected = {"frames": ((t, h, w, 3), np.uint8), "normals": ((t, h, w, 3), np.uint8), "mask": ((t, h, w), np.uint8),
              "intrinsics": ((t, 3, 3), np.float32), "extrinsics": ((t, 3, 4), np.float32),
              "head_pose": ((t, 3, 4), np.float32), "head_scale": ((t,), np.float32),
              "expression": ((t, model.num_expression + 3), np.float32), "shape": ((model.num_shape,), np.float32)}
  for key, (shape, dtype) in expected.items():
    assert clip[key].shape == shape and clip[key].dtype == dtype, key
  assert clip["regime"] == "phone" and clip["identity"] == 0
  low, high = model.expression_range
  for c in clips.values():
    blend = c["expression"][:, :model.num_expression]
    assert blend.min() >= low and blend.max() <= high
    assert 0.05 < (c["mask"] > 0).mean() < 0.95  # the person is in the picture


def test_same_seed_same_bytes_and_other_seed_other_bytes():
  a = world.generate_clip(3, 5, 1, "dynamicsweep", SPEC)
  b = world.generate_clip(3, 5, 1, "dynamicsweep", SPEC)
  for key in a:
    assert np.asarray(a[key]).tobytes() == np.asarray(b[key]).tobytes(), key
  c = world.generate_clip(4, 5, 1, "dynamicsweep", SPEC)
  assert not np.array_equal(a["frames"], c["frames"])
  assert not np.array_equal(a["shape"], c["shape"])


def _moves(array):
  return float(np.abs(np.diff(array, axis=0)).max())


def test_regimes_control_what_moves(clips):
  for regime in ("phone", "studio"):  # static camera; pose and expression move
    clip = clips[regime]
    assert _moves(clip["extrinsics"]) == 0
    assert _moves(clip["head_pose"]) > 1e-3 and _moves(clip["expression"]) > 1e-3
  phone_yaw = np.degrees(np.arctan2(*(-clips["phone"]["extrinsics"][0, :, :3].T @ clips["phone"]["extrinsics"][0, :, 3])[[0, 2]]))
  studio_yaw = np.degrees(np.arctan2(*(-clips["studio"]["extrinsics"][0, :, :3].T @ clips["studio"]["extrinsics"][0, :, 3])[[0, 2]]))
  assert abs(phone_yaw) <= 3.5 and abs(studio_yaw) >= 19.9
  sweep = clips["viewsweep"]  # pose and expression frozen; the camera sweeps
  assert _moves(sweep["head_pose"]) == 0 and _moves(sweep["expression"]) == 0
  assert _moves(sweep["extrinsics"]) > 1e-2 and sweep["camera_trajectory"] in ("turntable", "spiral")
  dynamic = clips["dynamicsweep"]
  assert min(_moves(dynamic[k]) for k in ("extrinsics", "head_pose", "expression")) > 1e-3


def test_stored_fields_re_render_the_stored_normals(clips):
  model = build_template()
  clip = clips["dynamicsweep"]
  normals, mask = world.render_normals(model, clip["shape"], clip["expression"], clip["head_pose"],
                                       clip["head_scale"], clip["intrinsics"], clip["extrinsics"], SPEC)
  # Stored parameters are float32, so a silhouette pixel may flip; nothing else may change.
  assert np.mean(mask == clip["mask"]) > 0.995
  same = (mask > 0) & (clip["mask"] > 0)
  assert np.abs(normals[same].astype(int) - clip["normals"][same]).mean() < 1.0


def test_box_intrinsics_map_the_box_onto_the_crop():
  rng = np.random.default_rng(0)
  intrinsics = np.array([[[60.0, 0, 31], [0, 58, 33], [0, 0, 1]]] * 3)
  boxes = np.array([[10.0, 12, 40, 42], [0, 0, 64, 64], [-5.5, 3, 20.5, 29]])
  points = rng.uniform([-0.2, -0.2, 0.8], [0.2, 0.2, 1.2], (3, 3))
  project = lambda k, p: (k @ p)[:2] / (k @ p)[2]
  zoomed = face_crop.box_intrinsics(intrinsics, boxes, 16)
  for k, z, box, point in zip(intrinsics, zoomed, boxes, points):
    expected = (project(k, point) - box[:2]) * 16 / (box[2] - box[0])
    np.testing.assert_allclose(project(z, point), expected, rtol=1e-12)


def test_face_boxes_follow_the_head_and_hold_the_most_open_face(clips):
  model = build_template()
  clip = clips["dynamicsweep"]
  fields = [clip[key] for key in ("head_pose", "head_scale", "intrinsics", "extrinsics")]
  boxes = face_crop.face_boxes(model, clip["shape"], *fields)
  # Every control at the top of its range at once: blend shapes, the jaw wide open, the eyes up-left.
  extreme = np.full((len(boxes), controls.num_controls(model)), model.expression_range[1])
  extreme[:, -3:] = 1.0
  points = controls.pose_vertices(model, clip["shape"], extreme, clip["head_pose"], clip["head_scale"],
                                  subset=face_crop.landmarks(model))
  camera = np.einsum("tij,tvj->tvi", clip["extrinsics"][:, :, :3], points) + clip["extrinsics"][:, None, :, 3]
  pixels = np.einsum("tij,tvj->tvi", clip["intrinsics"], camera)
  pixels = pixels[..., :2] / pixels[..., 2:]
  # The box never moves with the expression, yet holds the face at its most open.
  assert np.all(pixels >= boxes[:, None, :2]) and np.all(pixels <= boxes[:, None, 2:])
  # It moves with the head and the camera (this clip sweeps both).
  assert np.ptp(boxes[:, 0]) > 1.0


def test_stored_faces_have_the_detail_of_a_high_resolution_crop():
  model = build_template()
  low = world.generate_clip(7, 0, 0, "dynamicsweep", world.ClipSpec(32, 32, 9, face_size=16))
  high = world.generate_clip(7, 0, 0, "dynamicsweep", world.ClipSpec(128, 128, 9))
  assert low["face"].shape == (9, 16, 16, 3) and low["face"].dtype == np.uint8
  crop_of = lambda clip, images: face_crop.crop(images, face_crop.face_boxes(
      model, clip["shape"], clip["head_pose"], clip["head_scale"], clip["intrinsics"], clip["extrinsics"],
      1.8), 16)
  sharp = crop_of(high, high["frames"]).astype(float)
  on_face = crop_of(high, np.repeat(high["mask"][..., None], 3, axis=-1))[..., 0] == 255
  stored_error = np.abs(low["face"] - sharp)[on_face].mean()
  cut_error = np.abs(crop_of(low, low["frames"]) - sharp)[on_face].mean()
  # On the face (the background gradient spans the crop, not the frame) the stored crop is the
  # 4x larger render's crop; one cut from the 32x32 frames is blurred far beyond it.
  assert stored_error < 3.0 and cut_error > 2 * stored_error, (stored_error, cut_error)


@pytest.mark.parametrize("kwargs,message", [
    (dict(num_frames=6), "4k\\+1"),
    (dict(num_frames=0), "4k\\+1"),
    (dict(height=0), "positive integer"),
    (dict(width=-8), "positive integer"),
    (dict(fps=0.0), "fps"),
])
def test_bad_clip_specs_are_rejected(kwargs, message):
  with pytest.raises(InputError, match=message):
    world.ClipSpec(**kwargs)


def test_unknown_regime_is_rejected():
  with pytest.raises(InputError, match="unknown regime"):
    world.generate_clip(0, 0, 0, "selfie", SPEC)
