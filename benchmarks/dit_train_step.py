"""Our DiT's train step as the DiT benchmarks time it: one AdamW step on a fixed batch, on one
device, compiled ahead of time so its peak memory can be read from XLA's analysis."""

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from fp_jax.models.build import create_dit
from fp_jax.parallel import mesh as mesh_lib
from fp_jax.parallel.sharding import use_mesh


def compiled_train_step(config, batch):
  """(run, peak bytes): `run()` takes one step and waits for its loss. The train state lives only
  in `run`'s closure, so dropping `run` frees it."""
  mesh = mesh_lib.make_mesh({"data": -1}, jax.devices()[:1])
  model = create_dit(config, mesh)
  with use_mesh(mesh):
    optimizer = nnx.Optimizer(model, optax.adamw(1e-4), wrt=nnx.Param)
  graphdef, state = nnx.split((model, optimizer))
  batch = jax.device_put({k: jnp.asarray(v) for k, v in batch.items()})

  def train_step(state, batch):
    model, optimizer = nnx.merge(graphdef, state)

    def loss_fn(model):
      out = model(batch["latents"], batch["timestep"], batch["context"])
      return jnp.mean(jnp.square(out.astype(jnp.float32) - batch["target"]))

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return nnx.state((model, optimizer)), loss

  with use_mesh(mesh):
    compiled = jax.jit(train_step, donate_argnums=0).lower(state, batch).compile()
  memory = compiled.memory_analysis()
  holder = [state]

  def run():
    holder[0], loss = compiled(holder[0], batch)
    float(loss)  # waits for the step, and a NaN would show in the loss

  peak = (memory.temp_size_in_bytes + memory.argument_size_in_bytes + memory.output_size_in_bytes
          - memory.alias_size_in_bytes)
  return run, peak
