"""The motion trainer: camera-frame pose targets, expression twins and the terms they feed."""
import gc
import os
import pickle
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import tiny
from data_pipeline import appearance, cameras, examples, fresh_people, head_pose, input_pipeline, shared_renders
from data_pipeline.errors import InputError
from data_pipeline.records import ClipRecords
from fp_jax.train.tasks import motion_task
from tests.test_input_pipeline import make_config


def test_a_twin_wears_the_same_expressions_on_another_person_and_view(data_dir):
  config = make_config(data_dir, **{"window.num_frames": 5, "expression_twins": 2})
  records = ClipRecords(data_dir, "tiny", "train")
  maker = examples.MakeExample(records, config)
  example = maker.example(0, 0, np.random.default_rng(0))
  again = maker.example(0, 0, np.random.default_rng(0))
  other = maker.example(0, 0, np.random.default_rng(1))
  twin, chosen = example["driving_twin"], example["twin_frames"]
  assert twin.shape == (2,) + example["driving"].shape[1:] and twin.dtype == np.uint8
  assert chosen.shape == (2,) and len(set(chosen.tolist())) == 2 and 0 <= chosen.min() and chosen.max() < 5
  np.testing.assert_array_equal(twin, again["driving_twin"])  # the example's seed decides it
  assert np.mean(np.abs(twin.astype(float) - example["driving"][chosen])) > 5  # not the same picture
  assert np.mean(np.abs(twin.astype(float) - other["driving_twin"])) > 5  # another draw, another twin
  # The twin's pose as its camera sees it: a real rotation, in front of the camera.
  pose = example["twin_pose"]
  assert pose.shape == (2, 10) and pose.dtype == np.float32
  np.testing.assert_allclose(np.linalg.norm(pose[:, :3], axis=1), 1.0, atol=1e-5)
  np.testing.assert_allclose(np.sum(pose[:, :3] * pose[:, 3:6], axis=1), 0.0, atol=1e-5)
  assert np.all(pose[:, 8] > 0.3)  # depth along the camera's axis


def test_each_twinned_frame_can_be_a_person_of_its_own(data_dir, monkeypatch):
  """`twin_people="each"` draws a new person for every twinned frame, `"one"` one for them all."""
  people = []
  draw = appearance.sample_identity
  monkeypatch.setattr(appearance, "sample_identity", lambda *args: people.append(1) or draw(*args))
  records = ClipRecords(data_dir, "tiny", "train")
  made = {}
  for choice in ("one", "each"):
    config = make_config(data_dir, **{"window.num_frames": 5, "expression_twins": 3, "twin_people": choice})
    maker = examples.MakeExample(records, config)
    people.clear()
    made[choice] = maker.example(0, 0, np.random.default_rng(0))
    assert len(people) == {"one": 1, "each": 3}[choice]
  one, each = made["one"], made["each"]
  np.testing.assert_array_equal(each["twin_frames"], one["twin_frames"])
  assert each["driving_twin"].shape == one["driving_twin"].shape and each["twin_pose"].shape == (3, 10)
  assert np.mean(np.abs(each["driving_twin"][1:].astype(float) - one["driving_twin"][1:])) > 5
  config.twin_people = "many"
  with pytest.raises(InputError, match="twin_people must be one of"):
    examples.MakeExample(records, config)


def random_motion_batch(rng):
  """A motion batch of 2 windows of 3 random 16x16 crops, with random controls and poses."""
  return {"driving": jnp.asarray(rng.integers(0, 256, (2, 3, 16, 16, 3), dtype=np.uint8)),
          "expression": jnp.asarray(rng.standard_normal((2, 3, 16)), jnp.float32),
          "head_pose": jnp.asarray(rng.standard_normal((2, 3, 10)), jnp.float32),
          "extrinsics": jnp.asarray(rng.standard_normal((2, 3, 3, 4)), jnp.float32)}


