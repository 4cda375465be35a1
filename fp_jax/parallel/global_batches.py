"""Host batches -> global `jax.Array`s on the mesh, prefetched, with an exact checkpoint state.

Every process holds its own slice of the global batch (from its Grain shard); the global array
is assembled without any host seeing the rest (`jax.make_array_from_process_local_data`), split
along the batch dimension over the mesh's batch axes and replicated over the others.
"""
import collections
import copy
import json

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from fp_jax.parallel.mesh import BATCH_AXES


def batch_sharding(mesh):
  return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def to_global(host_batch, mesh):
  """A dict of host numpy arrays (this process's rows) -> dict of global `jax.Array`s."""
  sharding = batch_sharding(mesh)
  # A copy: on the CPU the device array would otherwise alias the host buffer, and Grain's workers
  # hand batches over in shared memory, freed only when every array over it is: each batch would
  # stay in shared memory as long as the step holds it (and be reported leaked at exit).
  return {key: jax.make_array_from_process_local_data(sharding, np.array(value))
          for key, value in host_batch.items()}


class GlobalBatchIterator:
  """Global batches `prefetch` steps ahead of the consumer, so transfers overlap the step.

  `get_state()` is the host iterator's state *before* the next batch this iterator will return,
  not the state of the host iterator, which has run ahead by the prefetched batches: restoring it
  replays exactly the batches not yet consumed. The state is JSON bytes, so Grain's Orbax handler
  saves it (`grain.checkpoint.CheckpointSave(item=iterator)`), one file per process.
  """

  def __init__(self, host_iterator, mesh, prefetch=2):
    self._host = host_iterator
    self._mesh = mesh
    self._prefetch = max(0, int(prefetch))
    self._queue = collections.deque()  # (host state before the batch, global batch)

  def _fetch(self):
    state = copy.deepcopy(self._host.get_state())
    self._queue.append((state, to_global(next(self._host), self._mesh)))

  def __iter__(self):
    return self

  def __next__(self):
    if not self._queue:
      self._fetch()
    while len(self._queue) <= self._prefetch:
      try:
        self._fetch()
      except StopIteration:
        break
    return self._queue.popleft()[1]

  def get_state(self):
    state = self._queue[0][0] if self._queue else self._host.get_state()
    return json.dumps(state).encode()

  def set_state(self, state):
    self._queue.clear()
    self._host.set_state(json.loads(state) if isinstance(state, (bytes, str)) else state)

  def start_prefetch(self):
    """Called by Grain's checkpoint handler after a restore; batches are fetched on demand."""

  def close(self):
    self._queue.clear()
    close = getattr(self._host, "close", None)
    if close is not None:
      close()
