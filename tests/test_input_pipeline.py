"""The Grain input pipeline: examples, determinism, sharding, resumption and bad input."""
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from configs.data import input as input_config
from configs.data import synthetic
from data_pipeline import examples, face_crop, head_pose, input_pipeline, rays, tfds_builder
from data_pipeline.errors import InputError
from data_pipeline.records import ClipRecords

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_config(data_dir, **overrides):
  config = input_config.get_config("tiny")
  config.data_dir = data_dir
  config.global_batch_size = 2
  config.update_from_flattened_dict(overrides)
  return config


def take(iterator, count):
  return [next(iterator) for _ in range(count)]


def assert_batches_equal(first, second):
  assert len(first) == len(second)
  for a, b in zip(first, second):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]), err_msg=key)


def test_records_are_in_identity_order(data_dir):
  records = ClipRecords(data_dir, "tiny", "validation")
  assert len(records) == 2 and records.clips_per_identity == 2
  for index in range(len(records)):
    clip = records[index]
    assert int(clip["identity"]) == records.identity_of(index) == 3
    assert clip["clip_id"].decode() == f"id000003_clip{index % 2:03d}"


def test_example_matches_the_stored_clip(data_dir):
  config = make_config(data_dir, **{"window.num_frames": 5, "workers.count": 0})
  records = ClipRecords(data_dir, "tiny", "train")
  maker = examples.MakeExample(records, config)
  example = maker.random_map(3, np.random.default_rng(7))
  clip = records[3]
  window = slice(int(example["start_frame"]), int(example["start_frame"]) + 5)
  np.testing.assert_array_equal(example["video"], clip["frames"][window])
  np.testing.assert_array_equal(example["normals"], clip["normals"][window])
  np.testing.assert_array_equal(example["expression"], clip["expression"][window])
  assert any(np.array_equal(example["reference"], frame) for frame in clip["frames"])
  pose, scale = head_pose.pose_from_vector(example["head_pose"])
  np.testing.assert_allclose(pose, clip["head_pose"][window], atol=1e-5)
  np.testing.assert_allclose(scale, clip["head_scale"][window], rtol=1e-6)
  np.testing.assert_array_equal(example["rays"], rays.to_latent_grid(rays.plucker_rays(
      clip["intrinsics"][window], clip["extrinsics"][window], 32, 32)))
  assert example["driving"].shape == (5, 16, 16, 3) and example["driving"].dtype == np.uint8
  assert int(example["identity"]) == int(clip["identity"])


def test_window_stride_and_cross_clip_reference(data_dir):
  config = make_config(data_dir, **{"window.num_frames": 1, "window.stride": 3, "reference": "cross_clip"})
  records = ClipRecords(data_dir, "tiny", "train")
  maker = examples.MakeExample(records, config)
  for seed in range(4):
    example = maker.random_map(2, np.random.default_rng(seed))
    partner = records[3]  # the other clip of identity 1
    assert any(np.array_equal(example["reference"], frame) for frame in partner["frames"])
    assert 0 <= int(example["start_frame"]) <= 4


def test_normals_rendered_on_the_fly_match_the_stored_ones(data_dir):
  records = ClipRecords(data_dir, "tiny", "train")
  stored = examples.MakeExample(records, make_config(data_dir)).random_map(0, np.random.default_rng(1))
  same = examples.MakeExample(records, make_config(data_dir, **{"normals.source": "render"}))
  rendered = same.random_map(0, np.random.default_rng(1))
  # The build rendered from float64 poses, stored as float32: a rare pixel may round differently.
  difference = np.abs(rendered["normals"].astype(int) - stored["normals"].astype(int))
  assert difference.max() <= 1 and np.mean(difference > 0) < 1e-3
  larger = examples.MakeExample(records, make_config(
      data_dir, **{"normals.source": "render", "normals.height": 64, "normals.width": 48,
                   "normals.encoding": "unit"})).random_map(0, np.random.default_rng(1))
  normals = larger["normals"]
  assert normals.shape == (5, 64, 48, 3) and normals.dtype == np.float32
  length = np.linalg.norm(normals, axis=-1)
  on_mesh = length > 0
  assert 0.1 < on_mesh.mean() < 0.9
  np.testing.assert_allclose(length[on_mesh], 1.0, atol=1e-5)
  # Facing the camera: OpenCV z points away from the viewer, so visible normals have n_z < 0.
  assert np.mean(normals[..., 2][on_mesh] < 0) > 0.95