def test_validation_scores_the_crops_as_they_are():
  # Training mirrors, blurs and jitters; validation must not, or a run with more augmentation is
  # scored on harder crops than one with less.
  from fp_jax.train.evaluation import validation_metrics  # pylint: disable=g-import-not-at-top
  config = tiny.get_config("motion")
  config.motion.widths, config.motion.pose_widths = (8, 16), ()
  config.motion.expression_parts = ()
  config.motion_loss.blur_share, config.motion_loss.jitter.shift = 0.5, 2
  task = motion_task.MotionTask(config)
  graphdef, params = nnx.split(task.make_model(nnx.Rngs(0)))
  frozen_graphdef, frozen_state = nnx.split(nnx.Dict(task.make_frozen(None)))
  batch = random_motion_batch(np.random.default_rng(4))
  scored = jax.jit(validation_metrics(task, graphdef, frozen_graphdef))(params, frozen_state, batch)
  as_they_are = task.loss(nnx.merge(graphdef, params), {}, batch, None)[1]
  augmented = task.loss(nnx.merge(graphdef, params), {}, batch, jax.random.key(0))[1]
  for name in ("expression_mse", "pose_mse"):
    np.testing.assert_allclose(scored[name], as_they_are[name], rtol=1e-5)
    assert abs(float(augmented[name]) - float(as_they_are[name])) > 1e-4 * float(as_they_are[name])


def test_the_twin_terms_are_zero_or_exact_for_identical_crops_and_positive_otherwise():
  config = tiny.get_config("motion")
  config.motion.widths, config.motion.pose_widths = (8, 16), ()
  config.motion.expression_parts = ()  # face crops alone here (close-ups: tests/test_face_parts.py)
  task = motion_task.MotionTask(config)
  models = task.make_model(nnx.Rngs(0))
  rng = np.random.default_rng(0)
  batch = random_motion_batch(rng)
  plain_loss, plain = task.loss(models, {}, batch, None)
  assert "invariance" not in plain
  # Frames 2 and 0 twinned by exactly those frames: no difference at all.
  picks = jnp.asarray([[2, 0], [1, 2]], jnp.int32)
  own = jnp.take_along_axis(batch["driving"], picks[..., None, None, None], axis=1)
  own_pose = head_pose.to_camera_frame(jnp.take_along_axis(batch["head_pose"], picks[..., None], axis=1),
                                       jnp.take_along_axis(batch["extrinsics"], picks[..., None, None], axis=1))
  twins = dict(driving_twin=own, twin_frames=picks, twin_pose=own_pose)
  same_loss, same = task.loss(models, {}, dict(batch, **twins), None)
  assert float(same["invariance"]) == 0.0
  # The twins' readout is scored on the twinned frames' own controls.
  readout = models.readout(models.expression(own))
  wanted = jnp.take_along_axis(batch["expression"], picks[..., None], axis=1)
  twin_error = float(jnp.mean(jnp.square(readout - wanted)))
  np.testing.assert_allclose(float(same["twin_expression_mse"]), twin_error, rtol=1e-4)
  expected = config.motion.expression_weight * twin_error
  # Identical twins with their own frames' poses: the pose error on them is the plain one there.
  seen = head_pose.to_camera_frame(batch["head_pose"], batch["extrinsics"])
  pose_there = jnp.take_along_axis(models.pose(batch["driving"]) - seen, picks[..., None], axis=1)
  np.testing.assert_allclose(float(same["twin_pose_mse"]), float(jnp.mean(jnp.square(pose_there))), rtol=1e-4)
  np.testing.assert_allclose(float(same_loss), float(plain_loss) + expected + float(same["twin_pose_mse"]),
                             rtol=1e-4)
  other = jnp.asarray(rng.integers(0, 256, (2, 2, 16, 16, 3), dtype=np.uint8))
  _, different = task.loss(models, {}, dict(batch, **dict(twins, driving_twin=other)), None)
  _, shuffled = task.loss(models, {}, dict(batch, **dict(twins, twin_frames=picks[:, ::-1])), None)
  assert float(shuffled["invariance"]) > 0.01  # a twin is compared with its own frame only
  assert float(different["invariance"]) > 0.01


def test_the_pose_target_is_the_head_as_each_camera_sees_it():
  # Composed as 4x4 matrices: camera-from-head = camera-from-world @ world-from-head.
  rng = np.random.default_rng(0)
  rotation = head_pose.rotation_from_6d(rng.standard_normal((4, 6)))
  world = np.concatenate([rotation, rng.standard_normal((4, 3, 1))], axis=-1)
  scale = rng.uniform(0.9, 1.1, 4)
  views = cameras.turntable(4, 32, 32).extrinsics
  seen = head_pose.to_camera_frame(head_pose.pose_vector(world, scale), views)
  square = lambda m: np.concatenate([m, np.broadcast_to([[0, 0, 0, 1.0]], (len(m), 1, 4))], axis=1)
  expected = (square(views.astype(np.float64)) @ square(world))[:, :3]
  pose, seen_scale = head_pose.pose_from_vector(seen)
  np.testing.assert_allclose(pose, expected, atol=1e-5)
  np.testing.assert_allclose(seen_scale, scale, rtol=1e-6)
  back = head_pose.from_camera_frame(seen, views)
  np.testing.assert_allclose(back, head_pose.pose_vector(world, scale), atol=1e-5)
  # The same arithmetic on jax arrays (the motion task's loss runs it on the device).
  on_device = head_pose.to_camera_frame(jnp.asarray(head_pose.pose_vector(world, scale)), jnp.asarray(views))
  np.testing.assert_allclose(np.asarray(on_device), seen, atol=1e-5)


