"""The cached-latents dataset: what it stores, training from it, and its refusals."""
import copy
import json
import os
import shutil
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from data_pipeline import examples, input_pipeline, latent_cache, reference_warp
from data_pipeline.errors import InputError
from data_pipeline.records import ClipRecords
from data_pipeline.template_head import build_template
from fp_jax.train.cache_latents import build_cache
from fp_jax.train.tasks import common, dit_task
from tests.run_helpers import run, train_config


@pytest.fixture(scope="module")
def cache(data_dir, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("cache") / "latents")
  config = train_config(data_dir, "dit")
  counts = build_cache(config, out)
  return out, config, counts


def test_the_cache_holds_every_window_as_the_frozen_models_encode_it(cache, data_dir):
  out, config, counts = cache
  records = ClipRecords(data_dir, "tiny", "train")
  assert counts == {"train": len(records), "validation": len(ClipRecords(data_dir, "tiny", "validation"))}
  assert not os.path.exists(out + ".partial")
  cached = latent_cache.LatentRecords(out, "train", verify="all")
  # Record 1 (5-frame clips, 5-frame windows: one window per clip) against an encoding made
  # now from the clip itself.
  task = dit_task.DiTTask(config)
  frozen = nnx.Dict(task.make_frozen(nnx.Rngs(config.seed + 1)))
  example = examples.MakeExample(records, config.input).example(1, 0, np.random.default_rng(5))
  want = nnx.jit(task.encode)(frozen, {key: jnp.asarray(value)[None] for key, value in example.items()})
  got = cached[1]
  assert int(got["record"]) == 1 and int(got["start_frame"]) == 0
  for name in ("latents", "normals", "expression"):
    np.testing.assert_allclose(got[name], want[name][0], rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(got["head_pose"], example["head_pose"])
  # The reference candidates: every WARP_CANDIDATE_STRIDE-th frame (the tiny config warps the
  # reference), each encoded as an image, and each carried onto the window and encoded.
  clip = records[1]
  candidates = np.arange(0, len(clip["frames"]), latent_cache.WARP_CANDIDATE_STRIDE)
  assert config.input.warped_reference and list(candidates) == [0, 4]
  encode = nnx.jit(lambda vae, videos: vae.normalize(vae.encode(common.unit_range(videos))[0]))
  images = jnp.asarray(clip["frames"][candidates])[:, None]
  np.testing.assert_allclose(got["references"], encode(frozen["vae"], images)[:, 0], rtol=1e-4, atol=1e-5)
  window = {key: clip[key][:5] for key in ("intrinsics", "extrinsics", "head_pose", "head_scale", "expression")}
  warped = examples.warped_window(build_template(), clip, candidates, clip, window)
  np.testing.assert_allclose(got["warped"], encode(frozen["vae"], jnp.asarray(warped)), rtol=1e-4, atol=1e-5)
  # Frame 0 carried onto itself is itself: its first latent frame is that frame's image latent (the
  # causal VAE encodes a video's first frame alone); frame 4's warp onto frame 0 is another picture.
  own = np.abs(got["warped"][0, 0] - got["references"][0]).mean()
  other = np.abs(got["warped"][1, 0] - got["references"][0]).mean()
  assert own < 0.1 * other
  # An example reads one candidate and that candidate's warp.
  maker = latent_cache.MakeCachedExample(cached, config.input)
  for seed in range(4):
    cached_example = maker.random_map(1, np.random.default_rng(seed))
    chosen = [i for i in range(2) if np.array_equal(cached_example["reference_latent"], got["references"][i])]
    assert len(chosen) == 1 and np.array_equal(cached_example["warped_latents"], got["warped"][chosen[0]])


def test_dit_training_reads_the_cache(cache, tmp_path):
  out, config, _ = cache
  config = copy.deepcopy(config)
  config.input.cached_latents = out
  config.input.data_dir = str(tmp_path / "no_clips_needed")
  config.total_steps = 3
  config.eval.update(every=3, batches=1, sample_steps=1)
  state = run(config, tmp_path / "run")
  assert int(state["step"]) == 3 and int(state["skipped"]) == 0
  assert os.path.isfile(tmp_path / "run" / "samples" / "step_00000003.mp4")
  batch = next(input_pipeline.make_iterator(config.input))
  assert batch["latents"].shape == (8, 2, 4, 4, config.vae.z_dim) and batch["rays"].shape == (8, 2, 4, 4, 1536)


def test_a_cache_from_other_frozen_weights_or_windows_is_refused(cache, tmp_path):
  out, config, _ = cache
  config = copy.deepcopy(config)
  config.input.cached_latents = out
  config.frozen.vae = str(tmp_path / "another_vae")
  from fp_jax.train import trainer as trainer_lib  # pylint: disable=g-import-not-at-top
  with pytest.raises(InputError, match="was made with frozen weights"):
    trainer_lib.Trainer(config, str(tmp_path / "run"))
  config.frozen.vae = ""
  config.input.window.stride = 2
  with pytest.raises(InputError, match="holds windows of 5 frames at stride 1"):
    input_pipeline.make_dataset(config.input)
  config.input.window.stride = 1
  # A cache whose warps an older warp made (its metadata says version 1, or nothing).
  older = tmp_path / "older_warps"
  shutil.copytree(out, older)
  metadata = json.loads((older / "metadata.json").read_text())
  del metadata["warp_version"]
  (older / "metadata.json").write_text(json.dumps(metadata))
  with pytest.raises(InputError, match=f"made by warp version 1, this code makes version {reference_warp.WARP_VERSION}"):
    older_config = copy.deepcopy(config.input)
    older_config.cached_latents = str(older)
    input_pipeline.make_dataset(older_config)
  config.input.warped_reference = False
  with pytest.raises(InputError, match="was made with warped references"):
    input_pipeline.make_dataset(config.input)


def test_a_damaged_or_missing_cache_is_a_clear_error(cache, tmp_path):
  out, config, _ = cache
  with pytest.raises(InputError, match="no latent cache"):
    latent_cache.LatentRecords(str(tmp_path), "train")
  copy = tmp_path / "copy"
  os.makedirs(copy)
  for name in os.listdir(out):
    data = open(os.path.join(out, name), "rb").read()
    if name.endswith(".array_record"):
      data = data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]
    (copy / name).write_bytes(data)
  with pytest.raises(InputError, match="does not match its checksum"):
    latent_cache.LatentRecords(str(copy), "train", verify="all")
  result = subprocess.run([sys.executable, "-m", "fp_jax.train.cache_latents", "--config=configs/tiny.py:dit",
                           f"--out={out}"], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1] == f"error: {out} already exists; remove it or choose another --out"
  assert "Traceback" not in result.stderr


