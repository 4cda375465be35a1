"""How the trainer's checkpoints write replicated arrays."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from fp_jax.train import checkpoints


def slices_compiled_while_saving(params, workdir, caplog):
  config = ml_collections.ConfigDict(dict(keep_checkpoints=1, keep_period=0))
  manager = checkpoints.manager(str(workdir), config)
  caplog.clear()
  with jax.log_compiles():
    checkpoints.save(manager, 1, dict(params=params), None, config)
    manager.wait_until_finished()
  manager.close()
  restored, _ = checkpoints.latest_params(str(workdir), which="params")
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), restored, params)
  return sum("compilation of jit(slice)" in record.getMessage() for record in caplog.records)


def test_small_replicated_arrays_are_written_by_one_replica_and_big_ones_split(tmp_path, caplog):
  mesh = jax.make_mesh((8,), ("data",))
  replicated = NamedSharding(mesh, PartitionSpec())
  small = {"scale": jax.device_put(jnp.arange(16, dtype=jnp.float32), replicated),
           "kernel": jax.device_put(jnp.ones((64, 64), jnp.float32), replicated)}
  assert slices_compiled_while_saving(small, tmp_path / "small", caplog) == 0
  # Each of the 8 replicas' part of this one is the threshold's size: the write is split.
  rows = 8 * checkpoints.MIN_BYTES_PER_REPLICA_SLICE // (4 * 256)
  big = dict(small, big=jax.device_put(jnp.ones((rows, 256), jnp.float32), replicated))
  assert slices_compiled_while_saving(big, tmp_path / "big", caplog) > 0


def test_a_trained_model_is_put_into_its_shards_with_no_init(caplog):
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from fp_jax.models.build import create_loaded, create_sharded  # pylint: disable=g-import-not-at-top
  from fp_jax.models.dit import DiT  # pylint: disable=g-import-not-at-top
  from fp_jax.models.dit_config import DiTConfig  # pylint: disable=g-import-not-at-top
  from fp_jax.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  config = DiTConfig(dim=32, heads=2, layers=2, ffn_dim=64, text_dim=16, expression="both", dtype="bfloat16")
  mesh = mesh_lib.make_mesh(dict(data=2, fsdp=2, context=1, tensor=2))
  make = lambda seed: lambda: DiT(config, rngs=nnx.Rngs(seed))
  trained = create_sharded(make(1), mesh)  # the weights a checkpoint would hold, on the host
  params = jax.tree.map(lambda x: np.asarray(x, np.float64), nnx.state(trained).to_pure_dict())
  caplog.clear()
  with jax.log_compiles():
    loaded = create_loaded(make(0), params, mesh)
  assert not [r for r in caplog.records if "XLA compilation" in r.getMessage()]
  want, got = nnx.state(trained).to_pure_dict(), nnx.state(loaded).to_pure_dict()
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    assert a.dtype == b.dtype and a.sharding == b.sharding  # the module's own, not the host's float64
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
