"""fp-eval: metrics against analytic answers, and a whole evaluation on saved random runs."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from flax import nnx

from data_pipeline import records
from data_pipeline.errors import InputError
from data_pipeline.lbs import axis_angle_to_matrix
from data_pipeline import head_pose
from fp_jax.eval import evaluate, lpips, metrics, report
from fp_jax.sample import inputs, pipeline
from tests.run_helpers import sample_config, saved_run, train_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _ssim_by_definition(a, b):
  """Wang et al. (2004) written out: an 11-tap Gaussian window of sigma 1.5 over the valid region,
  K1 0.01, K2 0.03, range 1, each channel's map averaged, then the frames'."""
  taps = np.exp(-np.square(np.arange(11) - 5.0) / (2 * 1.5 ** 2))
  taps /= taps.sum()
  window = lambda image: np.apply_along_axis(lambda row: np.convolve(row, taps, "valid"), 1,
                                             np.apply_along_axis(lambda col: np.convolve(col, taps, "valid"), 0, image))
  c1, c2 = 0.01 ** 2, 0.03 ** 2
  frames = []
  for x_frame, y_frame in zip(a, b):
    maps = []
    for x, y in zip(np.moveaxis(x_frame, -1, 0), np.moveaxis(y_frame, -1, 0)):
      mx, my = window(x), window(y)
      sxx, syy, sxy = window(x * x) - mx ** 2, window(y * y) - my ** 2, window(x * y) - mx * my
      maps.append(((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (sxx + syy + c2)))
    frames.append(np.mean(maps))
  return float(np.mean(frames))


def test_psnr_and_ssim_against_their_definitions():
  rng = np.random.default_rng(0)
  a = rng.integers(0, 256, (3, 24, 24, 3)).astype(np.uint8)
  noise = rng.integers(-20, 21, a.shape) * np.array([0.2, 1.0, 3.0])[:, None, None, None]  # each frame its own
  b = np.clip(a + noise, 0, 255).astype(np.uint8)
  mse = np.mean(((a.astype(np.float64) - b) / 255.0) ** 2, axis=(1, 2, 3))
  psnr, ssim = metrics.image_scores(a, b)
  per_frame, pooled = np.mean(10 * np.log10(1.0 / mse)), 10 * np.log10(1.0 / np.mean(mse))
  assert psnr == pytest.approx(per_frame, rel=1e-5) and abs(per_frame - pooled) > 1.0  # the mean of frames' PSNR
  assert ssim == pytest.approx(_ssim_by_definition(a / 255.0, b / 255.0), rel=1e-5)
  assert metrics.image_scores(a, a) == (metrics.MAX_PSNR_DB, pytest.approx(1.0, abs=1e-6))


def test_pose_error_is_the_rotation_angle():
  angles = np.radians([5.0, 30.0, 90.0])
  base = axis_angle_to_matrix(np.random.default_rng(1).normal(0, 0.3, (3, 3)))
  turned = axis_angle_to_matrix(np.stack([np.zeros(3), angles, np.zeros(3)], axis=-1)) @ base
  vectors = lambda r: head_pose.pose_vector(np.concatenate([r, np.zeros((3, 3, 1))], axis=-1), np.ones(3))
  assert metrics.pose_error_deg(vectors(turned), vectors(base)) == pytest.approx(np.mean([5, 30, 90]), rel=1e-6)


def test_code_distance_over_the_spread_is_one_for_a_random_other_frame():
  codes = np.random.default_rng(2).normal(size=(20, 8))
  assert metrics.code_distance(codes, codes) == 0.0
  assert metrics.code_distance([[0.0, 0.0], [1.0, 1.0]], [[3.0, 4.0], [1.0, 1.0]]) == pytest.approx(2.5)
  # Shifting the frames by 1 to N-1 pairs each frame with every other exactly once.
  others = np.mean([metrics.code_distance(np.roll(codes, k, axis=0), codes) for k in range(1, 20)])
  assert others / metrics.code_spread(codes) == pytest.approx(1.0, rel=1e-12)
  assert metrics.code_spread(np.eye(4)) == pytest.approx(np.sqrt(2))  # a regular simplex


def test_coefficient_error_is_the_root_mean_square_difference():
  assert metrics.coefficient_error([[0.0, 0.0], [1.0, 1.0]], [[3.0, 4.0], [1.0, 1.0]]) == pytest.approx(np.sqrt(25 / 4))


def test_normal_agreement_is_the_angle_between_normals_and_the_heads_overlap():
  from data_pipeline import renderer  # pylint: disable=g-import-not-at-top
  normals = np.zeros((2, 8, 8, 3))
  normals[..., 2] = -1.0  # facing the camera (OpenCV: +z looks away from it)
  tilt = np.radians(20.0)
  tilted = np.zeros_like(normals)
  tilted[..., 0], tilted[..., 2] = np.sin(tilt), -np.cos(tilt)
  mask = np.zeros((2, 8, 8), np.uint8)
  mask[:, 2:6, 2:6] = 1  # 16 pixels a frame
  shifted = np.roll(mask, 2, axis=2)  # 8 of them shared, 24 covered by either
  encode = lambda n, m: renderer.encode_normals(n, m > 0)
  assert metrics.normal_agreement(encode(normals, mask), mask, encode(normals, mask), mask) == (0.0, 1.0)
  angle, iou = metrics.normal_agreement(encode(tilted, shifted), shifted, encode(normals, mask), mask)
  assert angle == pytest.approx(20.0, abs=0.5) and iou == pytest.approx(8 / 24)


def test_the_head_the_pose_encoder_reads_is_rendered_through_the_frames_camera(data_dir):
  from data_pipeline.template_head import build_template  # pylint: disable=g-import-not-at-top
  from fp_jax.sample import inputs  # pylint: disable=g-import-not-at-top
  clip = records.ClipRecords(data_dir, "tiny", "test")[0]
  tracking = inputs._clip_tracking(clip, slice(None))  # pylint: disable=protected-access
  heads = evaluate.HeadRenders(build_template(), tracking, *np.asarray(clip["frames"]).shape[1:3])
  frames = slice(1, None)
  tracked = heads.tracked(frames)
  # A perfect reading (the tracked pose as each frame's camera sees it) renders the stored maps.
  truth = head_pose.to_camera_frame(head_pose.pose_vector(tracking["head_pose"], tracking["head_scale"]),
                                    tracking["extrinsics"])[frames]
  read = heads.read(truth, frames)
  error, iou = metrics.normal_agreement(*read, *tracked)
  # (float32 pose vectors: a rare normal lands in the next uint8 step, 0.45 degrees away)
  assert error < 0.05 and iou == pytest.approx(1.0, abs=1e-3)
  stored = np.asarray(clip["normals"])[frames], np.asarray(clip["mask"])[frames]
  error, iou = metrics.normal_agreement(*read, *stored)
  assert error < 2.0 and iou > 0.98
  # Readings turned off the truth about the camera's vertical axis disagree more the more they
  # turn (less than the turn itself: each pixel then sees another point of the curved surface).
  rotation = head_pose.rotation_from_6d(truth[:, :6])

  def turned_by(degrees):
    turn = axis_angle_to_matrix(np.array([0.0, np.radians(degrees), 0.0]))
    turned = np.concatenate([head_pose.rotation_to_6d(turn @ rotation), truth[:, 6:]], axis=-1)
    return metrics.normal_agreement(*heads.read(turned, frames), *tracked)

  (error5, iou5), (error10, iou10) = turned_by(5.0), turned_by(10.0)
  assert 1.0 < error5 < error10 < 10.0 and iou10 < iou5 < 1.0


def test_an_evaluation_scores_the_model_and_its_baselines(sample_runs, data_dir, tmp_path):
  from fp_jax.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  from fp_jax.parallel.sharding import DEFAULT_RULES  # pylint: disable=g-import-not-at-top
  from fp_jax.sample import models as models_lib  # pylint: disable=g-import-not-at-top
  config = sample_config(data_dir, sample_runs)
  # An identity run (random weights) names the embedding identity similarity is scored with.
  with config.unlocked():
    config.identity.update(widths=(8, 16), embedding_dim=8)
  saved_run(train_config(data_dir, "identity", **{"identity.widths": (8, 16), "identity.embedding_dim": 8}),
            tmp_path / "identity", 4)
  mesh = mesh_lib.make_mesh(config.mesh)
  config.frozen.identity = str(sample_runs / "motion")
  with pytest.raises(InputError, match="is a 'motion' run, not a 'identity' run"):
    models_lib.load(config, mesh, DEFAULT_RULES, str(sample_runs / "dit"))
  config.frozen.identity = str(tmp_path / "identity")
  config.input.face_crop.size = 24  # the encoders learned on 16-pixel crops
  with pytest.raises(InputError, match="learned on face crops of size 16, this config cuts them at 24"):
    models_lib.load(config, mesh, DEFAULT_RULES, str(sample_runs / "dit"))
  config.input.face_crop.size = 16
  models = models_lib.load(config, mesh, DEFAULT_RULES, str(sample_runs / "dit"))
  # LPIPS weights of the right shapes (their values do not matter here: tests/test_lpips.py).
  rng = np.random.default_rng(3)
  draw = lambda name, shape: (rng.uniform(0, 1, shape) if name.startswith("lin")  # heads weigh, never subtract
                              else np.zeros(shape) if name.endswith("bias") else rng.normal(0, 0.05, shape))
  lpips_params = {name: draw(name, shape).astype(np.float32) for name, shape in lpips.shapes().items()}
  summary, rows = evaluate.evaluate(config, models, mesh, DEFAULT_RULES, "test", 1, 0, ablations=("pose",),
                                    lpips_params=lpips_params)
  assert len(rows) == 1
  for key in ("psnr", "ssim", "pose_error_deg", "expression_error", "view_normal_error_deg", "view_mask_iou"):
    for prefix in ("", "baseline_", "without_pose_"):
      assert np.isfinite(summary[prefix + key])
  # The baseline is the first frame repeated: its PSNR, by the definition, from the stored clip.
  frames = np.asarray(records.ClipRecords(data_dir, "tiny", "test")[0]["frames"], np.float64) / 255.0
  mse = np.mean((frames[1:] - frames[:1]) ** 2, axis=(1, 2, 3))
  assert summary["baseline_psnr"] == pytest.approx(np.mean(10 * np.log10(1.0 / mse)), rel=1e-4)
  stored = np.asarray(records.ClipRecords(data_dir, "tiny", "test")[0]["frames"])
  repeated = np.repeat(stored[:1], len(stored), axis=0)
  assert summary["baseline_lpips"] == pytest.approx(lpips.video_lpips(lpips_params, repeated[1:], stored[1:]), rel=1e-5)
  assert summary["lpips"] > 0
  # Identity similarity: the portrait's face against each frame's, both embedded by the identity
  # encoder called here directly (the frames' faces cut where each frame's head is).
  tracking = inputs._clip_tracking(records.ClipRecords(data_dir, "tiny", "test")[0], slice(None))  # pylint: disable=protected-access
  faces = inputs.face_crops(repeated, tracking, config.input.face_crop.size, config.input.face_crop.margin)
  embedded = np.asarray(nnx.jit(lambda encoder, x: encoder(x))(models.identity, faces))
  unit = embedded / np.linalg.norm(embedded, axis=1, keepdims=True)
  assert summary["baseline_identity_similarity"] == pytest.approx(np.mean(unit[1:] @ unit[0]), rel=1e-4)
  assert -1 <= summary["identity_similarity"] <= 1 and "identity_impostor_similarity" not in summary  # one person
  # Expression coefficients: the motion run's read-out (read from its checkpoint here) of the codes
  # of the repeated portrait's faces and of the real ones.
  from fp_jax.train import checkpoints  # pylint: disable=g-import-not-at-top
  readout = checkpoints.read_frozen(config.frozen.motion, config)[0]["readout"]
  encode = nnx.jit(lambda encoder, x: encoder(x))
  # The expression encoder reads the face with its parts' close-ups (motion.expression_parts).
  crops = lambda video: inputs.face_crops(video, tracking, config.input.face_crop.size, config.input.face_crop.margin,
                                          config.input.face_crop.parts)
  assert crops(stored).shape == (len(stored), 1 + len(config.motion.expression_parts)) + faces.shape[1:]
  read = lambda faces: np.asarray(encode(models.expression, faces))[1:] @ readout["kernel"] + readout["bias"]
  want = np.sqrt(np.mean((read(crops(repeated)) - read(crops(stored))) ** 2))
  assert summary["baseline_expression_coefficient_error"] == pytest.approx(want, rel=1e-4)
  # The ceiling is the clip through the VAE and back, scored the same way.
  from fp_jax.train.tasks import common  # pylint: disable=g-import-not-at-top
  clip = common.unit_range(np.asarray(records.ClipRecords(data_dir, "tiny", "test")[0]["frames"])[None])
  round_trip = nnx.jit(lambda vae, x: vae.decode(vae.encode(x)[0]))
  recon = np.asarray(common.to_uint8(round_trip(models.vae, clip)))[0] / 255.0
  mse = np.mean((frames[1:] - recon[1:]) ** 2, axis=(1, 2, 3))
  assert summary["vae_ceiling_psnr"] == pytest.approx(np.mean(10 * np.log10(1.0 / mse)), rel=1e-3)
  # The warp baseline: the warped portrait the model reads, through the VAE, on the same frames
  # (frame 0 of the conditions is the portrait's slot; frame k + 1 follows driving frame k).
  job = pipeline.Pipeline(config, models, mesh, DEFAULT_RULES)
  warped = job.prepare(pipeline.Request(image="clip:test/0@0", driving="clip:test/0", mode="all-moving",
                                        camera="driving", motion="absolute")).warped
  recon = np.asarray(common.to_uint8(round_trip(models.vae, common.unit_range(warped[None]))))[0, 2:1 + len(frames)] / 255.0
  mse = np.mean((frames[1:] - recon) ** 2, axis=(1, 2, 3))
  assert summary["warp_psnr"] == pytest.approx(np.mean(10 * np.log10(1.0 / mse)), rel=1e-3)
  json_path, markdown_path = report.write(str(tmp_path / "report.json"), summary, rows, "fp-eval ...", 0)
  saved = json.loads(open(json_path).read())
  assert {"psnr", "baseline_psnr", "pose_error_deg", "baseline_pose_error_deg"} <= set(saved)
  assert "| portrait repeated (baseline) |" in open(markdown_path).read()
  assert "1 clip of 1 person; reproduce with `fp-eval ...` (seed 0)." in open(markdown_path).read()
  assert "| real clip through the VAE (ceiling) |" in open(markdown_path).read()
  # Every number of the markdown table is the JSON's, rounded as printed.
  table = [line for line in open(markdown_path).read().splitlines() if line.startswith("| ") and "---" not in line]
  header = [cell.strip() for cell in table[0].strip("|").split("|")]
  labels = {f"{label} ({better})": key for key, label, better in report.METRICS}
  prefixes = {"model": "", "portrait repeated (baseline)": "baseline_", "real clip through the VAE (ceiling)": "vae_ceiling_",
              "portrait warped by the tracked mesh, through the VAE": "warp_"}
  checked = 0
  for line in table[1:]:
    cells = [cell.strip() for cell in line.strip("|").split("|")]
    prefix = prefixes.get(cells[0], "without_" + cells[0][len("without "):] + "_")
    for column, cell in zip(header[1:], cells[1:]):
      assert cell == f"{saved[prefix + labels[column]]:.3f}", (cells[0], column)
      checked += 1
  assert checked >= 4 * len(header[1:])
  assert "| portrait warped by the tracked mesh, through the VAE |" in open(markdown_path).read()
  assert ("view: normal error (deg) (lower) | view: head IoU (higher) | LPIPS (lower) | identity similarity (higher) |"
          in open(markdown_path).read())


def test_evaluation_takes_one_clip_of_each_identity_in_turn():
  class Split:  # 3 identities of 2 clips, then one of 1, in (identity, clip) order as stored
    identities = (7, 7, 8, 8, 9, 9, 10)

    def __len__(self):
      return len(self.identities)

    def identity_of(self, index):
      return self.identities[index]

  assert evaluate.clip_order(Split()) == [0, 2, 4, 6, 1, 3, 5]


def test_reports_are_written_both_or_neither_and_bad_outs_are_refused_before_any_work(tmp_path):
  old = {name: f"old {name}" for name in ("report.json", "report.md")}
  for name, text in old.items():
    (tmp_path / name).write_text(text)
  with pytest.raises(ValueError):  # not finite: no JSON reader would take it
    report.write(str(tmp_path / "report.json"), {"psnr": float("inf")}, [], "fp-eval ...", 0)
  assert {path.name: path.read_text() for path in tmp_path.iterdir()} == old  # both old, nothing partial
  (tmp_path / "as_folder.md").mkdir()
  result = subprocess.run([sys.executable, "-c", "from fp_jax.eval.cli import run; run()",
                           "--config=configs/tiny.py:dit", "--workdir=unused", f"--out={tmp_path / 'as_folder.json'}"],
                          cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True)
  assert result.returncode == 2 and "Traceback" not in result.stderr
  assert result.stderr.strip() == f"error: --out: {tmp_path / 'as_folder.md'} is a folder"
