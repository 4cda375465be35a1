"""One of several local JAX processes feeding one global batch (run by test_global_batches)."""
import json
import sys

from fp_jax.parallel import distributed


def main(port, process_id, num_processes, data_dir):
  distributed.initialize(f"localhost:{port}", num_processes, process_id)
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

  from configs.data import input as input_config  # pylint: disable=g-import-not-at-top
  from data_pipeline import input_pipeline  # pylint: disable=g-import-not-at-top
  from fp_jax.parallel import global_batches, mesh as mesh_lib  # pylint: disable=g-import-not-at-top

  config = input_config.get_config("tiny")
  config.data_dir, config.global_batch_size, config.num_epochs = data_dir, 2, 1
  mesh = mesh_lib.make_mesh({"data": 2, "tensor": -1})
  mesh_lib.check_global_batch(config.global_batch_size, mesh)
  host = input_pipeline.make_iterator(config, jax.process_index(), jax.process_count())
  seen_here, seen_globally = [], []
  for batch in global_batches.GlobalBatchIterator(host, mesh):
    assert batch["video"].shape[0] == config.global_batch_size
    seen_here.extend(int(r) for shard in batch["record"].addressable_shards for r in np.asarray(shard.data))
    seen_globally.extend(np.asarray(multihost_utils.process_allgather(batch["record"], tiled=True)).tolist())
  print(json.dumps({"process": jax.process_index(), "devices": jax.device_count(),
                    "local": sorted(set(seen_here)), "global": seen_globally}))


if __name__ == "__main__":
  main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