def test_fresh_people_are_drawn_anew_per_example_and_split(data_dir):
  """`input.fresh_people`: every example is one frame of a person of its own, decided by (seed,
  split, index) alone; the twin wears its expression on yet another person."""
  fresh = {"fresh_people": 40, "expression_twins": 1}
  config = make_config(data_dir, global_batch_size=4, **fresh)
  records = ClipRecords(data_dir, "tiny", "train")
  make = lambda **overrides: fresh_people.MakeFreshExample(records, make_config(data_dir, **fresh, **overrides))
  stored = make(**{"face_crop.source": "stored"})
  first = stored.random_map(3, np.random.default_rng(0))
  assert first["driving"].shape == first["driving_twin"].shape == (1, 16, 16, 3)
  assert first["expression"].shape == (1, 16) and first["head_pose"].shape == first["twin_pose"].shape == (1, 10)
  np.testing.assert_array_equal(first["extrinsics"][0], np.eye(3, 4))  # the world frame is the camera's
  # The head as the crop sees it: a real rotation, in front of the camera.
  pose, scale = head_pose.pose_from_vector(np.concatenate([first["head_pose"], first["twin_pose"]]))
  np.testing.assert_allclose(np.linalg.det(pose[:, :, :3]), 1.0, atol=1e-5)
  assert np.all(pose[:, 2, 3] > 0.3) and np.all(np.abs(scale - 1) < 0.1)
  again = stored.random_map(3, np.random.default_rng(99))  # Grain's generator does not matter
  for key in first:
    np.testing.assert_array_equal(first[key], again[key], err_msg=key)
  differ = lambda a, b: np.mean(np.abs(a.astype(float) - b.astype(float))) > 5
  assert differ(first["driving"], first["driving_twin"])  # the twin is somebody else
  assert differ(first["driving"], stored.random_map(4, None)["driving"])
  validation = make(**{"face_crop.source": "stored", "split": "validation"}).random_map(3, None)
  assert not np.array_equal(validation["expression"], first["expression"])
  # "mixed" tosses a coin between crops rendered at crop size and crops cut from whole frames.
  cut, mixed = make(**{"face_crop.source": "frames"}), make(**{"face_crop.source": "mixed"})
  kinds = set()
  for index in range(8):
    picture = mixed.random_map(index, None)["driving"]
    zoomed = np.array_equal(picture, stored.random_map(index, None)["driving"])
    assert zoomed != np.array_equal(picture, cut.random_map(index, None)["driving"])
    assert mixed.rendered_at_crop_resolution(index) == zoomed  # known without rendering
    kinds.add(zoomed)
  assert kinds == {True, False}
  # face_crop.stored_share moves the coin's odds; the same coin, so a smaller share keeps a subset.
  shares = {share: {i for i in range(40) if make(**{"face_crop.source": "mixed", "face_crop.stored_share": share})
                    .rendered_at_crop_resolution(i)} for share in (0.0, 0.2, 0.5, 1.0)}
  assert shares[0.0] == set() and shares[1.0] == set(range(40))
  assert shares[0.2] < shares[0.5] and 2 <= len(shares[0.2]) <= 16 and 12 <= len(shares[0.5]) <= 28
  with pytest.raises(InputError, match=r"stored_share must lie in \[0, 1\], got 1.5"):
    make(**{"face_crop.source": "mixed", "face_crop.stored_share": 1.5})
  # Batched by the pipeline, the motion loss takes them as they are.
  batch = next(input_pipeline.make_iterator(config))
  assert batch["driving"].shape == (4, 1, 16, 16, 3) and batch["twin_frames"].shape == (4, 1)
  task_config = tiny.get_config("motion")
  task_config.motion.widths, task_config.motion.pose_widths = (8, 16), ()
  task_config.motion.expression_parts = ()  # face crops alone here (close-ups: tests/test_face_parts.py)
  task = motion_task.MotionTask(task_config)
  loss, metrics = task.loss(task.make_model(nnx.Rngs(0)), {}, jax.tree.map(jnp.asarray, batch), None)
  assert np.isfinite(float(loss)) and float(metrics["invariance"]) > 0
  with pytest.raises(InputError, match="fresh_people must be >= 0"):
    input_pipeline.make_dataset(make_config(data_dir, fresh_people=-1))