def test_drop_flag_rates():
  rates = dict(all=0.1, motion=0.2, reference=0.3, expression=0.4, pose=0.0, camera=0.5)
  draws = 20000
  flags = [examples.draw_drop_flags(np.random.default_rng(seed), rates) for seed in range(draws)]
  table = np.array([[f[f"drop_{name}"] for name in examples.CONDITIONS] for f in flags])
  everything = table.all(axis=1).mean()
  motion_only = (~table[:, 0] & table[:, 1:].all(axis=1)).mean()
  singles = 1 - rates["all"] - rates["motion"]
  # Each expected frequency: the joint cases plus what the independent draws give.
  expected_all = rates["all"] + singles * 0.3 * 0.4 * 0.0 * 0.5
  expected_motion = rates["motion"] + singles * 0.7 * 0.4 * 0.0 * 0.5
  expected_reference = rates["all"] + singles * 0.3
  tolerance = 5 * np.sqrt(0.25 / draws)
  assert abs(everything - expected_all) < tolerance
  assert abs(motion_only - expected_motion) < tolerance
  assert abs(table[:, 0].mean() - expected_reference) < tolerance
  assert abs(table[:, 3].mean() - (rates["all"] + rates["motion"] + singles * 0.5)) < tolerance


def test_same_batches_with_any_number_of_workers_and_after_a_sigterm(data_dir):
  config = make_config(data_dir)
  alone = take(input_pipeline.make_iterator(config), 8)
  config.workers.count = 2
  iterator = input_pipeline.make_iterator(config)
  assert_batches_equal(alone[:4], take(iterator, 4))
  # A preemption signals the trainer's whole process group: its workers must live on and serve the
  # batches the trainer still takes before it saves.
  workers = multiprocessing.active_children()
  assert len(workers) >= 2
  for worker in workers:
    os.kill(worker.pid, signal.SIGTERM)
  time.sleep(1.0)
  assert all(worker.is_alive() for worker in workers)
  assert_batches_equal(alone[4:], take(iterator, 4))
  iterator.close()


def test_each_epoch_visits_every_clip_once_in_a_new_order(data_dir):
  config = make_config(data_dir, global_batch_size=1, num_epochs=2)
  order = [int(batch["record"][0]) for batch in input_pipeline.make_iterator(config)]
  assert len(order) == 12
  assert sorted(order[:6]) == sorted(order[6:]) == list(range(6))
  assert order[:6] != order[6:]
  # A run that would outlast its epochs is refused before it starts, not stopped when they end.
  assert len(list(input_pipeline.make_iterator(config, steps=12))) == 12
  with pytest.raises(InputError, match=r"13 steps need more than the 12 global batches of 2 epoch\(s\) of the 6 "
                                       r"records of train: raise num_epochs, or 0 repeats forever"):
    input_pipeline.make_iterator(config, steps=13)


def test_two_processes_split_an_epoch_between_them(data_dir):
  config = make_config(data_dir, global_batch_size=2, num_epochs=1)
  alone = {int(r) for batch in input_pipeline.make_iterator(config) for r in batch["record"]}
  shards = []
  for process in range(2):
    iterator = input_pipeline.make_iterator(config, process_index=process, process_count=2)
    shards.append([int(r) for batch in iterator for r in batch["record"]])
  assert len(shards[0]) == len(shards[1]) == 3
  assert not set(shards[0]) & set(shards[1])
  assert set(shards[0]) | set(shards[1]) == alone == set(range(6))