def test_caches_made_with_npz_records_still_read(cache, tmp_path):
  """Caches from before `record_format` hold .npz records; they read as they always did."""
  import json  # pylint: disable=g-import-not-at-top
  from array_record.python.array_record_module import ArrayRecordWriter  # pylint: disable=g-import-not-at-top
  from data_pipeline.checksums import sha256_file  # pylint: disable=g-import-not-at-top
  out, _, _ = cache
  current = latent_cache.LatentRecords(out, "train")
  old = tmp_path / "old"
  os.makedirs(old)
  writer = ArrayRecordWriter(str(old / "train.array_record"), "group_size:1")
  for index in range(len(current)):
    writer.write(latent_cache._encode(current[index], "npz"))  # pylint: disable=protected-access
  writer.close()
  metadata = json.load(open(os.path.join(out, latent_cache.METADATA)))
  del metadata["record_format"]
  metadata.update(files={"train": "train.array_record"}, counts={"train": len(current)},
                  sha256={"train": sha256_file(str(old / "train.array_record"))})
  (old / latent_cache.METADATA).write_text(json.dumps(metadata))
  previous = latent_cache.LatentRecords(str(old), "train", verify="all")
  assert current.record_format == "safetensors" and previous.record_format == "npz"
  for index in range(len(current)):
    theirs, ours = previous[index], current[index]
    assert sorted(theirs) == sorted(ours)
    for name, value in ours.items():
      assert value.dtype == theirs[name].dtype and value.shape == theirs[name].shape
      np.testing.assert_array_equal(value, theirs[name])
  metadata["record_format"] = "parquet"
  (old / latent_cache.METADATA).write_text(json.dumps(metadata))
  with pytest.raises(InputError, match="holds 'parquet' records, which this version cannot read"):
    latent_cache.LatentRecords(str(old), "train")