def test_fresh_people_cache_serves_repeats_without_rendering_them_again(data_dir, monkeypatch):
  """`input.fresh_people_cache`: a person seen before comes from memory, the very same example as
  rendering it anew; people beyond the cache's size are rendered every time."""
  records = ClipRecords(data_dir, "tiny", "train")
  settings = {"fresh_people": 40, "expression_twins": 1, "face_crop.source": "stored"}
  uncached = fresh_people.MakeFreshExample(records, make_config(data_dir, **settings))
  cached = fresh_people.MakeFreshExample(records, make_config(data_dir, **settings, fresh_people_cache=2))
  renders = []
  real_twin_crops = fresh_people.expression_twins.twin_crops
  monkeypatch.setattr(fresh_people.expression_twins, "twin_crops",
                      lambda *args, **kwargs: renders.append(1) or real_twin_crops(*args, **kwargs))
  for index in (5, 6, 7, 5, 6, 7, 5):
    served, truth = cached.random_map(index, None), uncached.random_map(index, None)
    assert served.keys() == truth.keys()
    for key in truth:
      np.testing.assert_array_equal(served[key], truth[key], err_msg=f"{index} {key}")
    served["driving"][...] = 0  # what a consumer does to its copy does not reach the cache
  # Two crops (the person and the twin) a render; uncached: all 7; cached: 5 and 6 once, 7 both times.
  assert len(renders) == 2 * (7 + 2 + 2)
  assert cached._shared is None  # pylint: disable=protected-access  # no other worker to share with
  with pytest.raises(InputError, match="fresh_people_cache must be >= 0"):
    fresh_people.MakeFreshExample(records, make_config(data_dir, **settings, fresh_people_cache=-1))


def test_blurred_crops_are_the_chosen_share_each_a_gaussian_blur_and_the_rest_unchanged():
  from scipy import ndimage  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  crops = rng.integers(0, 256, (4, 8, 12, 12, 3), dtype=np.uint8)
  unit = np.asarray(motion_task.blur_crops(jnp.asarray(crops), None, 0.0, (1.0, 2.0)))
  np.testing.assert_allclose(unit, crops.astype(np.float32) / 127.5 - 1.0, atol=1e-6)
  # One sigma (1.5 px): every crop equals scipy's blur with zero padding, per channel.
  blurred = np.asarray(motion_task.blur_crops(jnp.asarray(crops), jax.random.key(0), 1.0, (1.5, 1.5)))
  expected = ndimage.gaussian_filter(unit, sigma=(0, 0, 1.5, 1.5, 0), mode="constant", truncate=5 / 1.5)
  np.testing.assert_allclose(blurred, expected, atol=1e-5)
  # A share of them: the others come back exactly as they were.
  half = np.asarray(motion_task.blur_crops(jnp.asarray(crops), jax.random.key(1), 0.5, (0.5, 3.0)))
  same = np.all(half == unit, axis=(2, 3, 4))
  assert 8 <= same.sum() <= 24, same.sum()
  assert np.all(np.abs(half - unit).max(axis=(2, 3, 4))[~same] > 0.05)


def test_the_motion_loss_blurs_crops_when_asked():
  config = tiny.get_config("motion")
  config.motion.widths, config.motion.pose_widths = (8, 16), ()
  config.motion.expression_parts = ()  # face crops alone here (close-ups: tests/test_face_parts.py)
  rng = np.random.default_rng(0)
  batch = random_motion_batch(rng)
  config.motion_loss.mirror_share = 0.0  # the blur alone
  models = motion_task.MotionTask(config).make_model(nnx.Rngs(0))
  sharp, _ = motion_task.MotionTask(config).loss(models, {}, batch, None)
  config.motion_loss.blur_share = 1.0
  soft, _ = motion_task.MotionTask(config).loss(models, {}, batch, jax.random.key(0))
  assert np.isfinite(float(soft)) and abs(float(soft) - float(sharp)) > 1e-4


