"""fp-sample end to end on saved runs with random weights: what it writes, what it refuses."""
import json
import os
import subprocess
import sys

import imageio.v3 as iio
import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

from data_pipeline.errors import InputError
from fp_jax.sample import pipeline, run
from tests.run_helpers import sample_config, saved_run, train_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _driving_mp4_with_audio(path, frames):
  silent = str(path) + ".silent.mp4"
  iio.imwrite(silent, frames, extension=".mp4", fps=10, macro_block_size=1)
  subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-i", silent, "-f", "lavfi", "-i",
                  "sine=frequency=440:duration=2", "-map", "0:v", "-map", "1:a", "-c:v", "copy",
                  "-c:a", "aac", "-t", f"{len(frames) / 10}", str(path)], check=True)


def test_a_long_video_from_files_with_audio_paste_back_and_settings(sample_runs, data_dir, tmp_path):
  # A 96x128 photo (cropped and resized to 32x32), a 14-frame driving video with sound: longer
  # than the trained window (5 frames), so it is sampled in blended windows.
  rng = np.random.default_rng(0)
  y, x = np.mgrid[:96, :128]
  photo = np.stack([x * 2, y * 2, np.full_like(x, 90)], axis=-1).astype(np.uint8)  # smooth: codecs keep it
  Image.fromarray(photo).save(tmp_path / "me.png")
  _driving_mp4_with_audio(tmp_path / "drive.mp4", rng.integers(0, 255, (14, 48, 48, 3), dtype=np.uint8))
  request = pipeline.Request(image=str(tmp_path / "me.png"), driving=str(tmp_path / "drive.mp4"),
                             mode="all-moving", camera="turntable", smooth=1.0)
  out = str(tmp_path / "out" / "result.mp4")
  os.makedirs(os.path.dirname(out))
  written = run.sample(sample_config(data_dir, sample_runs), request, out, workdir=str(sample_runs / "dit"),
                       progress=False)
  assert set(written) == {"video", "panel", "pasted", "settings"}
  video = iio.imread(written["video"], plugin="FFMPEG", index=None)
  assert video.shape == (14, 32, 32, 3)
  assert "audio_codec" in iio.immeta(written["video"], plugin="FFMPEG")
  assert iio.imread(written["panel"], plugin="FFMPEG", index=None).shape == (14, 32, 5 * 32, 3)
  pasted = iio.imread(written["pasted"], plugin="FFMPEG", index=None)
  assert pasted.shape == (14, 96, 128, 3)
  # Outside the crop box the pasted video is the photo itself (up to video compression).
  assert np.abs(pasted[:, :, :10].astype(np.float32) - photo[None, :, :10]).mean() < 6
  settings = json.loads(open(written["settings"]).read())
  assert settings["frames"] == 14 and settings["camera"] == "turntable" and settings["checkpoint"]["step"] == 1
  assert settings["guidance"]["branches"] == ["reference", "all"]  # the tiny config's motion guidance
  assert sorted(os.listdir(tmp_path / "out")) == sorted(os.path.basename(p) for p in written.values())


