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
from tests.run_helpers import saved_run, train_config


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


def test_completed_initialises_only_the_leaves_it_is_not_given(data_dir):
  from flax import traverse_util  # pylint: disable=g-import-not-at-top
  from fp_jax.models import build  # pylint: disable=g-import-not-at-top
  config = train_config(data_dir, "motion")
  make = lambda: get_task(config).make_model(nnx.Rngs(4))
  mesh = mesh_lib.make_mesh(dict(data=2, fsdp=2, context=1, tensor=2))
  abstract = build.abstract_sharded(make, mesh)
  fresh = traverse_util.flatten_dict(jax.jit(lambda: nnx.state(make()).to_pure_dict())())
  # The pose encoder is given (list indices spelt as a checkpoint spells them); the rest is not.
  rng = np.random.default_rng(0)
  given = {tuple(map(str, path)): rng.standard_normal(value.shape).astype(np.float32)
           for path, value in fresh.items() if path[0] == "pose"}
  got = traverse_util.flatten_dict(nnx.state(build.completed(
      make, abstract, traverse_util.unflatten_dict(given), mesh)).to_pure_dict())
  assert set(got) == set(fresh) and 0 < len(given) < len(fresh)
  for path, value in got.items():
    want = given.get(tuple(map(str, path)), fresh[path])
    np.testing.assert_array_equal(np.asarray(value), np.asarray(want), err_msg=str(path))
    assert value.sharding == traverse_util.flatten_dict(abstract[1].to_pure_dict())[path].sharding
  with pytest.raises(ValueError, match="no value for"):
    build.loaded(abstract, traverse_util.unflatten_dict(given))
  with pytest.raises(ValueError, match="is not a leaf"):
    build.loaded(abstract, {"nowhere": np.zeros(1)})


def test_the_dit_task_refuses_runs_of_another_task_or_other_face_crops(data_dir, frozen_runs):
  from data_pipeline.errors import InputError  # pylint: disable=g-import-not-at-top
  config = train_config(data_dir, "dit")
  config.frozen.vae, config.frozen.motion = str(frozen_runs / "motion"), str(frozen_runs / "motion")
  with pytest.raises(InputError, match="is a 'motion' run, not a 'vae' run"):
    _frozen(config)
  config.frozen.vae = str(frozen_runs / "vae")
  # The expression encoder learned on the tiny config's crops: a DiT whose driving crops are cut
  # wider would feed it faces unlike any it saw (so would fp-cache-latents, which loads it so).
  config.input.face_crop.margin += 0.5
  with pytest.raises(InputError, match=r"learned on face crops of margin 1.8, this config cuts them at 2.3 \(input.face_crop.margin\)"):
    _frozen(config)


def test_a_fresh_run_starts_from_the_ema_weights_of_the_run_init_names(data_dir, frozen_runs, tmp_path):
  """`init.run`: a fresh vae run's weights and EMA at step 0 are the named run's EMA weights whole,
  its linear path too (not fitted again to the clips); a run of another task or model is refused."""
  from data_pipeline.errors import InputError  # pylint: disable=g-import-not-at-top
  from fp_jax.train import trainer as trainer_lib  # pylint: disable=g-import-not-at-top
  want, _, _ = checkpoints.read_run(str(frozen_runs / "vae"), None, "ema")
  config = train_config(data_dir, "vae", total_steps=1)
  assert config.vae.linear_path  # what a fresh run would otherwise fit from the data
  config.init.run = str(frozen_runs / "vae")
  run = trainer_lib.Trainer(config, str(tmp_path / "run"))
  try:
    for part in ("params", "ema"):
      got = nnx.merge(run.graphdef, jax.device_get(run.state[part]))
      _assert_holds(nnx.state(got), want)
  finally:
    run.close()
  config.init.run = str(frozen_runs / "motion")
  with pytest.raises(InputError, match="is a 'motion' run, not a 'vae' run"):
    trainer_lib.Trainer(config, str(tmp_path / "motion_start"))
  config.init.run = str(frozen_runs / "vae")
  config.vae.base_dim *= 2
  with pytest.raises(InputError, match=r"init.run .*vae holds another model than this config describes: vae.base_dim"):
    trainer_lib.Trainer(config, str(tmp_path / "wider"))
  config.init.diffusers_checkpoint = str(tmp_path / "transformer")
  with pytest.raises(InputError, match="init.run and init.diffusers_checkpoint each give the whole start: set one"):
    trainer_lib.Trainer(config, str(tmp_path / "both"))