def test_keypoints_are_each_channels_expected_position():
  """A peak far above the rest puts a channel's keypoint on it (x right, y down, in [-1, 1]); a
  flat channel's keypoint is the centre."""
  from fp_jax.models import motion  # pylint: disable=g-import-not-at-top
  features = np.zeros((1, 5, 9, 2), np.float32)
  features[0, 1, 6, 0] = 50.0  # row 1 of 5, column 6 of 9
  got = np.asarray(motion.keypoints(jnp.asarray(features)))
  np.testing.assert_allclose(got, [[6 / 8 * 2 - 1, 0.0, 1 / 4 * 2 - 1, 0.0]], atol=1e-6)
  # The PyTorch export's keypoints (channels first) agree on random features.
  import torch  # pylint: disable=g-import-not-at-top
  from fp_jax.export import torch_motion  # pylint: disable=g-import-not-at-top
  features = np.random.default_rng(0).normal(size=(3, 4, 6, 5)).astype(np.float32)
  np.testing.assert_allclose(torch_motion.keypoints(torch.from_numpy(features).permute(0, 3, 1, 2)).numpy(),
                             np.asarray(motion.keypoints(jnp.asarray(features))), atol=1e-6)


def test_keypoint_pooling_reads_where_a_spot_is():
  """A fresh encoder's keypoints put a bright spot on the left left of the same spot on the right,
  and its head takes the mean and the keypoints; an unknown pooling is a one-line error."""
  from fp_jax.models import motion  # pylint: disable=g-import-not-at-top
  images = np.full((2, 32, 32, 3), -1.0, np.float32)
  images[0, 12:18, 2:8] = 1.0
  images[1, 12:18, 24:30] = 1.0
  encoder = motion.ImageEncoder(motion.EncoderConfig((8, 16), 4, "mean_keypoints"), rngs=nnx.Rngs(0))
  x = jnp.asarray(images)
  for stage in encoder.stages:
    x = stage(x)
  keypoint_x = np.asarray(motion.keypoints(encoder.norm(x)))[:, :16]
  assert np.mean(keypoint_x[1] - keypoint_x[0]) > 0.1
  assert encoder.head.kernel.shape == (3 * 16, 4) and encoder(jnp.asarray(images)).shape == (2, 4)
  with pytest.raises(InputError, match="unknown pooling"):
    motion.ImageEncoder(motion.EncoderConfig((8, 16), 4, "max"), rngs=nnx.Rngs(0))