def test_missing_dataset_names_the_path_and_the_command(tmp_path):
  with pytest.raises(InputError, match=r"under .*; build it with: fp-data --config=configs/data/synthetic.py:tiny"):
    input_pipeline.make_dataset(make_config(str(tmp_path)))


@pytest.mark.parametrize("overrides, message", [
    ({"window.num_frames": 9}, "spans 9 frames, but the clips of tiny have 5"),
    ({"window.num_frames": 5, "window.stride": 2}, "spans 9 frames"),
    ({"window.num_frames": 4}, "must be 4k\\+1"),
    ({"global_batch_size": 3}, "not divisible by the 2 processes"),
    ({"drop.all": 0.7, "drop.motion": 0.5}, "must not exceed 1"),
    ({"reference": "elsewhere"}, "reference must be one of"),
])
def test_bad_configs_fail_at_start_up(data_dir, overrides, message):
  with pytest.raises(InputError, match=message):
    input_pipeline.make_dataset(make_config(data_dir, **overrides), process_index=0, process_count=2)


def _damaged_copy(data_dir, tmp_path, damage):
  target = tmp_path / "damaged"
  subprocess.run(["cp", "-r", data_dir, str(target)], check=True)
  version = target / "factor_portrait_synthetic/tiny" / synthetic.get_config("tiny").version
  path = version / next(f for f in os.listdir(version) if "-train." in f)
  data = bytearray(path.read_bytes())
  path.write_bytes(damage(data))
  return str(target), str(path)


def _flip_bytes_in_the_middle(data):
  middle = len(data) // 3
  data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
  return data


def test_corrupt_record_is_named_at_start_up(data_dir, tmp_path):
  damaged, path = _damaged_copy(data_dir, tmp_path, _flip_bytes_in_the_middle)
  with pytest.raises(InputError, match=rf"corrupt record \d of {path}: .*hash mismatch"):
    input_pipeline.make_dataset(make_config(damaged))


def test_corrupt_record_read_by_a_worker_is_one_clear_error(data_dir, tmp_path):
  damaged, path = _damaged_copy(data_dir, tmp_path, _flip_bytes_in_the_middle)
  config = make_config(damaged, verify="count", shuffle=False, num_epochs=1)
  config.workers.count = 2
  iterator = input_pipeline.make_iterator(config)
  with pytest.raises(InputError, match=rf"corrupt record \d of {path}"):
    take(iterator, 3)
  iterator.close()


def test_truncated_file_fails_at_start_up(data_dir, tmp_path):
  damaged, path = _damaged_copy(data_dir, tmp_path, lambda data: data[:3000])
  with pytest.raises(InputError, match=f"unreadable dataset file {path}"):
    input_pipeline.make_dataset(make_config(damaged, verify="count"))


def test_pipeline_runs_where_jax_cannot_be_imported(data_dir):
  script = (
      "import sys; sys.modules['jax'] = None\n"  # any `import jax` now fails
      "from configs.data import input as input_config\n"
      "from data_pipeline import input_pipeline\n"
      f"config = input_config.get_config('tiny'); config.data_dir = {data_dir!r}\n"
      "batch = next(input_pipeline.make_iterator(config))\n"
      "print(sorted(batch)[0], batch['video'].shape)\n")
  result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert result.returncode == 0, result.stderr[-2000:]
  assert "(8, 5, 32, 32, 3)" in result.stdout


