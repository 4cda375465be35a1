"""The dit task's frozen parts: loaded from the runs the config names, straight into their shards."""
import jax
import numpy as np
import pytest
from flax import nnx

from fp_jax.parallel import mesh as mesh_lib
from fp_jax.parallel.sharding import rules_from_config
from fp_jax.train import checkpoints
from fp_jax.train.frozen import create_frozen
from fp_jax.train.tasks import get_task
from tests.test_export import saved_run
from tests.test_trainer import train_config


@pytest.fixture(scope="module")
def frozen_runs(data_dir, tmp_path_factory):
  root = tmp_path_factory.mktemp("frozen_runs")
  saved_run(train_config(data_dir, "vae"), root / "vae", 1)
  saved_run(train_config(data_dir, "motion"), root / "motion", 2)
  return root


def _frozen(config):
  mesh = mesh_lib.make_mesh(dict(data=2, fsdp=2, context=1, tensor=2))
  return nnx.state(create_frozen(get_task(config), config, mesh, rules_from_config(config.logical_axis_rules)))


def _assert_holds(state, params):
  got = state.to_pure_dict()
  assert jax.tree.structure(got) == jax.tree.structure(params)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b, a.dtype))


def test_named_parts_load_from_their_runs_with_no_init(data_dir, frozen_runs, caplog):
  config = train_config(data_dir, "dit")
  config.frozen.vae, config.frozen.motion = str(frozen_runs / "vae"), str(frozen_runs / "motion")
  caplog.clear()
  with jax.log_compiles():
    state = _frozen(config)
  assert not [r for r in caplog.records if "XLA compilation" in r.getMessage()]
  _assert_holds(state["vae"], checkpoints.latest_params(str(frozen_runs / "vae"))[0])
  _assert_holds(state["expression"], checkpoints.latest_params(str(frozen_runs / "motion"))[0]["expression"])


def test_a_part_no_run_names_is_initialised_from_the_seed(data_dir, frozen_runs):
  config = train_config(data_dir, "dit")
  config.frozen.vae = str(frozen_runs / "vae")
  state = _frozen(config)
  _assert_holds(state["vae"], checkpoints.latest_params(str(frozen_runs / "vae"))[0])
  # The expression encoder as a plain (unsharded) init from the same seed makes it.
  fresh = jax.jit(lambda: nnx.state(nnx.Dict(get_task(config).make_frozen(nnx.Rngs(config.seed + 1)))))()
  _assert_holds(state["expression"], fresh["expression"].to_pure_dict())