def test_held_signals_stay_at_the_source_and_driven_ones_follow_the_clip(sample_runs, data_dir):
  from fp_jax.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  from fp_jax.parallel.sharding import DEFAULT_RULES  # pylint: disable=g-import-not-at-top
  from fp_jax.sample import models as models_lib  # pylint: disable=g-import-not-at-top
  config = sample_config(data_dir, sample_runs)
  mesh = mesh_lib.make_mesh(config.mesh)
  models = models_lib.load(config, mesh, DEFAULT_RULES, str(sample_runs / "dit"))
  job = pipeline.Pipeline(config, models, mesh, DEFAULT_RULES)
  prepared = {mode: job.prepare(pipeline.Request(image="clip:test/0@2", driving="clip:test/1", mode=mode))
              for mode in ("expression-only", "pose-only", "camera-sweep")}
  varies = lambda x: np.ptp(x, axis=0).max() > 1e-6
  expression_only, pose_only = prepared["expression-only"].signals, prepared["pose-only"].signals
  assert varies(expression_only.codes) and not varies(expression_only.rotation)
  assert varies(pose_only.rotation) and not varies(pose_only.codes)
  sweep = prepared["camera-sweep"]
  assert not varies(sweep.signals.rotation) and not varies(sweep.signals.codes)
  assert varies(sweep.cameras.extrinsics)
  # A stored clip's portrait brings its true pose: the held pose is that frame's.
  from data_pipeline import records  # pylint: disable=g-import-not-at-top
  clip = records.ClipRecords(data_dir, "tiny", "test")[0]
  np.testing.assert_allclose(sweep.signals.head_pose[0], clip["head_pose"][2], atol=1e-5)
  # Normal maps are rendered from the target poses: a driven pose moves them.
  assert varies(prepared["pose-only"].normals.reshape(len(pose_only.rotation), -1).astype(np.float32))


def test_a_start_below_pure_noise_begins_at_the_warped_portrait(sample_runs, data_dir):
  # sample.start_level s0 starts the flow from (1 - s0) x the warped portrait's latents + s0 x
  # noise; at a tiny s0 the result must be the warp's own latents (encoded here apart from the
  # pipeline), or the portrait's where the warp is withheld (an ablation dropping the pose).
  from fp_jax.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  from fp_jax.parallel.sharding import DEFAULT_RULES  # pylint: disable=g-import-not-at-top
  from fp_jax.sample import models as models_lib  # pylint: disable=g-import-not-at-top
  from fp_jax.train.tasks import common  # pylint: disable=g-import-not-at-top
  config = sample_config(data_dir, sample_runs)
  mesh = mesh_lib.make_mesh(config.mesh)
  models = models_lib.load(config, mesh, DEFAULT_RULES, str(sample_runs / "dit"))
  encode = lambda frames: np.asarray(models.vae.normalize(models.vae.encode(common.unit_range(frames[None]))[0]))[0]
  # One trained window (4 frames after the reference's slot), so the whole warp encodes as one clip.
  request = pipeline.Request(image="clip:test/0@2", mode="camera-sweep", frames=4)
  for level, near in ((1e-4, True), (1.0, False)):
    config.sample.start_level = level
    # Pure noise is above the tiny DiT's trained levels; this checks the start, not the model there.
    config.diffusion.max_level = max(level, 0.5)
    job = pipeline.Pipeline(config, models, mesh, DEFAULT_RULES)
    conditions = job.prepare(request)
    warp, portrait = encode(conditions.warped)[1:], encode(conditions.portrait.image[None])[0]
    sampled = np.asarray(job.sample(conditions, progress=False))[0, 1:]
    without_pose = np.asarray(job.sample(conditions, progress=False, drop=("pose",)))[0, 1:]
    assert np.abs(warp - portrait[None]).max() > 0.1  # the two starts differ
    if near:
      np.testing.assert_allclose(sampled, warp, atol=2e-3)
      np.testing.assert_allclose(without_pose, np.broadcast_to(portrait, warp.shape), atol=2e-3)
    else:  # from pure noise, where the model leads
      assert np.abs(sampled - warp).max() > 0.1
  for level in (0.0, 1.5):
    config.sample.start_level = level
    with pytest.raises(InputError, match=r"sample.start_level must be in \(0, 1\]"):
      pipeline.Pipeline(config, models, mesh, DEFAULT_RULES)
  config.diffusion.max_level, config.sample.start_level = 0.5, 0.6
  with pytest.raises(InputError, match=r"sample.start_level \(0.6\) is above the noise levels the DiT trained on"):
    pipeline.Pipeline(config, models, mesh, DEFAULT_RULES)
  config.sample.start_level, config.sample.shift = 0.3, -1.0
  with pytest.raises(InputError, match="sample.shift must be a number above 0"):
    pipeline.Pipeline(config, models, mesh, DEFAULT_RULES)


