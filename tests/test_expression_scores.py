"""The expression benchmarks' statistics (benchmarks/expression_scores.py) on cases with known answers."""
import os
import sys

import numpy as np
import pytest

from data_pipeline import head_pose

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import expression_scores  # pylint: disable=g-import-not-at-top,wrong-import-position


def _controls(seed, n=400):
  rng = np.random.default_rng(seed)
  truth = rng.standard_normal((n, 3)) * np.array([2.0, 1.0, 0.2])
  return truth, truth + 0.3 * rng.standard_normal((n, 3))


def test_pooled_and_per_control_r_squared():
  truth, predicted = _controls(0)
  sse, sst = np.sum((predicted - truth) ** 2, axis=0), np.sum((truth - truth.mean(0)) ** 2, axis=0)
  assert expression_scores.r_squared(predicted, truth) == pytest.approx(1 - sse.sum() / sst.sum())
  np.testing.assert_allclose(expression_scores.r_squared(predicted, truth, axis=0), 1 - sse / sst)
  # The pooled figure is led by the widest control; the equal-weights mean counts the narrow one.
  assert expression_scores.mean_control_r_squared(predicted, truth) == pytest.approx(np.mean(1 - sse / sst))
  assert expression_scores.mean_control_r_squared(predicted, truth) < expression_scores.r_squared(predicted, truth)


def test_a_bin_of_the_same_error_scores_the_same_whatever_its_own_spread():
  truth, _ = _controls(1)
  # The second bin's frames hold a tenth of the spread; every frame is off by the same amount.
  truth[300:] = truth[300:].mean(0) + 0.1 * (truth[300:] - truth[300:].mean(0))
  predicted = truth + 0.5
  yaw = np.radians(np.where(np.arange(len(truth)) < 300, 10.0, 45.0))  # degrees off the camera
  rotation = np.zeros((len(truth), 3, 3))
  rotation[:, 0, 0], rotation[:, 0, 2], rotation[:, 1, 1] = np.cos(yaw), np.sin(yaw), 1.0
  rotation[:, 2, 0], rotation[:, 2, 2] = -np.sin(yaw), np.cos(yaw)
  towards = np.broadcast_to([0.0, 0.0, -1.0], (len(truth), 3))  # the camera along the face's +z at yaw 0
  poses = head_pose.pose_vector(np.concatenate([rotation, towards[:, :, None]], axis=-1), np.ones(len(truth)))
  np.testing.assert_allclose(head_pose.facing_degrees(poses), np.degrees(yaw), atol=1e-4)
  bins = {(low, high): r2 for low, high, _, r2 in expression_scores.by_facing(predicted, truth, poses)}
  whole = expression_scores.r_squared(predicted, truth)
  assert bins[(0, 30)] == pytest.approx(whole) and bins[(30, 60)] == pytest.approx(whole)
  assert bins[(60, 180)] is None


def test_the_bootstrap_interval_holds_the_estimate_and_widens_with_fewer_draws():
  truth, predicted = _controls(2)
  intervals = {}
  for count in (400, 40):
    estimate = expression_scores.r_squared(predicted[:count], truth[:count])
    low, high = expression_scores.bootstrap_interval(predicted[:count], truth[:count], np.arange(count), rounds=500)
    assert low < estimate < high
    intervals[count] = high - low
  assert intervals[40] > 2 * intervals[400]  # about sqrt(10) times as wide
  perfect = expression_scores.bootstrap_interval(truth, truth, np.arange(len(truth)) // 50, rounds=50)
  assert perfect == (1.0, 1.0)


def test_ridge_is_least_squares_with_an_unpenalised_intercept():
  rng = np.random.default_rng(3)
  features, targets = rng.standard_normal((60, 5)) + 2.0, rng.standard_normal((60, 2))
  strength = 0.1
  # The augmented normal equations: a column of ones for the intercept, left out of the penalty.
  augmented = np.concatenate([features, np.ones((60, 1))], axis=1)
  penalty = strength * 60 * np.diag([1.0] * 5 + [0.0])
  weights = np.linalg.solve(augmented.T @ augmented + penalty, augmented.T @ targets)
  new = rng.standard_normal((7, 5))
  np.testing.assert_allclose(expression_scores.ridge(features, targets, strength)(new),
                             np.concatenate([new, np.ones((7, 1))], axis=1) @ weights, rtol=1e-9, atol=1e-12)


def test_the_identity_probe_finds_a_person_the_latent_holds_and_its_null_is_near_chance():
  rng = np.random.default_rng(4)
  identity, clip = np.repeat(np.arange(4), 4 * 17), np.tile(np.repeat(np.arange(4), 17), 4)
  looks = rng.standard_normal((4, 32))
  blind = rng.standard_normal((len(identity), 32))  # no person in it
  telling = looks[identity] + 0.5 * blind  # each person's own direction
  accuracy, chance = expression_scores.identity_probe(telling, identity, clip)
  assert chance == 0.25 and accuracy == 1.0
  assert expression_scores.identity_probe_null(telling, identity, clip, rounds=50) < 0.9
  assert 0.25 <= expression_scores.identity_probe_null(blind, identity, clip, rounds=50) < 0.75
  with pytest.raises(ValueError, match="two clips or more"):
    expression_scores.identity_probe(blind, identity, np.zeros_like(clip))
