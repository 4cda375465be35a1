"""The train step as a pure function of (state, frozen_state, batch).

It needs the model's graph, the task and the optimizer, never data or devices, so `fp-aot` can
compile it from abstract shapes for a TPU topology; the Trainer runs the same step.
"""
import jax
import jax.numpy as jnp
from flax import nnx

from fp_jax.train import offload
from fp_jax.train.optimizer import make_optimizer


def ema_decay(cap, step):
  """The EMA's decay at `step` (0-based): `(1 + step) / (10 + step)`, at most `cap`.

  The average starts by following the weights and widens as training goes on. A fixed decay
  keeps the random initialisation in the average for ~1 / (1 - decay) steps: 0.99^150 = 22% of
  a 150-step run's EMA weights were still the initial ones, and 0.9999 (wan_1_3b) keeps them for
  tens of thousands of steps.
  """
  step = jnp.asarray(step, jnp.float32)
  return jnp.minimum(cap, (1.0 + step) / (10.0 + step))


def _select(condition, new, old):
  return jax.tree.map(lambda a, b: jnp.where(condition, a, b), new, old)


class TrainStep:

  def __init__(self, config, task, graphdef, frozen_graphdef):
    self.config, self.task = config, task
    self.graphdef, self.frozen_graphdef = graphdef, frozen_graphdef
    self.tx, self.schedule = make_optimizer(config.optim, config.total_steps)
    self.offloaded = offload.offloaded_parts(config)

  def _loss(self, params, frozen_state, batch, key):
    model = nnx.merge(self.graphdef, params)
    frozen = nnx.merge(self.frozen_graphdef, frozen_state)
    return self.task.loss(model, frozen, batch, key)

  def _gradients(self, params, frozen_state, batch, key):
    grad_fn = jax.value_and_grad(self._loss, has_aux=True)
    micro = self.config.optim.accumulation
    if micro == 1:
      return grad_fn(params, frozen_state, batch, key)
    split = jax.tree.map(lambda x: x.reshape(micro, x.shape[0] // micro, *x.shape[1:]), batch)

    def accumulate(total, inputs):
      micro_batch, micro_key = inputs
      (loss, metrics), grads = grad_fn(params, frozen_state, micro_batch, micro_key)
      return jax.tree.map(jnp.add, total, ((loss, metrics), grads)), None

    first = jax.tree.map(lambda x: x[0], split)
    shape = jax.eval_shape(grad_fn, params, frozen_state, first, key)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shape)
    total, _ = jax.lax.scan(accumulate, zeros, (split, jax.random.split(key, micro)))
    return jax.tree.map(lambda x: x / micro, total)

  def _train_step(self, state, frozen_state, batch):
    host_params = state["params"]
    state = dict(state, **{part: offload.to_device(state[part]) for part in self.offloaded})
    rng, key = jax.random.split(jax.random.wrap_key_data(state["rng"]))
    (loss, metrics), grads = self._gradients(state["params"], frozen_state, batch, key)
    if "params" in self.offloaded:
      # Fetch the parameters again for the update, once the gradients exist: the first copy then
      # dies after the forward's casts instead of waiting through the backward's peak.
      host_params, grads = jax.lax.optimization_barrier((host_params, grads))
      state["params"] = offload.to_device(host_params)
    grad_norm = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(grads)))
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    decay = ema_decay(self.config.ema_decay, state["step"])

    def update(old, grads):
      updates, opt_state = self.tx.update(grads, old["opt_state"], old["params"])
      params = jax.tree.map(jnp.add, old["params"], updates)
      ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, old["ema"], params)
      return dict(params=params, opt_state=opt_state, ema=ema)

    # A non-finite step leaves the state as it was.
    old = {key_: state[key_] for key_ in ("params", "opt_state", "ema")}
    if self.offloaded:
      # Every weight's new and old values, selected: XLA streams the parked parts through the chip
      # weight by weight. A `cond` would bring the whole state on at once (wan_1_3b on v5p with
      # all three parts parked: 14.6 GiB of HBM against 11.7, fp-aot).
      new = _select(finite, update(old, jax.tree.map(lambda g: jnp.where(finite, g, 0.0), grads)), old)
    else:
      # Only the branch taken runs, so a good step pays no select over every weight: the demo's
      # DiT step on 8 simulated CPU devices took 73 ms against 93 to 107 (and 0.4% less HBM on v5p).
      new = jax.lax.cond(finite, update, lambda old, grads: old, old, grads)
    new.update({part: offload.to_host(new[part]) for part in self.offloaded})
    new.update(step=state["step"] + 1, rng=jax.random.key_data(rng),
               skipped=state["skipped"] + (~finite).astype(jnp.int32),
               bad_streak=jnp.where(finite, 0, state["bad_streak"] + 1))
    metrics = dict(metrics, loss=loss, grad_norm=grad_norm,
                   learning_rate=self.schedule(state["step"]), skipped=new["skipped"])
    return new, metrics