def test_grid_pooling_keeps_where_each_feature_is():
  """Grid pooling averages each of 4 x 4 cells as PyTorch's adaptive pooling does (a map of 6
  splits into overlapping cells 0-1, 1-2, 3-4, 4-5; a map of 2 repeats its cells), so a spot
  moved from one cell to another changes which of the head's inputs it reaches; the PyTorch
  mirror encodes as JAX does at two crop sizes."""
  from fp_jax.models import motion  # pylint: disable=g-import-not-at-top
  features = np.random.default_rng(1).normal(size=(2, 6, 2, 3)).astype(np.float32)
  got = np.asarray(motion.grid_pool(jnp.asarray(features))).reshape(2, 4, 4, 3)
  rows = [(0, 2), (1, 3), (3, 5), (4, 6)]
  for i, (start, end) in enumerate(rows):
    for j in range(4):
      np.testing.assert_allclose(got[:, i, j], features[:, start:end, j // 2].mean(axis=1), atol=1e-6)
  spot = np.zeros((2, 8, 8, 1), np.float32)
  spot[0, 0, 0], spot[1, 7, 7] = 1.0, 1.0
  cells = np.asarray(motion.grid_pool(jnp.asarray(spot)))
  np.testing.assert_allclose([cells[0, 0], cells[1, 15]], [0.25, 0.25])
  assert cells[0, 15] == cells[1, 0] == 0.0
  import torch  # pylint: disable=g-import-not-at-top
  from fp_jax.export import motion_names, torch_motion  # pylint: disable=g-import-not-at-top
  from tests import dit_helpers as helpers  # pylint: disable=g-import-not-at-top
  ours = motion.ImageEncoder(motion.EncoderConfig((8, 16), 5, "grid"), rngs=nnx.Rngs(0))
  assert ours.head.kernel.shape == (16 * 16, 5)
  theirs = torch_motion.ImageEncoder((8, 16), 5, "grid")
  theirs.load_state_dict({name: torch.from_numpy(np.array(value)) for name, value in
                          motion_names.to_state_dict(nnx.to_pure_dict(nnx.state(ours, nnx.Param)))})
  for size in (16, 40):  # 4 x 4 and 10 x 10 final maps
    crops = np.random.default_rng(size).integers(0, 256, (2, size, size, 3), dtype=np.uint8)
    with torch.no_grad():
      mirrored = theirs(torch.from_numpy(crops)).numpy()
    assert helpers.relative_error(mirrored, np.asarray(ours(jnp.asarray(crops)))) <= 1e-4


def test_input_workers_share_their_renders_of_fresh_people(data_dir, monkeypatch):
  """A person one input worker rendered, another reads from the host's shared folder (here the
  workers are pickled copies of one transform, as Grain makes them), and gets the same example."""
  records = ClipRecords(data_dir, "tiny", "train")
  settings = {"fresh_people": 40, "expression_twins": 1, "face_crop.source": "stored"}
  first = fresh_people.MakeFreshExample(records, make_config(data_dir, **settings, fresh_people_cache=40,
                                                             **{"workers.count": 2}))
  second = pickle.loads(pickle.dumps(first))
  renders = []
  real_twin_crops = fresh_people.expression_twins.twin_crops
  monkeypatch.setattr(fresh_people.expression_twins, "twin_crops",
                      lambda *args, **kwargs: renders.append(1) or real_twin_crops(*args, **kwargs))
  truth = first.random_map(5, None)
  assert len(renders) == 2  # the person and the twin
  served = second.random_map(5, None)
  assert len(renders) == 2 and served.keys() == truth.keys()
  for key in truth:
    np.testing.assert_array_equal(served[key], truth[key], err_msg=key)
  # The folder is the first transform's: a worker's copy going away leaves it, the owner's removes it.
  folder = first._shared.folder  # pylint: disable=protected-access
  del second
  gc.collect()
  assert os.path.isfile(os.path.join(folder, "5.npz"))
  del first
  gc.collect()
  assert not os.path.exists(folder)


def test_a_shared_render_is_read_whole_or_not_at_all(tmp_path, monkeypatch):
  shared = shared_renders.SharedRenders("test_")
  example = {"driving": np.arange(12, dtype=np.uint8).reshape(1, 2, 2, 3), "record": np.int64(3)}
  # A file still being written (or left by a killed worker) is not served.
  with open(os.path.join(shared.folder, "3.npz.123.partial"), "wb") as half:
    half.write(b"PK")
  assert shared.get(3) is None
  shared.put(3, example)
  kept = shared.get(3)
  np.testing.assert_array_equal(kept["driving"], example["driving"])
  assert int(kept["record"]) == 3
  # A full disk: nothing kept, nothing half-written left, the worker renders for itself.
  def disk_full(*args, **kwargs):
    raise OSError(28, "No space left on device")
  monkeypatch.setattr(shared_renders.np, "savez", disk_full)
  shared.put(4, example)
  assert shared.get(4) is None
  assert sorted(os.listdir(shared.folder)) == ["3.npz", "3.npz.123.partial"]


def test_a_killed_run_s_shared_renders_are_removed_by_the_next(tmp_path, monkeypatch):
  monkeypatch.setattr(shared_renders.tempfile, "tempdir", str(tmp_path))
  gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                        check=True)
  dead_owner = tmp_path / f"fresh_people_{int(gone.stdout)}_abc"
  live_owner = tmp_path / f"fresh_people_{os.getppid()}_abc"  # this test's parent: alive
  for folder in (dead_owner, live_owner):
    folder.mkdir()
    (folder / "0.npz").write_bytes(b"x")
  other = tmp_path / "fresh_people_notes"
  other.mkdir()
  shared = shared_renders.SharedRenders("fresh_people_")
  assert os.path.dirname(shared.folder) == str(tmp_path)
  assert not dead_owner.exists() and live_owner.exists() and other.exists()


def test_mirrored_examples_teach_the_expression_encoder_the_mirrored_controls():
  from data_pipeline import controls  # pylint: disable=g-import-not-at-top
  from data_pipeline.template_head import build_template  # pylint: disable=g-import-not-at-top
  config = tiny.get_config("motion")
  config.motion.widths, config.motion.pose_widths = (8, 16), ()
  config.motion.expression_parts = ()  # face crops alone here (close-ups: tests/test_face_parts.py)
  rng = np.random.default_rng(0)
  batch = random_motion_batch(rng)
  models = motion_task.MotionTask(config).make_model(nnx.Rngs(0))
  order, signs = controls.mirror_map(controls.control_names(build_template()))
  flipped = batch["driving"][..., ::-1, :]
  readout = lambda crops: models.readout(models.expression(crops))
  mirrored_error = float(jnp.mean(jnp.square(readout(flipped) - batch["expression"][..., order] * signs)))
  plain_error = float(jnp.mean(jnp.square(readout(batch["driving"]) - batch["expression"])))
  seen = head_pose.to_camera_frame(batch["head_pose"], batch["extrinsics"])
  pose_error = float(jnp.mean(jnp.square(models.pose(batch["driving"]) - seen)))
  mirrored_pose_error = float(jnp.mean(jnp.square(models.pose(flipped) - seen * jnp.asarray(motion_task.POSE_MIRROR_SIGNS))))
  config.motion_loss.mirror_share = 1.0
  config.motion_loss.mirror_pose = False
  task = motion_task.MotionTask(config)
  _, every = task.loss(models, {}, batch, jax.random.key(0))
  np.testing.assert_allclose(float(every["expression_mse"]), mirrored_error, rtol=1e-5)
  # Crops and controls are mirrored together: either alone would score another error.
  for crops, target in ((flipped, batch["expression"]), (batch["driving"], batch["expression"][..., order] * signs)):
    alone = float(jnp.mean(jnp.square(readout(crops) - target)))
    assert abs(alone - mirrored_error) > 20 * 1e-5 * mirrored_error, (alone, mirrored_error)
  # The pose encoder reads the crops as rendered, or (mirror_pose) mirrored with mirrored targets.
  np.testing.assert_allclose(float(every["pose_mse"]), pose_error, rtol=1e-5)
  config.motion_loss.mirror_pose = True
  _, both = motion_task.MotionTask(config).loss(models, {}, batch, jax.random.key(0))
  np.testing.assert_allclose(float(both["pose_mse"]), mirrored_pose_error, rtol=1e-5)
  np.testing.assert_allclose(float(both["expression_mse"]), mirrored_error, rtol=1e-5)
  assert abs(mirrored_pose_error - pose_error) > 1e-3 * pose_error
  # A twin is mirrored with its example: identical twins still give identical latents.
  picks = jnp.asarray([[2, 0], [1, 2]], jnp.int32)
  own = jnp.take_along_axis(batch["driving"], picks[..., None, None, None], axis=1)
  twins = dict(driving_twin=own, twin_frames=picks, twin_pose=jnp.zeros((2, 2, 10)))
  _, with_twins = task.loss(models, {}, dict(batch, **twins), jax.random.key(0))
  assert float(with_twins["invariance"]) == 0.0
  config.motion_loss.mirror_share = 0.0
  _, none = motion_task.MotionTask(config).loss(models, {}, batch, jax.random.key(0))
  np.testing.assert_allclose(float(none["expression_mse"]), plain_error, rtol=1e-5)
  config.motion_loss.mirror_share = 1.5
  with pytest.raises(InputError, match=r"mirror_share must lie in \[0, 1\], got 1.5"):
    motion_task.MotionTask(config)


def test_a_flipped_crop_is_the_mirrored_scene_with_its_mirrored_pose():
  """Flipping a render left to right gives what the mirrored world renders (head, expression,
  camera and light reflected in x), and that world's camera-frame pose vector is the original's
  times `POSE_MIRROR_SIGNS`: both computed from the world, not from the signs."""
  from data_pipeline import controls, lbs, world  # pylint: disable=g-import-not-at-top
  from data_pipeline.renderer import Background, Lighting  # pylint: disable=g-import-not-at-top
  from data_pipeline.template_head import build_template  # pylint: disable=g-import-not-at-top
  model = build_template()
  names = controls.control_names(model)
  order, signs = controls.mirror_map(names)
  reflect = np.diag([-1.0, 1.0, 1.0])
  rest = model.v_template
  albedo = np.clip(0.55 + 0.25 * np.cos(40 * rest[:, 1:2]) + 2.0 * np.abs(rest[:, :1]) * [1.0, 0.5, 0.2], 0, 1)
  expression = np.zeros((1, len(names)))
  expression[0, [names.index("smile_l"), names.index("brow_raise_r"), names.index("gaze_yaw")]] = 0.9, 0.7, 0.6
  rotation = lbs.axis_angle_to_matrix(np.array([[0.15, 0.45, -0.2]]))
  head = np.concatenate([rotation, np.array([[[0.02], [0.01], [-0.03]]])], axis=-1)
  views = cameras.turntable(1, 64, 64, yaw_start=25.0, yaw_end=25.0, pitch=10.0)
  light = dict(ambient=(0.3, 0.3, 0.3), colour=(0.7, 0.7, 0.7))
  background = Background(top=(0.2, 0.5, 0.8), bottom=(0.9, 0.6, 0.3))
  def render(head_pose, expression, extrinsics, direction):
    vertices = controls.pose_vertices(model, np.zeros(model.num_shape), expression, head_pose, np.ones(1))
    return world.renderer_for(model.f.tobytes(), 64, 64, 1).render_clip(
        vertices, views.intrinsics, extrinsics, albedo=albedo, lighting=Lighting(direction=direction, **light),
        background=background)["rgb"][0].astype(np.float64)
  original = render(head, expression, views.extrinsics, (0.4, 0.5, 1.0))
  mirrored_head = np.concatenate([reflect @ head[:, :, :3] @ reflect, reflect @ head[:, :, 3:]], axis=-1)
  mirrored_view = np.concatenate([reflect @ views.extrinsics[:, :, :3] @ reflect,
                                  reflect @ views.extrinsics[:, :, 3:]], axis=-1)
  mirrored = render(mirrored_head, expression[:, order] * signs, mirrored_view, (-0.4, 0.5, 1.0))
  assert np.mean(np.abs(original - mirrored)) > 5.0  # the scene is not symmetric itself
  # Silhouette pixels may differ a little (0.14 grey levels on average here; 0.80 with the
  # expression left unmirrored).
  assert np.mean(np.abs(original[:, ::-1] - mirrored)) < 0.3, np.mean(np.abs(original[:, ::-1] - mirrored))
  seen = head_pose.to_camera_frame(head_pose.pose_vector(head, np.ones(1)), views.extrinsics)
  seen_mirrored = head_pose.to_camera_frame(head_pose.pose_vector(mirrored_head, np.ones(1)), mirrored_view)
  np.testing.assert_allclose(seen_mirrored, seen * np.asarray(motion_task.POSE_MIRROR_SIGNS), atol=1e-6)


def test_the_nuisance_term_is_what_the_controls_do_not_predict_of_the_latent():
  config = tiny.get_config("motion")
  config.motion.widths, config.motion.pose_widths = (8, 16), ()
  config.motion.expression_parts = ()
  config.motion_loss.nuisance_weight = 0.0
  batch = random_motion_batch(np.random.default_rng(0))
  plain = motion_task.MotionTask(config)
  assert not hasattr(plain.make_model(nnx.Rngs(0)), "from_controls")
  assert "nuisance" not in plain.loss(plain.make_model(nnx.Rngs(0)), {}, batch, None)[1]
  config = config.copy_and_resolve_references()  # `plain` keeps its own
  config.motion_loss.nuisance_weight = 0.5
  task = motion_task.MotionTask(config)
  models = task.make_model(nnx.Rngs(0))
  loss, metrics = task.loss(models, {}, batch, None)
  latent = np.asarray(models.expression(batch["driving"]), np.float64)
  predicted = np.asarray(models.from_controls(batch["expression"]), np.float64)
  want = np.mean((latent - predicted) ** 2) / (np.mean(np.var(latent.reshape(-1, latent.shape[-1]), axis=0)) + 1e-6)
  np.testing.assert_allclose(float(metrics["nuisance"]), want, rtol=1e-4)
  plain_loss = plain.loss(models, {}, batch, None)[0]  # the same weights, the term left out
  np.testing.assert_allclose(float(loss) - float(plain_loss), 0.5 * want, rtol=1e-4)
  # A latent the controls predict exactly has no nuisance: the map fitted by least squares.
  controls_flat = np.asarray(batch["expression"], np.float64).reshape(-1, 16)
  design = np.concatenate([controls_flat, np.ones((len(controls_flat), 1))], axis=1)
  grads = nnx.grad(lambda m: task.loss(m, {}, batch, None)[0])(models)
  assert float(jnp.abs(grads.from_controls.kernel[...]).sum()) > 0
  assert design.shape[0] < design.shape[1]  # 6 frames, 17 unknowns: an exact fit exists
  solution, *_ = np.linalg.lstsq(design, latent.reshape(-1, latent.shape[-1]), rcond=None)
  models.from_controls.kernel[...] = jnp.asarray(solution[:16], jnp.float32)
  models.from_controls.bias[...] = jnp.asarray(solution[16], jnp.float32)
  assert float(task.loss(models, {}, batch, None)[1]["nuisance"]) < 1e-6
