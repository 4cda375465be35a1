"""The input workers' store of kept examples (data_pipeline/kept_examples.py)."""
import pickle

import numpy as np
import pytest

from data_pipeline import kept_examples
from data_pipeline.errors import InputError


def example(index):
  rng = np.random.default_rng(index)
  return {"driving": rng.integers(0, 256, (1, 4, 6, 6, 3), dtype=np.uint8),
          "expression": rng.normal(size=(1, 16)).astype(np.float32), "record": np.int64(index)}


def test_kept_examples_come_back_as_kept_up_to_the_capacity():
  store = kept_examples.KeptExamples(3)
  assert store.get(7) is None
  for index in (7, 2, 9):
    assert store.put(index, example(index))
  assert store.put(7, example(7)) and len(store) == 3  # kept once
  assert not store.put(4, example(4)) and store.get(4) is None and store.full()
  for index in (9, 7, 2):
    served, truth = store.get(index), example(index)
    assert served.keys() == truth.keys()
    for key in truth:
      assert served[key].dtype == np.asarray(truth[key]).dtype
      np.testing.assert_array_equal(served[key], truth[key], err_msg=f"{index} {key}")
  # What a consumer does to an example served, or to the one it put, does not reach the store.
  served = store.get(9)
  served["driving"][...] = 0
  given = example(5)
  other = kept_examples.KeptExamples(1)
  other.put(5, given)
  given["expression"][...] = 0
  np.testing.assert_array_equal(store.get(9)["driving"], example(9)["driving"])
  np.testing.assert_array_equal(other.get(5)["expression"], example(5)["expression"])


def test_a_pickled_store_starts_empty_and_a_mismatched_example_is_refused():
  store = kept_examples.KeptExamples(4)
  store.put(1, example(1))
  copy = pickle.loads(pickle.dumps(store))  # as Grain hands the transform to a worker
  assert copy.capacity == 4 and len(copy) == 0 and copy.get(1) is None
  copy.put(2, example(2))
  np.testing.assert_array_equal(copy.get(2)["driving"], example(2)["driving"])
  wider = example(3)
  wider["driving"] = np.zeros((1, 4, 8, 8, 3), np.uint8)
  with pytest.raises(InputError, match="example 3 does not match the examples kept before"):
    store.put(3, wider)
  assert store.get(3) is None and len(store) == 1
  with pytest.raises(InputError, match="capacity must be >= 0"):
    kept_examples.KeptExamples(-1)
  assert not kept_examples.KeptExamples(0).put(0, example(0))
