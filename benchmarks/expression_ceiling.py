"""How well the template's expression blend shapes could be read from the face's shape alone.

  python benchmarks/expression_ceiling.py [--noise_mm=1.0] [--clips=3000]

Each front vertex of the face (in front of the ears, above the neck, eyeballs left out) is seen
at its posed position plus Gaussian noise of `--noise_mm` per coordinate; the person's shape
coefficients are unknown (drawn as sample_identity draws them, standard normal). The linear
least-squares estimate of the 13 blend-shape coefficients from those positions then leaves a
posterior variance per control (a Gaussian prior with the covariance of `--clips` clips of
world.sample_expression), from which:
  expression_ceiling_r2: X           pooled over the blend shapes, the person's shape unknown
  expression_ceiling_r2_shape_known: X   the same with the shape given
  expression_ceiling_r2_NAME: X      each blend shape's, the shape unknown
A control read well here but badly by the expression encoder is held back by the pixels or by
learning, not by a person's shape that looks like it. Jaw and gaze (joint rotations) are left out.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import numpy as np  # pylint: disable=g-import-not-at-top

from expression_fit import fail  # pylint: disable=g-import-not-at-top  # benchmarks/expression_fit.py
from data_pipeline import world  # pylint: disable=g-import-not-at-top
from data_pipeline.template_head import LABEL_NAMES, build_template  # pylint: disable=g-import-not-at-top


def posterior_r2(directions, prior, noise):
  """Per coefficient, 1 - posterior variance / prior variance of `y = directions @ c + noise`."""
  information = directions.T @ directions / noise ** 2
  posterior = np.linalg.inv(np.linalg.inv(prior) + information)
  return 1.0 - np.diag(posterior) / np.diag(prior), posterior


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--noise_mm", type=float, default=1.0)
  parser.add_argument("--clips", type=int, default=3000)
  args = parser.parse_args()
  if args.noise_mm <= 0 or args.clips < 2:
    fail("--noise_mm must be positive and --clips at least 2")
  model = build_template()
  rest = model.v_template
  front = (rest[:, 2] > 0.0) & (rest[:, 1] > 0.07) & (model.vertex_labels != LABEL_NAMES.index("eyeball"))
  shape = model.shapedirs[front, :, :model.num_shape].reshape(-1, model.num_shape)
  expression = model.shapedirs[front, :, model.num_shape:].reshape(-1, model.num_expression)
  rng = np.random.default_rng(0)
  drawn = np.concatenate([world.sample_expression(model, rng, 17, 25.0)[:, :model.num_expression]
                          for _ in range(args.clips)])
  expression_prior = np.cov(drawn.T)
  noise = args.noise_mm / 1000.0
  prior = np.eye(model.num_expression + model.num_shape)
  prior[:model.num_expression, :model.num_expression] = expression_prior
  unknown, posterior = posterior_r2(np.concatenate([expression, shape], axis=1), prior, noise)
  _, known_posterior = posterior_r2(expression, expression_prior, noise)
  pooled = lambda post: 1.0 - np.trace(post[:model.num_expression, :model.num_expression]) / np.trace(expression_prior)
  print(f"front_vertices: {int(front.sum())}")
  print(f"expression_ceiling_r2: {pooled(posterior):.3f}")
  print(f"expression_ceiling_r2_shape_known: {pooled(known_posterior):.3f}")
  for name, value in zip(model.expression_names, unknown[:model.num_expression]):
    print(f"expression_ceiling_r2_{name}: {value:.3f}")


if __name__ == "__main__":
  main()
