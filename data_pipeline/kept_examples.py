"""Examples an input worker keeps in memory, each key's arrays in one slab allocated up front.

Kept one by one, the small arrays of each example (a 64x64 crop is 12 KB) land in the heap between
the rendering's large temporaries, and the freed temporaries around them can no longer be returned
to the system: a worker that kept 3000 rendered people in a dict grew by 357 KB a person for 48 KB
of arrays, against 50 KB with these slabs (benchmarks/kept_examples.py). Here every key has one
array of `capacity` rows, made at the first example kept (one allocation, paged in as rows are
written), and a kept example is copied into its row.

Every example kept must have the keys, shapes and dtypes of the first: the examples of one input
pipeline do. A copy of the store (pickled into a Grain worker) starts empty.
"""
import numpy as np

from data_pipeline.errors import require


class KeptExamples:
  """index -> example (a dict of numpy arrays), up to `capacity` of them."""

  def __init__(self, capacity):
    require(capacity >= 0, f"capacity must be >= 0, got {capacity}")
    self.capacity = int(capacity)
    self._rows = {}  # index -> row of the slabs
    self._slabs = None  # key -> [capacity, *shape] array, made by the first put

  def __getstate__(self):
    return {"capacity": self.capacity}

  def __setstate__(self, state):
    self.__init__(state["capacity"])

  def __len__(self):
    return len(self._rows)

  def full(self):
    return len(self._rows) >= self.capacity

  def get(self, index):
    """A copy of the example kept for `index` (what a consumer does to it does not reach the
    store), or None."""
    row = self._rows.get(index)
    if row is None:
      return None
    return {key: np.array(slab[row]) for key, slab in self._slabs.items()}

  def put(self, index, example):
    """Keeps a copy of `example` for `index`; False where the store is full (nothing kept)."""
    if index in self._rows:
      return True
    if self.full():
      return False
    arrays = {key: np.asarray(value) for key, value in example.items()}
    if self._slabs is None:
      self._slabs = {key: np.empty((self.capacity,) + value.shape, value.dtype) for key, value in arrays.items()}
    expected = {key: (slab.shape[1:], slab.dtype) for key, slab in self._slabs.items()}
    given = {key: (value.shape, value.dtype) for key, value in arrays.items()}
    require(given == expected, f"example {index} does not match the examples kept before: {given} against {expected}")
    row = len(self._rows)
    for key, value in arrays.items():
      self._slabs[key][row] = value
    self._rows[index] = row
    return True
