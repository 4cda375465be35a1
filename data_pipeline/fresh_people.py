"""Motion examples on people drawn anew for every example, rendered in the worker.

The motion encoders trained on the dataset's few identities learn those people instead of their
expressions: a clip's frames are nearly one picture, so its controls can be memorised from the
person's look, and on held-out identities expression R^2 stays below zero. With a person of its
own for every crop there is nothing to memorise (benchmarks/motion.py; measured figures in
configs/data/input.py).

Example `i` of a split is one frame of a new person, drawn from `(seed, split, i)` alone, so the
splits hold different people, a run resumes exactly, and the example does not depend on which
worker renders it. Its expression is one frame of the world's expression curves (blinks and
speech included, as the clips have them), its head motion, camera, lighting and background drawn
as the clips draw them (data_pipeline/expression_twins.py). The world frame is the camera's, so
`head_pose` is the head as the crop sees it and `extrinsics` is the identity. With
`expression_twins > 0` the same expression is rendered once more on another new person
(`driving_twin`), for the motion trainer's invariance term.

With `identity_views = K` (K >= 2; the identity task) an example is instead one new person seen K
times, each view with an expression, head motion, camera, lighting and backdrop of its own (and,
with the "mixed" crop source, its own coin): what stays the same across the views is the person
alone (their shape and skin), which is what an identity embedding must read.

An epoch of `fresh_people = N` people repeats them in the next epoch, drawn exactly as before.
With `fresh_people_cache = M` each worker keeps up to M rendered examples in memory and serves a
repeat from there instead of rendering it again: the same example, at a fraction of the cost, so a
run on a few thousand people can take many epochs (figures in configs/data/input.py). They are kept
in slabs allocated once (kept_examples.py), so a worker grows by what it keeps and no more. What a
worker keeps, it also writes to a folder the host's other workers read (shared_renders.py; with
two workers or more): a person is rendered once per host, not once per worker.

With `face_crop.parts` (names in face_crop.PARTS) each crop comes with close-ups of those parts of
the same face: `driving` and `driving_twin` are [1, 1 + P, S, S, 3], the face first (identity views
stay face crops alone: the identity embedding reads no parts).

Keys (one frame, `T = 1`): driving [1, S, S, 3] uint8, expression [1, C], head_pose [1, 10],
extrinsics [1, 3, 4], and with twins twin_frames [1], driving_twin [1, S, S, 3], twin_pose [1, 10].
With identity views: views [K, S, S, 3] uint8, head_pose [K, 10] (each view's, as its crop sees it).
"""
import zlib

import grain
import numpy as np

from data_pipeline import appearance, examples, expression_twins, face_crop, kept_examples, shared_renders, world
from data_pipeline.errors import require
from data_pipeline.template_head import build_template


def split_code(split):
  """A stable number for a split name: the splits draw their people from disjoint streams."""
  return zlib.crc32(split.encode())


class MakeFreshExample(grain.transforms.RandomMap):
  """Index -> the motion example of a newly drawn person (picklable: runs in Grain workers)."""

  def __init__(self, records, config):
    self._seed = int(config.seed)
    self._split = split_code(config.split)
    self._height, self._width, self._fps = records.height, records.width, records.fps
    self._crop_size = int(config.face_crop.size)
    self._margin = float(config.face_crop.margin)
    self._parts = face_crop.check_parts(config.face_crop.get("parts", ()))
    self._source, self._stored_share = examples.crop_source(config.face_crop)
    self._twins = int(config.get("expression_twins", 0)) > 0
    self._views = int(config.get("identity_views", 0))
    require(self._views == 0 or self._views >= 2,
            f"identity_views must be 0 (off) or >= 2 views of each person, got {self._views}")
    require(not (self._views and self._twins), "identity_views and expression_twins do not go together")
    self._cache_size = int(config.get("fresh_people_cache", 0))
    require(self._cache_size >= 0, f"fresh_people_cache must be >= 0 (0: off), got {self._cache_size}")
    self._cache = kept_examples.KeptExamples(self._cache_size)  # filled in each worker (empty there at first)
    # What one worker renders, the host's other workers read instead of rendering it again.
    workers = int(config.get("workers", {}).get("count", 0))
    self._shared = (shared_renders.SharedRenders("fresh_people_") if self._cache_size and workers > 1
                    else None)

  def random_map(self, index, rng):
    # Not Grain's generator, which follows the seed and the stream position alone: the person
    # comes from (seed, split, index), so validation draws people that training never sees.
    del rng
    index = int(index)
    example = self._cache.get(index)  # a copy: nothing done to the example served reaches the one kept
    if example is None:
      example = self._shared.get(index) if self._shared else None
      rendered = example is None
      if rendered:
        example = self._render(index)
      if self._cache.put(index, example) and rendered and self._shared:
        self._shared.put(index, example)
    return example

  def _render(self, index):
    model = build_template()
    if self._views:
      return self._render_views(index, self._generator(index), model)
    rng, expression, zoomed = self._first_draws(index, model)
    render = lambda: expression_twins.twin_crops(model, expression, rng, self._height, self._width, self._fps,
                                                 self._crop_size, self._margin, zoomed, parts=self._parts)
    driving, pose = render()
    example = {"driving": driving, "expression": expression, "head_pose": pose,
               "extrinsics": np.eye(3, 4, dtype=np.float32)[None], "record": np.int64(index)}
    if self._twins:
      example["driving_twin"], example["twin_pose"] = render()
      example["twin_frames"] = np.zeros(1, np.int32)
    return example

  def _generator(self, index):
    return np.random.default_rng([self._seed, self._split, index])

  def _first_draws(self, index, model):
    """Example `index`'s generator after its first draws, and those draws: the expression and
    whether the crops are rendered at crop resolution."""
    rng = self._generator(index)
    expression = self._expression(rng, model)
    return rng, expression, self._zoomed(rng)

  def rendered_at_crop_resolution(self, index):
    """Whether example `index`'s crops are rendered at crop resolution ("stored") rather than cut
    from frames, known without rendering it (the identity views' examples have a coin per view)."""
    require(not self._views, "identity views have a crop source per view")
    return self._first_draws(int(index), build_template())[2]

  def _expression(self, rng, model):
    """One frame `[1, C]` of a newly drawn expression curve (blinks and speech as the clips have)."""
    curve = world.sample_expression(model, rng, world.ClipSpec().num_frames, self._fps)
    return curve[int(rng.integers(len(curve)))][None].astype(np.float32)

  def _zoomed(self, rng):
    """"stored": rendered at crop resolution, as a high-resolution driving video's crop shows the
    face; "frames": cut from frames of the dataset's size, as evaluation cuts generated videos.
    (The coin is drawn whatever the source, so a "mixed" crop is exactly one of the other two.)"""
    coin = rng.random()
    return self._source == "stored" or (self._source == "mixed" and coin < self._stored_share)

  def _render_views(self, index, rng, model):
    person = appearance.sample_identity(model, rng)
    crops, poses = [], []
    for _ in range(self._views):
      expression = self._expression(rng, model)
      crop, pose = expression_twins.twin_crops(model, expression, rng, self._height, self._width, self._fps,
                                               self._crop_size, self._margin, self._zoomed(rng), person=person)
      crops.append(crop)
      poses.append(pose)
    return {"views": np.concatenate(crops), "head_pose": np.concatenate(poses), "record": np.int64(index)}
