"""The device side of the input: meshes, global batches, exact resumption, several processes."""
import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import grain
import pytest

from configs.data import input as input_config
from data_pipeline import input_pipeline
from data_pipeline.errors import InputError
from fp_jax.parallel import global_batches, mesh as mesh_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_input(data_dir, **overrides):
  config = input_config.get_config("tiny")
  config.data_dir = data_dir
  config.update_from_flattened_dict(overrides)
  return config


def test_mesh_fills_the_free_axis():
  mesh = mesh_lib.make_mesh({"data": -1, "fsdp": 2, "tensor": 2})
  assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "context": 1, "tensor": 2}
  assert mesh_lib.batch_shards(mesh) == 4
  assert sorted(d.id for d in mesh.devices.flat) == list(range(8))


@pytest.mark.parametrize("sizes, message", [
    ({"data": -1, "fsdp": -1}, "at most one axis may be -1"),
    ({"data": 3, "fsdp": -1}, "do not divide"),
    ({"data": 2, "fsdp": 2}, "needs 4 devices, there are 8"),
    ({"batch": 8}, "unknown axes"),
])
def test_bad_mesh_configs(sizes, message):
  with pytest.raises(InputError, match=message):
    mesh_lib.make_mesh(sizes)


def test_global_batch_is_split_over_the_batch_axes(data_dir):
  mesh = mesh_lib.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  host = next(input_pipeline.make_iterator(tiny_input(data_dir)))
  batch = global_batches.to_global(host, mesh)
  for key, value in host.items():
    np.testing.assert_array_equal(np.asarray(batch[key]), value, err_msg=key)
  video = batch["video"]
  assert video.shape == (8, 5, 32, 32, 3)
  assert video.sharding.spec == jax.sharding.PartitionSpec(("data", "fsdp"))
  assert {shard.data.shape for shard in video.addressable_shards} == {(2, 5, 32, 32, 3)}
  with pytest.raises(InputError, match="does not split over the mesh's batch axes"):
    mesh_lib.check_global_batch(6, mesh)


def test_resume_from_an_orbax_checkpoint_with_workers(data_dir, tmp_path):
  """Prefetch keeps the host iterator ahead; the saved state must still be the consumer's."""
  mesh = mesh_lib.make_mesh({"data": -1})
  config = tiny_input(data_dir)
  config.workers.count = 2

  def records(iterator, count):
    return [np.asarray(next(iterator)["record"]).tolist() for _ in range(count)]

  uninterrupted = global_batches.GlobalBatchIterator(input_pipeline.make_iterator(config), mesh)
  expected = records(uninterrupted, 5)
  uninterrupted.close()

  first = global_batches.GlobalBatchIterator(input_pipeline.make_iterator(config), mesh, prefetch=2)
  assert records(first, 2) == expected[:2]
  manager = ocp.CheckpointManager(tmp_path / "checkpoints")
  manager.save(2, args=ocp.args.Composite(input=grain.checkpoint.CheckpointSave(first)))
  manager.wait_until_finished()
  first.close()

  resumed = global_batches.GlobalBatchIterator(input_pipeline.make_iterator(config), mesh, prefetch=2)
  manager.restore(2, args=ocp.args.Composite(input=grain.checkpoint.CheckpointRestore(resumed)))
  assert records(resumed, 3) == expected[2:]
  resumed.close()


def _free_port():
  with socket.socket() as sock:
    sock.bind(("localhost", 0))
    return sock.getsockname()[1]


def test_two_jax_processes_assemble_one_global_batch(data_dir):
  port = _free_port()
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT,
             XLA_FLAGS=os.environ["XLA_FLAGS"].replace("device_count=8", "device_count=2"))
  workers = [subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "distributed_input_worker.py"),
                               str(port), str(rank), "2", data_dir], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for rank in range(2)]
  results = []
  for worker in workers:
    out, err = worker.communicate(timeout=240)
    assert worker.returncode == 0, err[-3000:]
    results.append(json.loads(out.strip().splitlines()[-1]))
  assert [r["devices"] for r in results] == [4, 4]
  assert results[0]["global"] == results[1]["global"]  # both see the same global batches
  epoch = results[0]["global"]
  assert sorted(epoch) == list(range(6))  # one epoch: every clip once
  assert not set(results[0]["local"]) & set(results[1]["local"])
  assert set(results[0]["local"]) | set(results[1]["local"]) == set(range(6))



def test_global_batches_keep_no_reference_to_the_host_buffers():
  # On the CPU a device array may alias the host buffer it came from. Grain's workers hand over
  # batches in shared memory, unlinked when the array is freed: aliased, every batch a step holds
  # would stay in shared memory, and those alive at exit were reported leaked.
  import mmap  # pylint: disable=g-import-not-at-top
  mesh = mesh_lib.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  want = np.arange(8 * 4096, dtype=np.float32).reshape(8, 4096)
  buffer = mmap.mmap(-1, want.nbytes)  # as Grain's shared-memory arrays are: an ndarray over an mmap
  host = np.frombuffer(buffer, np.float32).reshape(want.shape)
  host[...] = want
  batch = global_batches.to_global({"x": host}, mesh)
  del host
  buffer.close()  # BufferError while anything still points into it
  np.testing.assert_array_equal(np.asarray(batch["x"]), want)
