"""The motion trainer's expression twins and invariance term."""
import jax.numpy as jnp
import numpy as np
from flax import nnx

from configs import tiny
from data_pipeline import examples
from data_pipeline.records import ClipRecords
from fp_jax.train.tasks import motion_task
from tests.test_input_pipeline import make_config


def test_a_twin_wears_the_same_expressions_on_another_person_and_view(data_dir):
  config = make_config(data_dir, **{"window.num_frames": 5, "expression_twins": True})
  records = ClipRecords(data_dir, "tiny", "train")
  maker = examples.MakeExample(records, config)
  example = maker.example(0, 0, np.random.default_rng(0))
  again = maker.example(0, 0, np.random.default_rng(0))
  other = maker.example(0, 0, np.random.default_rng(1))
  twin = example["driving_twin"]
  assert twin.shape == example["driving"].shape and twin.dtype == np.uint8
  np.testing.assert_array_equal(twin, again["driving_twin"])  # the example's seed decides it
  assert np.mean(np.abs(twin.astype(float) - example["driving"])) > 5  # not the same picture
  assert np.mean(np.abs(twin.astype(float) - other["driving_twin"])) > 5  # another draw, another twin


def test_the_invariance_term_is_zero_for_identical_crops_and_positive_otherwise():
  config = tiny.get_config("motion")
  config.motion.widths = (8, 16)
  task = motion_task.MotionTask(config)
  models = task.make_model(nnx.Rngs(0))
  rng = np.random.default_rng(0)
  batch = {"driving": jnp.asarray(rng.integers(0, 256, (2, 3, 16, 16, 3), dtype=np.uint8)),
           "expression": jnp.asarray(rng.standard_normal((2, 3, 16)), jnp.float32),
           "head_pose": jnp.asarray(rng.standard_normal((2, 3, 10)), jnp.float32)}
  plain_loss, plain = task.loss(models, {}, batch, None)
  assert "invariance" not in plain
  same_loss, same = task.loss(models, {}, dict(batch, driving_twin=batch["driving"]), None)
  assert float(same["invariance"]) == 0.0 and float(same_loss) == float(plain_loss)
  other = jnp.asarray(rng.integers(0, 256, (2, 3, 16, 16, 3), dtype=np.uint8))
  _, different = task.loss(models, {}, dict(batch, driving_twin=other), None)
  assert float(different["invariance"]) > 0.01