def test_global_batches_do_not_depend_on_the_number_of_processes(data_dir):
  config = make_config(data_dir, global_batch_size=4)
  alone = take(input_pipeline.make_iterator(config), 3)
  shares = [take(input_pipeline.make_iterator(config, process_index=p, process_count=2), 3) for p in range(2)]
  keys = ("record", "start_frame", "video", "reference", "driving", "drop_camera", "drop_expression")

  def rows(batch):  # every example of a batch, as bytes of its fields
    return sorted(tuple(np.asarray(batch[k][i]).tobytes() for k in keys) for i in range(len(batch["record"])))

  for step, batch in enumerate(alone):
    assert rows(batch) == sorted(rows(shares[0][step]) + rows(shares[1][step]))
    for key in keys:  # row for row: process 0 holds the first half, process 1 the second
      np.testing.assert_array_equal(np.concatenate([shares[0][step][key], shares[1][step][key]]), batch[key])


def test_driving_crops_come_from_the_frames_or_the_stored_faces(data_dir):
  records = ClipRecords(data_dir, "tiny", "train")
  clip = records[1]
  assert records.face_size == 16 and records.face_margin == 1.8
  make = lambda **overrides: examples.MakeExample(records, make_config(data_dir, **overrides))
  stored = make(**{"face_crop.source": "stored"}).example(1, 0, np.random.default_rng(0))
  np.testing.assert_array_equal(stored["driving"], clip["face"])
  cut = make().example(1, 0, np.random.default_rng(0))
  np.testing.assert_array_equal(cut["driving"], face_crop.crop(clip["frames"], cut["face_boxes"], 16))
  smaller = make(**{"face_crop.source": "stored", "face_crop.size": 8}).example(1, 0, np.random.default_rng(0))
  assert smaller["driving"].shape == (5, 8, 8, 3)
  mixed = make(**{"face_crop.source": "mixed"})
  kinds = {np.array_equal(mixed.example(1, 0, np.random.default_rng(seed))["driving"], clip["face"])
           for seed in range(12)}
  assert kinds == {True, False}  # a coin toss per example
  for share, kind in ((0.0, False), (1.0, True)):  # face_crop.stored_share: the coin's odds
    always = make(**{"face_crop.source": "mixed", "face_crop.stored_share": share})
    assert {np.array_equal(always.example(1, 0, np.random.default_rng(seed))["driving"], clip["face"])
            for seed in range(6)} == {kind}
  with pytest.raises(InputError, match="differs from the stored faces"):
    make(**{"face_crop.source": "stored", "face_crop.margin": 2.0})
  with pytest.raises(InputError, match="face_crop.source must be one of"):
    make(**{"face_crop.source": "video"})


def test_datasets_of_another_template_ask_for_a_rebuild(data_dir, tmp_path):
  target = tmp_path / "old"
  subprocess.run(["cp", "-r", data_dir, str(target)], check=True)
  versions = target / "factor_portrait_synthetic/tiny"
  current = synthetic.get_config("tiny").version
  assert current == tfds_builder.WORLD_VERSION
  info = json.loads((versions / current / "dataset_info.json").read_text())
  previous = versions / current
  # 1.6.0: the last world before the nose wrinkle lifted the upper lip; 9.0.0: a world to come.
  for version, message in (("1.6.0", r"older template \(version 1.6.0 < 1.7.0: The nose wrinkle also lifts"),
                           ("1.3.0", r"older template \(version 1.3.0 < 1.7.0"),
                           ("9.0.0", r"is of world 9.0.0, newer than this code's 1.7.0; update the code or rebuild")):
    moved = versions / version
    previous.rename(moved)
    (moved / "dataset_info.json").write_text(json.dumps(dict(info, version=version)))
    with pytest.raises(InputError, match=message):
      ClipRecords(str(target), "tiny", "train")
    previous = moved
  # A config that asks the builder for another world than the code renders is refused before any work.
  config = synthetic.get_config("tiny")
  config.version = "1.6.0"
  with pytest.raises(InputError, match="version 1.6.0 asked for, but this code renders world 1.7.0"):
    tfds_builder.build(config, str(tmp_path / "refused"))
  assert not (tmp_path / "refused").exists()
