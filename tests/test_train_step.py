"""The train step's weight average, on a toy regression whose every step the test replays."""
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from configs import common
from fp_jax.train.step import TrainStep
from fp_jax.train.trainer import initial_state


class ToyRegression:
  """Fits `y = 3x - 1` with one linear layer."""

  def loss(self, model, frozen, batch, key):
    del frozen, key
    error = model(batch["x"]) - (3.0 * batch["x"] - 1.0)
    return jnp.mean(jnp.square(error)), {}


def test_the_average_follows_the_weights_early_and_widens_to_the_configured_decay():
  config = common.training_config("vae")
  config.total_steps, config.ema_decay = 200, 0.9
  config.optim.learning_rate = 0.1
  graphdef, params = nnx.split(nnx.Linear(1, 1, rngs=nnx.Rngs(0)))
  frozen_graphdef, _ = nnx.split(nnx.Dict({}))
  step = TrainStep(config, ToyRegression(), graphdef, frozen_graphdef)
  state = initial_state(params, step.tx, seed=0)
  batch = {"x": jnp.linspace(-1.0, 1.0, 8)[:, None]}
  step_fn = jax.jit(lambda state: step._train_step(state, {}, batch))  # pylint: disable=protected-access
  initial = np.asarray(state["params"]["kernel"][...])
  expected = initial.copy()
  for t in range(200):
    state, _ = step_fn(state)
    # An independent replay of the documented schedule: (1 + t) / (10 + t), capped.
    decay = min(0.9, (1.0 + t) / (10.0 + t))
    expected = decay * expected + (1.0 - decay) * np.asarray(state["params"]["kernel"][...])
    if t == 4:
      # Five steps in, a fixed 0.9 would still hold 0.9^5 = 59% of the initial weights; the
      # warm-up keeps 1/10 * 2/11 * ... * 5/14 of them (0.3%).
      moved = np.asarray(state["ema"]["kernel"][...]) - initial
      assert np.all(np.abs(moved) > 0.5 * np.abs(np.asarray(state["params"]["kernel"][...]) - initial))
  np.testing.assert_allclose(np.asarray(state["ema"]["kernel"][...]), expected, rtol=1e-5)
  assert abs(float(np.asarray(state["ema"]["kernel"][...]).item()) - 3.0) < 0.05
