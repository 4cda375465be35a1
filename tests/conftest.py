"""Every test sees 8 simulated CPU devices (set before anything imports jax)."""
import os
import sys
import types

# The tests' programs are tiny, so compiling them costs far more than running them: XLA:CPU's
# backend optimisation level 0 halves the suite's compile time (the processes tests start inherit it).
os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=8",
     "--xla_backend_optimization_level=0"]).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
# Many tests build the same small programs (each Trainer jits its own step): a persistent
# compilation cache, shared by the test workers and the processes they start, compiles each once.
# Every program, however quick to compile: on an empty cache (a fresh clone) caching those under
# 0.3 s too took the trainer and sampling tests from 440 to 398 CPU seconds.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(ROOT, "outputs", "jax_test_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  """The `tiny` synthetic dataset, built once per test process."""
  from configs.data import synthetic  # pylint: disable=g-import-not-at-top
  from data_pipeline import tfds_builder  # pylint: disable=g-import-not-at-top
  path = str(tmp_path_factory.mktemp("tiny_data"))
  tfds_builder.build(synthetic.get_config("tiny"), path)
  return path


@pytest.fixture(scope="session")
def motion_reference(data_dir, tmp_path_factory):
  """One uninterrupted run that the resume tests compare with and copy from: the tiny motion task
  (`run_helpers.train_config`) for 4 steps, checkpoints at steps 2 and 4. Returns its
  workdir (copy it before changing anything), its final state on the host and its step losses.
  Made once per test worker, for six tests that each trained a run of their own first."""
  import contextlib  # pylint: disable=g-import-not-at-top
  import io  # pylint: disable=g-import-not-at-top
  from tests import run_helpers  # pylint: disable=g-import-not-at-top
  workdir = tmp_path_factory.mktemp("motion_reference")
  printed = io.StringIO()
  with contextlib.redirect_stdout(printed):
    state = run_helpers.run(run_helpers.train_config(data_dir, "motion", total_steps=4, checkpoint_every=2), workdir)
  losses = run_helpers.step_losses(printed.getvalue())
  assert len(losses) == 4
  return types.SimpleNamespace(workdir=workdir, state=state, losses=losses)


@pytest.fixture(scope="module")
def sample_runs(data_dir, tmp_path_factory):
  """Saved vae, motion and dit runs of random weights (the dit naming the other two as frozen),
  for the sampling and evaluation tests: `root / "vae"`, `root / "motion"`, `root / "dit"`."""
  from tests.run_helpers import sample_config, saved_run, train_config  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp("sample_runs")
  saved_run(train_config(data_dir, "vae"), root / "vae", 1)
  saved_run(train_config(data_dir, "motion"), root / "motion", 2)
  saved_run(sample_config(data_dir, root), root / "dit", 3)
  return root
