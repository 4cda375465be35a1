import importlib.util
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from data_pipeline import tfds_builder, world
from data_pipeline.errors import InputError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "data", "synthetic.py")


def tiny_config():
  spec = importlib.util.spec_from_file_location("synthetic_data_config", CONFIG)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config("tiny")


@pytest.fixture(scope="module")
def local_build(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("local"))
  tfds_builder.build(tiny_config(), data_dir)
  return data_dir


def _by_clip(source):
  return {example["clip_id"].decode(): example for example in source}


def test_local_build_reads_back_with_disjoint_identities(local_build):
  config = tiny_config()
  splits = {split: _by_clip(tfds_builder.data_source(local_build, "tiny", split)) for split in tfds_builder.SPLITS}
  sizes = {split: len(clips) for split, clips in splits.items()}
  assert sizes == {"train": 6, "validation": 2, "test": 2}
  identities = {split: {int(c["identity"]) for c in clips.values()} for split, clips in splits.items()}
  assert identities["train"].isdisjoint(identities["validation"] | identities["test"])
  assert identities["validation"].isdisjoint(identities["test"])
  # What was stored is exactly what the world renders for that key.
  stored = splits["train"]["id000001_clip001"]
  tfds_config = tfds_builder.PortraitConfig.from_config(config)
  regime = tfds_config.regime(1, 1)
  assert world.REGIMES[int(stored["regime"])] == regime
  fresh = world.generate_clip(config.seed, 1, 1, regime, tfds_config.spec)
  for key in ("frames", "normals", "mask", "extrinsics", "head_pose", "expression", "shape"):
    np.testing.assert_array_equal(stored[key], fresh[key])


def test_beam_direct_runner_build_matches_local(local_build, tmp_path):
  config = tiny_config()
  config.beam = True
  tfds_builder.build(config, str(tmp_path))
  beam, local = (_by_clip(tfds_builder.data_source(d, "tiny", "train")) for d in (str(tmp_path), local_build))
  assert beam.keys() == local.keys()
  for clip_id in local:
    for key in ("frames", "normals", "expression", "intrinsics"):
      np.testing.assert_array_equal(beam[clip_id][key], local[clip_id][key])


def _cli(module, *args, **kwargs):
  return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True,
                        timeout=300, **kwargs)


def test_cli_builds_and_writes_previews(tmp_path):
  data_dir, out = str(tmp_path / "data"), str(tmp_path / "previews")
  build = _cli("data_pipeline.build_cli", f"--config={CONFIG}:tiny", f"--data_dir={data_dir}",
               "--config.identities.train=2", "--config.clips_per_identity=4", "--config.name=demo")
  assert build.returncode == 0, build.stderr
  preview = _cli("data_pipeline.preview_cli", f"--data_dir={data_dir}", "--name=demo", "--split=train", f"--out={out}")
  assert preview.returncode == 0, preview.stderr
  videos = sorted(os.listdir(out))
  assert videos and all(v.endswith(".mp4") and v[:-4] in world.REGIMES for v in videos)
  assert all(os.path.getsize(os.path.join(out, v)) > 1000 for v in videos)


@pytest.mark.parametrize("args,message", [
    (["--config.num_frames=6"], "frame count must be 4k+1"),
    (["--config.height=0"], "positive integer"),
    (["--config.workers=-1"], "workers must be >= 0"),
    (["--data_dir=/nonexistent/parent/data"], "does not exist"),
    (["--data_dir=" + CONFIG], "not a directory"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
  base = [f"--config={CONFIG}:tiny", f"--data_dir={tmp_path / 'data'}"]
  result = _cli("data_pipeline.build_cli", *base, *args)
  assert result.returncode == 2
  lines = [line for line in result.stderr.strip().splitlines() if line.startswith("error:")]
  assert len(lines) == 1 and message in lines[0], result.stderr
  assert "Traceback" not in result.stderr
  assert not os.path.exists(tmp_path / "data" / "factor_portrait_synthetic" / "tiny" / "1.0.0")


def test_reader_rejects_missing_dataset(tmp_path):
  with pytest.raises(InputError, match="no complete dataset"):
    tfds_builder.data_source(str(tmp_path), "tiny", "train")


def test_interrupted_build_leaves_no_split_a_reader_would_take(tmp_path):
  data_dir = str(tmp_path)
  process = subprocess.Popen(
      [sys.executable, "-m", "data_pipeline.build_cli", f"--config={CONFIG}:tiny", f"--data_dir={data_dir}",
       "--config.identities.train=200", "--config.height=48", "--config.width=48"],
      cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
  parent = os.path.join(data_dir, "factor_portrait_synthetic", "tiny")
  deadline = time.time() + 240
  while time.time() < deadline:
    if os.path.isdir(parent) and any("incomplete" in name for name in os.listdir(parent)):
      break
    time.sleep(0.2)
  else:
    process.kill()
    pytest.fail("the build never started writing")
  time.sleep(1.0)
  assert process.poll() is None, "the build finished before it could be interrupted"
  os.killpg(process.pid, signal.SIGKILL)
  process.wait()
  assert not os.path.exists(os.path.join(parent, "1.0.0"))
  with pytest.raises(InputError, match="no complete dataset"):
    tfds_builder.data_source(data_dir, "tiny", "train")
