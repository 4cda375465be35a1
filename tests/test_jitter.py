"""Training crops' jitter (fp_jax/train/jitter.py), checked against the transforms written out here."""
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx

from configs import tiny
from data_pipeline.errors import InputError
from fp_jax.train import jitter
from fp_jax.train.tasks import motion_task
from tests.test_motion import random_motion_batch


def unit_crops(shape, seed=0, low=-0.5, high=0.5):
  return np.random.default_rng(seed).uniform(low, high, shape).astype(np.float32)


def edge_shifted(image, dy, dx, shift):
  """`image` moved down by `dy` and right by `dx` pixels, edges repeated (numpy's own padding)."""
  padded = np.pad(image, ((shift, shift), (shift, shift), (0, 0)), mode="edge")
  height, width = image.shape[:2]
  return padded[shift - dy:shift - dy + height, shift - dx:shift - dx + width]


def test_a_shifted_crop_is_its_crop_moved_by_whole_pixels_within_the_bound():
  shift = 2
  crops = unit_crops((6, 3, 10, 12, 3))
  jittered = np.asarray(jitter.jitter_crops(crops, jax.random.key(0), {"shift": shift}))
  moves = set()
  for crop, seen in zip(crops.reshape(-1, 10, 12, 3), jittered.reshape(-1, 10, 12, 3)):
    matches = [(dy, dx) for dy in range(-shift, shift + 1) for dx in range(-shift, shift + 1)
               if np.array_equal(edge_shifted(crop, dy, dx, shift), seen)]
    assert len(matches) == 1, matches
    moves.add(matches[0])
  assert len(moves) >= 6  # each crop draws its own move: 18 crops, 25 moves


def test_light_jitter_changes_level_contrast_and_colour_as_bounded():
  crops = unit_crops((5, 4, 8, 8, 3), seed=1)
  flat = crops.reshape(20, -1, 3)
  # Gain: each channel's intensity (image + 1) scaled by one factor within 1 +- 0.2.
  gained = np.asarray(jitter.jitter_crops(crops, jax.random.key(1), {"gain": 0.2})).reshape(20, -1, 3)
  factors = (gained + 1) / (flat + 1)
  np.testing.assert_allclose(factors, np.broadcast_to(factors[:, :1], factors.shape), rtol=1e-5)
  assert np.all(np.abs(factors - 1) <= 0.2 + 1e-6) and np.ptp(factors[:, 0]) > 0.05
  # Brightness: one level added to every pixel of a crop, within +-0.1.
  lit = np.asarray(jitter.jitter_crops(crops, jax.random.key(2), {"brightness": 0.1})).reshape(20, -1, 3)
  levels = lit - flat
  np.testing.assert_allclose(levels, np.broadcast_to(levels[:, :1, :1], levels.shape), atol=1e-6)
  assert np.all(np.abs(levels) <= 0.1 + 1e-6) and np.ptp(levels[:, 0, 0]) > 0.02
  # Contrast: the distance from the crop's mean scaled by one factor within 1 +- 0.3.
  contrasted = np.asarray(jitter.jitter_crops(crops, jax.random.key(3), {"contrast": 0.3})).reshape(20, -1, 3)
  mean = flat.mean(axis=(1, 2), keepdims=True)
  ratios = (contrasted - mean) / (flat - mean)
  np.testing.assert_allclose(ratios, np.broadcast_to(np.median(ratios, axis=(1, 2), keepdims=True), ratios.shape),
                             rtol=1e-3, atol=1e-3)
  assert np.all(np.abs(ratios - 1) <= 0.3 + 1e-3)


def test_noise_has_the_asked_spread_and_the_result_stays_in_range():
  crops = unit_crops((4, 32, 32, 3), seed=2)
  noisy = np.asarray(jitter.jitter_crops(crops, jax.random.key(4), {"noise": 0.05}))
  assert abs(np.std(noisy - crops) - 0.05) < 0.003
  bright = np.asarray(jitter.jitter_crops(np.full((2, 8, 8, 3), 0.98, np.float32), jax.random.key(5),
                                          {"brightness": 0.5, "noise": 0.1}))
  assert bright.max() <= 1.0 and bright.min() >= -1.0 and np.any(bright == 1.0)


def test_bad_jitter_settings_are_one_line_errors():
  for settings, message in (({"blur": 0.1}, "unknown jitter settings"), ({"shift": 1.5}, "whole number"),
                            ({"shift": -1}, "whole number"), ({"contrast": 1.0}, r"contrast must lie in \[0, 1\)"),
                            ({"noise": -0.1}, "noise must lie")):
    with pytest.raises(InputError, match=message):
      jitter.check_settings(settings)
  config = tiny.get_config("motion")
  config.motion_loss.jitter.gain = 2.0
  with pytest.raises(InputError, match="gain must lie"):
    motion_task.MotionTask(config)


def test_the_step_benchmark_refuses_bad_jitter_settings_in_one_line():
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  sys.path.insert(0, os.path.join(root, "benchmarks"))
  import motion_step  # pylint: disable=g-import-not-at-top  # benchmarks/motion_step.py
  for flag, message in (("shift=0", "jitters nothing"), ("shift", "NAME=VALUE"), ("shift=three", "must be numbers")):
    with pytest.raises(InputError, match=message):
      motion_step.parse_settings(flag)
  # The command line's contract, once: a one-line error and exit status 2, no traceback.
  result = subprocess.run([sys.executable, os.path.join(root, "benchmarks", "motion_step.py"),
                           "--jitter=shift=3;contrast=2"],
                          capture_output=True, text=True, check=False, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert result.returncode == 2, result.stderr
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: --jitter: ") and "contrast must lie" in last, last
  assert "Traceback" not in result.stderr


def test_the_motion_loss_jitters_the_expression_encoder_s_crops_alone():
  config = tiny.get_config("motion")
  config.motion.widths, config.motion.pose_widths = (8, 16), ()
  config.motion.expression_parts = ()  # face crops alone here
  config.motion_loss.mirror_share = 0.0  # the jitter alone
  batch = random_motion_batch(np.random.default_rng(0))
  plain_task = motion_task.MotionTask(config)
  models = plain_task.make_model(nnx.Rngs(0))
  _, plain = plain_task.loss(models, {}, batch, jax.random.key(0))
  jittered_config = config.copy_and_resolve_references()
  jittered_config.motion_loss.jitter.update(shift=2, brightness=0.1, noise=0.02)
  task = motion_task.MotionTask(jittered_config)
  _, jittered = task.loss(models, {}, batch, jax.random.key(0))
  assert abs(float(jittered["expression_mse"]) - float(plain["expression_mse"])) > 1e-5
  assert float(jittered["pose_mse"]) == float(plain["pose_mse"])
  # Without a key (validation, evaluation) the crops are read as they are.
  _, unkeyed = task.loss(models, {}, batch, None)
  _, plain_unkeyed = plain_task.loss(models, {}, batch, None)
  assert float(unkeyed["expression_mse"]) == float(plain_unkeyed["expression_mse"])