def test_bad_input_is_one_line_and_writes_nothing(sample_runs, data_dir, tmp_path, monkeypatch):
  config = sample_config(data_dir, sample_runs)
  out = str(tmp_path / "out.mp4")
  Image.fromarray(np.zeros((80, 80, 3), np.uint8)).save(tmp_path / "ok.png")
  (tmp_path / "bad.json").write_text(json.dumps({"frames": [{"K": [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
                                                              "Rt": [[1, 0, 0, float("nan")], [0, 1, 0, 0], [0, 0, 1, 1]]}]}))
  cases = [
      (dict(image=str(tmp_path / "missing.png"), driving="clip:test/1"), "image not found"),
      (dict(image=str(tmp_path / "ok.png"), driving="clip:test/1", mode="moonwalk"), "unknown mode"),
      (dict(image=str(tmp_path / "ok.png"), driving="clip:test/1", mode="all-moving", camera="orbit"),
       "unknown camera preset"),
      (dict(image=str(tmp_path / "ok.png"), mode="camera-sweep", camera=str(tmp_path / "bad.json")), "NaN|not valid"),
      (dict(image=str(tmp_path / "ok.png"), mode="static-frontal"), "needs --driving"),
  ]
  with monkeypatch.context() as patch:  # inputs are checked before any weights are loaded
    patch.setattr(run.models_lib, "load", lambda *_, **__: pytest.fail("models loaded before the inputs were read"))
    for fields, message in cases:
      with pytest.raises(InputError, match=message):
        run.sample(config, pipeline.Request(**fields), out, workdir=str(sample_runs / "dit"), progress=False)
  other = sample_config(data_dir, sample_runs)
  other.model.layers = 3
  with pytest.raises(InputError, match="trained with another config"):
    run.sample(other, pipeline.Request(image=str(tmp_path / "ok.png"), driving="clip:test/1"), out,
               workdir=str(sample_runs / "dit"), progress=False)
  # A frozen motion run whose pose encoder pools otherwise than the config says.
  mean_pooled = train_config(data_dir, "motion")
  mean_pooled.motion.pose_pooling = "mean"
  saved_run(mean_pooled, tmp_path / "old_motion", 2)
  other = sample_config(data_dir, sample_runs)
  other.frozen.motion = str(tmp_path / "old_motion")
  with pytest.raises(InputError, match="frozen run .* holds another model.*pose_pooling"):
    run.sample(other, pipeline.Request(image=str(tmp_path / "ok.png"), driving="clip:test/1"), out,
               workdir=str(sample_runs / "dit"), progress=False)
  assert sorted(os.listdir(tmp_path)) == ["bad.json", "ok.png", "old_motion"]


def test_the_command_prints_one_line_and_exits_2(sample_runs, tmp_path):
  (tmp_path / "broken.png").write_bytes(b"not an image")
  result = subprocess.run(
      [sys.executable, "-c", "from fp_jax.sample.cli import run; run()", "--config=configs/tiny.py",
       f"--workdir={sample_runs / 'dit'}", f"--image={tmp_path / 'broken.png'}", "--driving=clip:test/1",
       f"--out={tmp_path / 'out.mp4'}"], capture_output=True, text=True, cwd=ROOT, timeout=600,
      env=dict(os.environ, PYTHONPATH=ROOT))
  assert result.returncode == 2, result.stderr
  errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
  assert errors == [f"error: {tmp_path / 'broken.png'} is not a readable image (UnidentifiedImageError)"] or \
      errors[0].startswith("error: ") and len(errors) == 1, result.stderr
  assert sorted(os.listdir(tmp_path)) == ["broken.png"]


def test_preview_camera_renders_the_path_and_samples_nothing(sample_runs, data_dir, tmp_path):
  request = pipeline.Request(image="clip:test/0@0", mode="camera-sweep", camera="spiral", frames=6)
  written = run.sample(sample_config(data_dir, sample_runs), request, str(tmp_path / "out.mp4"),
                       workdir=str(sample_runs / "dit"), preview=True, progress=False)
  assert list(written) == ["preview"] and sorted(os.listdir(tmp_path)) == ["out.preview.mp4"]
  video = iio.imread(written["preview"], plugin="FFMPEG", index=None)
  assert video.shape == (6, 32, 2 * 32, 3)
  assert np.abs(video[0].astype(np.int32) - video[-1]).mean() > 1  # the camera moved


def test_two_processes_sample_what_one_does(sample_runs, data_dir, tmp_path):
  request = pipeline.Request(image="clip:test/0@1", driving="clip:test/1", mode="all-moving", camera="dolly")
  alone = run.sample(sample_config(data_dir, sample_runs), request, str(tmp_path / "one.mp4"),
                     workdir=str(sample_runs / "dit"), progress=False)
  overrides = [f"--config.input.data_dir={data_dir}", "--config.input.dataset=tiny",
               "--config.input.window.num_frames=5", "--config.input.face_crop.size=16",
               "--config.input.workers.count=0", "--config.motion.widths=(8, 16)", "--config.motion.pose_widths=()",
               f"--config.frozen.vae={sample_runs / 'vae'}", f"--config.frozen.motion={sample_runs / 'motion'}",
               "--config.sample.height=32", "--config.sample.width=32", "--config.sample.steps=2"]
  command = [sys.executable, os.path.join(ROOT, "launch", "local_multiprocess.py"), "-n", "2",
             "--devices_per_process", "4", "--", sys.executable, "-c", "from fp_jax.sample.cli import run; run()",
             "--config=configs/tiny.py", *overrides, f"--workdir={sample_runs / 'dit'}", "--image=clip:test/0@1",
             "--driving=clip:test/1", "--mode=all-moving", "--camera=dolly", f"--out={tmp_path / 'two.mp4'}"]
  result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu"))
  assert result.returncode == 0, result.stderr[-3000:]
  one = iio.imread(alone["video"], plugin="FFMPEG", index=None).astype(np.int32)
  two = iio.imread(tmp_path / "two.mp4", plugin="FFMPEG", index=None).astype(np.int32)
  assert one.shape == two.shape and np.abs(one - two).mean() < 0.5


def test_several_modes_write_a_video_each_into_one_folder(sample_runs, data_dir, tmp_path):
  out = str(tmp_path / "videos")
  jobs = [(pipeline.Request(image="clip:test/0@0", driving="clip:test/1", mode=mode), path)
          for mode, path in run.outputs_for_modes(["static-frontal", "pose-only"], out)]
  # Every job's input is checked before any is sampled: a bad second job writes nothing at all.
  bad = jobs[:1] + [(pipeline.Request(image="clip:test/0@0", mode="pose-only"), str(tmp_path / "videos" / "x.mp4"))]
  with pytest.raises(InputError, match="needs --driving"):
    run.sample_all(sample_config(data_dir, sample_runs), bad, workdir=str(sample_runs / "dit"), progress=False)
  assert sorted(os.listdir(tmp_path)) == []
  written = run.sample_all(sample_config(data_dir, sample_runs), jobs, workdir=str(sample_runs / "dit"), progress=False)
  assert [w["video"] for w in written] == [os.path.join(out, "static-frontal.mp4"), os.path.join(out, "pose-only.mp4")]
  first, second = (iio.imread(w["video"], plugin="FFMPEG", index=None) for w in written)
  assert first.shape == second.shape == (5, 32, 32, 3)
  for bad_modes, bad_out, message in ((["pose-only", "pose-only"], out, "twice"),
                                      (["pose-only", "static-frontal"], out + ".mp4", "folder"),
                                      (["pose-only", ""], out, "empty")):
    with pytest.raises(InputError, match=message):
      run.outputs_for_modes(bad_modes, bad_out)
