"""How much each expression control changes the crops the expression encoder reads.

  python benchmarks/expression_visibility.py [--people=40] [--data_dir=outputs/bench/data]

Renders `--people` validation people of the tiny motion config (the face crop and its close-ups,
at crop resolution, as benchmarks/expression_fit.py scores them), each twice under one view, light
and backdrop: once as drawn, once with one control moved by its standard deviation over those people
(down where that would leave its range). Prints, per control and crop, the mean absolute change of
a pixel in grey levels (0 to 255), and the same for another person wearing the same expression
under the same view, the nuisance an encoder must see through:
  pixel_change_CONTROL_CROP: X grey_levels
  pixel_change_other_person_CROP: X grey_levels
A control whose change is a fraction of a grey level moves few pixels across a quantisation step:
no encoder of uint8 crops can read it well.
"""
import argparse
import copy
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import numpy as np  # pylint: disable=g-import-not-at-top

from bench_data import ensure_dataset  # pylint: disable=g-import-not-at-top  # benchmarks/bench_data.py
from expression_fit import fail, maker  # pylint: disable=g-import-not-at-top  # benchmarks/expression_fit.py
from configs import tiny  # pylint: disable=g-import-not-at-top
from data_pipeline import appearance, controls, expression_twins  # pylint: disable=g-import-not-at-top
from data_pipeline.template_head import build_template  # pylint: disable=g-import-not-at-top


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--data_dir", default="outputs/bench/data")
  parser.add_argument("--people", type=int, default=40)
  args = parser.parse_args()
  if args.people < 2:
    fail("--people must be at least 2")
  ensure_dataset("demo", args.data_dir)
  parts = tuple(tiny.get_config("motion").motion.expression_parts)
  make = maker(args.data_dir, "validation", "stored", parts)
  model = build_template()
  names = controls.control_names(model)
  crops = ("face",) + parts
  people = [(appearance.sample_identity(model, np.random.default_rng([1, i])),
             appearance.sample_identity(model, np.random.default_rng([2, i])),
             np.random.default_rng([3, i])) for i in range(args.people)]
  drawn = [make._expression(rng, model) for _, _, rng in people]  # pylint: disable=protected-access
  spread = np.concatenate(drawn).std(axis=0)
  low, high = model.expression_range
  upper = np.array([high] * model.num_expression + [1.0, 1.0, 1.0])
  changes, other = np.zeros((len(names), len(crops))), np.zeros(len(crops))
  for (person, someone_else, rng), expression in zip(people, drawn):
    def render(values, who):  # from one generator state: every render draws the same view, light and backdrop
      crop = expression_twins.twin_crops(model, values, copy.deepcopy(rng), make._height, make._width,  # pylint: disable=protected-access
                                         make._fps, make._crop_size, make._margin, True, person=who, parts=parts)[0]  # pylint: disable=protected-access
      return crop.reshape(len(crops), -1).astype(np.float64)

    base = render(expression, person)
    other += np.abs(render(expression, someone_else) - base).mean(axis=1)
    for index in range(len(names)):
      moved = expression.copy()
      up = moved[0, index] + spread[index] <= upper[index]
      moved[0, index] += spread[index] if up else -spread[index]
      moved[0, :model.num_expression] = np.clip(moved[0, :model.num_expression], low, high)
      changes[index] += np.abs(render(controls.clip_to_range(moved), person) - base).mean(axis=1)
  for name, row in zip(names, changes / args.people):
    for crop, value in zip(crops, row):
      print(f"pixel_change_{name}_{crop}: {value:.2f} grey_levels")
  for crop, value in zip(crops, other / args.people):
    print(f"pixel_change_other_person_{crop}: {value:.2f} grey_levels")


if __name__ == "__main__":
  main()
