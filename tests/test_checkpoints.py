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
