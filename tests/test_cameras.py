import json

import numpy as np
import pytest

from data_pipeline import cameras
from data_pipeline.errors import InputError


def _project(cams, t, point):
  cam = cams.rotations[t] @ point + cams.extrinsics[t, :, 3]
  pixel = cams.intrinsics[t] @ cam
  return pixel[:2] / pixel[2], cam[2]


def test_look_at_is_a_rotation_that_centres_the_target():
  eye, target = np.array([0.3, 0.4, 1.2]), np.array([0.0, 0.1, 0.0])
  extrinsics = cameras.look_at(eye, target)
  rotation = extrinsics[:, :3]
  np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
  assert np.linalg.det(rotation) == pytest.approx(1.0)
  cam = rotation @ target + extrinsics[:, 3]
  assert cam[0] == pytest.approx(0.0, abs=1e-12) and cam[1] == pytest.approx(0.0, abs=1e-12)
  assert cam[2] == pytest.approx(np.linalg.norm(target - eye))
  # OpenCV: image y points down, so a point above the target has negative y.
  above = rotation @ (target + [0, 0.1, 0]) + extrinsics[:, 3]
  assert above[1] < 0


@pytest.mark.parametrize("make", [
    lambda: cameras.static_frontal(5, 16, 24),
    lambda: cameras.static_view(5, 16, 24, 40.0, 10.0),
    lambda: cameras.turntable(5, 16, 24),
    lambda: cameras.spiral(5, 16, 24),
    lambda: cameras.dolly(5, 16, 24, zoom=True),
    lambda: cameras.random_smooth(5, 16, 24, np.random.default_rng(0)),
])
def test_trajectories_keep_the_target_in_the_middle(make):
  cams = make()
  assert cams.intrinsics.shape == (5, 3, 3) and cams.extrinsics.shape == (5, 3, 4)
  cams.validate(16, 24)
  for t in range(5):
    uv, depth = _project(cams, t, np.array(cameras.DEFAULT_TARGET))
    np.testing.assert_allclose(uv, [12.0, 8.0], atol=1e-6)
    assert depth > 0


def test_turntable_sweeps_yaw_and_dolly_zoom_keeps_the_subject_size():
  cams = cameras.turntable(9, 16, 16, yaw_start=-60, yaw_end=60)
  offset = cams.centres - np.array(cameras.DEFAULT_TARGET)
  yaw = np.degrees(np.arctan2(offset[:, 0], offset[:, 2]))
  np.testing.assert_allclose(yaw, np.linspace(-60, 60, 9), atol=1e-9)
  zoom = cameras.dolly(5, 16, 16, 1.3, 0.8, zoom=True)
  distance = np.linalg.norm(zoom.centres - np.array(cameras.DEFAULT_TARGET), axis=1)
  np.testing.assert_allclose(zoom.intrinsics[:, 0, 0] / distance, zoom.intrinsics[0, 0, 0] / distance[0])


def test_json_round_trip_and_rescaling(tmp_path):
  cams = cameras.spiral(5, 32, 48)
  path = str(tmp_path / "cams.json")
  cameras.save_json(cams, path, 32, 48)
  same = cameras.load_json(path, 32, 48)
  np.testing.assert_allclose(same.intrinsics, cams.intrinsics)
  np.testing.assert_allclose(same.extrinsics, cams.extrinsics)
  half = cameras.load_json(path, 16, 24)
  np.testing.assert_allclose(half.intrinsics[:, :2], cams.intrinsics[:, :2] / 2)
  assert cameras.from_preset(path, 5, 32, 48).extrinsics.shape == (5, 3, 4)


def _bad_camera_file(tmp_path, mutate):
  cams = cameras.static_frontal(2, 8, 8)
  payload = {"frames": [{"K": k.tolist(), "Rt": rt.tolist()} for k, rt in zip(cams.intrinsics, cams.extrinsics)]}
  mutate(payload["frames"][1])
  path = tmp_path / "bad.json"
  path.write_text(json.dumps(payload).replace("NaN", "NaN"))
  return str(path)


@pytest.mark.parametrize("mutate,message", [
    (lambda f: f["K"][0].__setitem__(0, float("nan")), "NaN or infinite"),
    (lambda f: f["Rt"][0].__setitem__(3, float("inf")), "NaN or infinite"),
    (lambda f: f["K"][1].__setitem__(1, 0.0), "focal length must be positive"),
    (lambda f: f["Rt"][0].__setitem__(0, 2.0), "not orthonormal"),
    (lambda f: f["Rt"].__setitem__(0, [-v for v in f["Rt"][0]]), "reflection"),
])
def test_bad_cameras_are_rejected(tmp_path, mutate, message):
  with pytest.raises(InputError, match=message):
    cameras.load_json(_bad_camera_file(tmp_path, mutate), 8, 8)


def test_bad_presets_and_files_are_rejected(tmp_path):
  with pytest.raises(InputError, match="unknown camera preset"):
    cameras.from_preset("orbit", 5, 8, 8)
  with pytest.raises(InputError, match="novel"):
    cameras.from_preset("novel:abc", 5, 8, 8)
  with pytest.raises(InputError, match="not found"):
    cameras.from_preset(str(tmp_path / "missing.json"), 5, 8, 8)
  with pytest.raises(InputError, match="positive integer"):
    cameras.static_frontal(1, 0, 8)
