"""The host-side parts of sampling: windows, motion retargeting, inputs, modes."""
import json

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from data_pipeline import cameras
from data_pipeline.errors import InputError
from data_pipeline.lbs import axis_angle_to_matrix
from fp_jax.sample import inputs, modes, motion_control, windows


# -- windows -----------------------------------------------------------------------------------

@pytest.mark.parametrize("total,length,overlap", [(10, 4, 2), (9, 4, 1), (7, 3, 0), (5, 2, 5), (3, 4, 1)])
def test_windows_cover_every_frame_with_weights_summing_to_one(total, length, overlap):
  plan = windows.plan(total, length, overlap)
  coverage = np.zeros(total)
  for start, weights in zip(plan.starts, plan.weights):
    assert 0 <= start and start + plan.length <= total
    coverage[start:start + plan.length] += weights
    assert np.all(weights > 0)
  np.testing.assert_allclose(coverage, 1.0, rtol=1e-6)
  assert plan.starts[0] == 0 and plan.starts[-1] == total - plan.length
  assert all(len(plan.video_frames(s)) == 1 + 4 * plan.length for s in plan.starts)


def test_merging_the_windows_of_a_video_gives_it_back():
  plan = windows.plan(10, 4, 2)
  x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 10, 3, 3, 4)), jnp.float32)
  parts = windows.split(x, plan)
  assert parts.shape == (plan.count * 2, 4, 3, 3, 4)
  np.testing.assert_allclose(windows.merge(parts, plan, 2), x, rtol=1e-6)


def test_overlapping_windows_fade_into_each_other():
  plan = windows.plan(10, 4, 2)
  # Window 0 says 0 everywhere, window 1 says 1: on their shared frames the blend rises.
  values = jnp.stack([jnp.full((4,), float(i)) for i in range(plan.count)])[:, :, None]
  merged = np.asarray(windows.merge(values, plan, 1))[0, :, 0]
  assert merged[0] == merged[1] == 0.0 and np.all(np.diff(merged) >= 0) and merged[-1] == plan.count - 1


# -- motion -----------------------------------------------------------------------------------

def _signals(count, seed):
  rng = np.random.default_rng(seed)
  rotation = axis_angle_to_matrix(rng.normal(0, 0.2, (count, 3)))
  return motion_control.Signals(rotation, rng.normal(0, 0.05, (count, 3)), rng.uniform(0.9, 1.1, count),
                                rng.normal(size=(count, 8)), rng.uniform(0, 1, (count, 5)))


def test_relative_motion_moves_the_source_by_the_driving_change():
  driving, source = _signals(6, 0), _signals(1, 1)
  out = motion_control.combine(driving, source, "relative", 1.0)
  # Frame 0 is the source itself; later frames differ from it as the driving frames differ.
  np.testing.assert_allclose(out.rotation[0], source.rotation[0], atol=1e-9)
  np.testing.assert_allclose(out.codes - out.codes[:1], driving.codes - driving.codes[:1], atol=1e-9)
  relative_out = out.rotation @ np.swapaxes(out.rotation[:1], -1, -2)
  relative_driving = driving.rotation @ np.swapaxes(driving.rotation[:1], -1, -2)
  np.testing.assert_allclose(relative_out, relative_driving, atol=1e-9)
  np.testing.assert_allclose(out.scale / out.scale[0], driving.scale / driving.scale[0], rtol=1e-9)
  held = motion_control.combine(driving, source, "relative", 0.0)
  np.testing.assert_allclose(held.rotation, np.repeat(source.rotation, 6, axis=0), atol=1e-9)
  np.testing.assert_allclose(held.codes, np.repeat(source.codes, 6, axis=0), atol=1e-9)


def test_absolute_motion_at_full_strength_is_the_driving_motion():
  driving, source = _signals(4, 2), _signals(1, 3)
  out = motion_control.combine(driving, source, "absolute", 1.0)
  for name in ("rotation", "translation", "scale", "codes"):
    np.testing.assert_allclose(getattr(out, name), getattr(driving, name), atol=1e-9)
  half = motion_control.combine(driving, source, "absolute", 0.5)
  np.testing.assert_allclose(half.translation, (driving.translation + source.translation) / 2, atol=1e-9)


def test_smoothing_removes_jitter_and_keeps_rotations_orthonormal():
  clean = _signals(1, 4).repeat(40)
  noisy = motion_control.Signals(clean.rotation @ axis_angle_to_matrix(np.random.default_rng(5).normal(0, 0.05, (40, 3))),
                                 clean.translation + np.random.default_rng(6).normal(0, 0.01, (40, 3)),
                                 clean.scale, clean.codes, clean.coefficients)
  smoothed = motion_control.smooth(noisy, 3.0)
  error = lambda s: np.abs(s.rotation - clean.rotation).mean()
  assert error(smoothed) < error(noisy) / 2
  np.testing.assert_allclose(smoothed.rotation @ np.swapaxes(smoothed.rotation, -1, -2), np.eye(3)[None].repeat(40, 0),
                             atol=1e-9)


