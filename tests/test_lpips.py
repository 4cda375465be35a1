"""LPIPS against the `lpips` package (its AlexNet trunk random, its shipped linear heads)."""
import os
import subprocess
import sys
import types

import numpy as np
import pytest
import torch
from safetensors.torch import save_file


def _import_reference():
  """The `lpips` package, its trunk given torchvision's AlexNet layer list (declared here, computed
  by torch): the torchvision on PyPI is built for CUDA and does not load beside the CPU torch, so
  it is not installed (`make test` installs lpips without dependencies)."""
  nn = torch.nn

  def alexnet(pretrained=False):
    assert not pretrained  # nothing can be downloaded: the trunk stays random
    return types.SimpleNamespace(features=nn.Sequential(
        nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(), nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2)))

  stub = types.ModuleType("torchvision")
  stub.models = types.SimpleNamespace(alexnet=alexnet)
  saved = sys.modules.get("torchvision")
  sys.modules["torchvision"] = stub
  try:
    import lpips  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  finally:  # only lpips keeps the stand-in
    if saved is None:
      del sys.modules["torchvision"]
    else:
      sys.modules["torchvision"] = saved
  return lpips


reference = _import_reference()

from data_pipeline.errors import InputError  # pylint: disable=g-import-not-at-top
from fp_jax.eval import lpips  # pylint: disable=g-import-not-at-top

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def reference_model():
  torch.manual_seed(0)
  return reference.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False).eval()


def _images(seed, shape=(3, 64, 64, 3)):
  rng = np.random.default_rng(seed)
  a = rng.integers(0, 256, shape).astype(np.uint8)
  b = np.clip(a.astype(int) + rng.integers(-40, 41, shape), 0, 255).astype(np.uint8)
  return a, b


def _reference_distance(model, a, b):
  to_torch = lambda x: torch.from_numpy(x.astype(np.float32) / 127.5 - 1.0).permute(0, 3, 1, 2)
  with torch.no_grad():
    return model(to_torch(a), to_torch(b)).reshape(-1).numpy()


def _save(tensors, path):
  save_file({name: value.detach().clone().contiguous() for name, value in tensors.items()}, str(path))
  return str(path)


def test_lpips_matches_the_reference_package(reference_model, tmp_path):
  path = _save(reference_model.state_dict(), tmp_path / "lpips_alex.safetensors")
  params = lpips.load(path)
  for seed, shape in ((0, (3, 64, 64, 3)), (1, (2, 48, 80, 3))):
    a, b = _images(seed, shape)
    expected = _reference_distance(reference_model, a, b)
    assert expected.min() > 1e-3  # the perturbation registers
    assert lpips.video_lpips(params, a, b) == pytest.approx(float(expected.mean()), rel=1e-4)
    assert lpips.video_lpips(params, a, a) == pytest.approx(0.0, abs=1e-7)


def test_the_trunk_and_the_heads_may_come_from_two_files(reference_model, tmp_path):
  state = reference_model.state_dict()
  # As torchvision's AlexNet file names its trunk, and the package's shipped file its heads.
  trunk = {f"features.{name.split('.')[2]}.{name.split('.')[3]}": value
           for name, value in state.items() if name.startswith("net.")}
  heads = {name: value for name, value in state.items() if name.startswith("lin")}
  paths = f"{_save(trunk, tmp_path / 'alexnet.safetensors')},{_save(heads, tmp_path / 'heads.safetensors')}"
  a, b = _images(2)
  expected = float(_reference_distance(reference_model, a, b).mean())
  assert lpips.video_lpips(lpips.load(paths), a, b) == pytest.approx(expected, rel=1e-4)
  with pytest.raises(InputError, match=r"missing features\.0\.weight .*lin0\.model\.1\.weight"):
    lpips.load(_save({"features.3.weight": trunk["features.3.weight"]}, tmp_path / "partial.safetensors"))
  wrong = dict(heads, **{"lin2.model.1.weight": torch.zeros(1, 7, 1, 1)})
  with pytest.raises(InputError, match=r"mis-shaped lin2\.model\.1\.weight \[1, 7, 1, 1\] \(needs \[1, 384, 1, 1\]\)"):
    lpips.load(f"{paths.split(',')[0]},{_save(wrong, tmp_path / 'wrong.safetensors')}")
  with pytest.raises(InputError, match="at least 31x31"):
    lpips.video_lpips(lpips.load(paths), a[:, :16, :16], b[:, :16, :16])
  # fp-eval checks the frames' size before it loads a model or samples a clip.
  result = subprocess.run([sys.executable, "-c", "from fp_jax.eval.cli import run; run()", "--config=configs/tiny.py:dit",
                           "--config.sample.height=16", "--config.sample.width=16", "--workdir=no_such_run",
                           f"--out={tmp_path / 'report.json'}", f"--lpips={paths}"],
                          cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True)
  assert result.returncode == 2 and result.stderr.strip() == "error: LPIPS needs frames of at least 31x31, got 16x16"