def test_modes_select_which_signal_is_driven():
  driven, held = _signals(3, 7), _signals(1, 8).repeat(3)
  expression_only = motion_control.select(driven, held, *[modes.get("expression-only").drive_pose,
                                                          modes.get("expression-only").drive_expression])
  np.testing.assert_array_equal(expression_only.rotation, held.rotation)
  np.testing.assert_array_equal(expression_only.codes, driven.codes)
  pose_only = modes.get("pose-only")
  selected = motion_control.select(driven, held, pose_only.drive_pose, pose_only.drive_expression)
  np.testing.assert_array_equal(selected.rotation, driven.rotation)
  np.testing.assert_array_equal(selected.codes, held.codes)
  with pytest.raises(InputError, match="unknown mode"):
    modes.get("dance")


def test_still_camera_modes_refuse_a_moving_camera():
  moving = cameras.from_preset("turntable", 5, 32, 32)
  with pytest.raises(InputError, match="keeps the camera still"):
    modes.check_camera("static-novel", modes.get("static-novel"), "turntable", moving)
  with pytest.raises(InputError, match="frontal camera"):
    modes.check_camera("static-frontal", modes.get("static-frontal"), "novel:20,0",
                       cameras.from_preset("novel:20,0", 5, 32, 32))
  modes.check_camera("all-moving", modes.get("all-moving"), "turntable", moving)


# -- inputs ------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode,extension", [("RGBA", "png"), ("L", "jpg"), ("P", "png"), ("RGB", "webp"),
                                            ("LA", "png")])
def test_images_of_every_common_kind_become_rgb_at_the_model_size(tmp_path, mode, extension):
  rng = np.random.default_rng(0)
  image = Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)).convert(mode)
  path = str(tmp_path / f"portrait.{extension}")
  image.save(path)
  portrait = inputs.load_portrait(path, 32, 48, None)
  assert portrait.image.shape == (32, 48, 3) and portrait.image.dtype == np.uint8
  assert portrait.original.shape == (90, 120, 3)
  x0, y0, x1, y1 = portrait.box
  assert (x1 - x0) / (y1 - y0) == pytest.approx(48 / 32) and y1 - y0 == pytest.approx(80.0)


def test_transparent_pixels_become_grey(tmp_path):
  rgba = np.zeros((64, 64, 4), np.uint8)
  rgba[..., 0] = 255  # red, fully transparent
  Image.fromarray(rgba).save(tmp_path / "clear.png")
  assert np.all(inputs.read_image(str(tmp_path / "clear.png")) == 128)


def test_bad_images_are_one_line_errors(tmp_path):
  (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
  Image.fromarray(np.zeros((40, 200, 3), np.uint8)).save(tmp_path / "small.png")
  for path, message in ((tmp_path / "missing.png", "not found"), (tmp_path / "broken.png", "not a readable image"),
                        (tmp_path / "small.png", "at least 64 px")):
    with pytest.raises(InputError, match=message):
      inputs.read_image(str(path))
  Image.fromarray(np.zeros((80, 80, 3), np.uint8)).save(tmp_path / "ok.png")
  with pytest.raises(InputError, match="reaches outside"):
    inputs.load_portrait(str(tmp_path / "ok.png"), 32, 32, None, crop="0,0,100,80")


def test_driving_frames_from_a_folder_and_empty_inputs(tmp_path):
  folder = tmp_path / "frames"
  folder.mkdir()
  for index in range(3):
    Image.fromarray(np.full((20, 30, 3), index * 50, np.uint8)).save(folder / f"{index:03d}.png")
  driving = inputs.load_driving(str(folder), None)
  assert driving.frames.shape == (3, 20, 30, 3) and driving.frames[2, 0, 0, 0] == 100
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(InputError, match="no image frames"):
    inputs.load_driving(str(empty), None)
  (tmp_path / "empty.mp4").write_bytes(b"")
  with pytest.raises(InputError, match="not a readable video|no frames"):
    inputs.load_driving(str(tmp_path / "empty.mp4"), None)


def _tracking(count):
  pose = np.concatenate([np.eye(3)[None].repeat(count, 0), np.zeros((count, 3, 1))], axis=2)
  return {"head_pose": pose.tolist(), "head_scale": [1.0] * count}


def test_tracking_files_are_checked_against_the_video(tmp_path):
  path = tmp_path / "tracking.json"
  path.write_text(json.dumps(_tracking(4)))
  assert inputs.load_tracking(str(path), 4)["head_pose"].shape == (4, 3, 4)
  with pytest.raises(InputError, match="has 4 frames, the driving video 5"):
    inputs.load_tracking(str(path), 5)
  bad = _tracking(4)
  bad["head_scale"][2] = float("nan")
  path.write_text(json.dumps(bad))
  with pytest.raises(InputError, match="NaN"):
    inputs.load_tracking(str(path), 4)
  np.savez(tmp_path / "tracking.npz", head_pose=np.zeros((4, 3, 3)), head_scale=np.ones(4))
  with pytest.raises(InputError, match=r"head_pose must be \[T, 3, 4\]"):
    inputs.load_tracking(str(tmp_path / "tracking.npz"), 4)


def test_a_camera_file_with_nan_is_an_error(tmp_path):
  frontal = cameras.from_preset("frontal", 3, 32, 32)
  cameras.save_json(frontal, str(tmp_path / "cameras.json"), 32, 32)
  payload = json.loads((tmp_path / "cameras.json").read_text())
  payload["frames"][1]["Rt"][0][3] = float("nan")
  (tmp_path / "cameras.json").write_text(json.dumps(payload))
  with pytest.raises(InputError):
    cameras.from_preset(str(tmp_path / "cameras.json"), 3, 32, 32)
