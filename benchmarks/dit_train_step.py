"""The DiT train step as the DiT benchmarks time it, on both sides: ours (one AdamW step on a fixed
batch, on one device, compiled ahead of time so its peak memory can be read from XLA's analysis)
and diffusers' Wan at the same size (PyTorch, AdamW), both on the Wan core with no portrait
controls."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from fp_jax.models.build import create_dit
from fp_jax.models.dit_config import DiTConfig
from fp_jax.parallel import mesh as mesh_lib
from fp_jax.parallel.sharding import use_mesh


# The dit_step bench's batch: examples, latent frames, latent height and width, text tokens.
BENCH_BATCH = (2, 5, 32, 32, 64)


def make_batch(size, shape=BENCH_BATCH, seed=0):
  """A random train batch (numpy, fp32) of `shape` (as BENCH_BATCH) for the model `size`."""
  batch_size, frames, height, width, text = shape
  rng = np.random.default_rng(seed)
  return {
      "latents": rng.standard_normal((batch_size, frames, height, width, 16)).astype(np.float32),
      "timestep": rng.uniform(0, 1000, batch_size).astype(np.float32),
      "context": rng.standard_normal((batch_size, text, size["text_dim"])).astype(np.float32),
      "target": rng.standard_normal((batch_size, frames, height, width, 16)).astype(np.float32),
  }


def wan_core(size, config_class=DiTConfig, **settings):
  """Our DiT config at `size` (a configs/models/dit.py size) without the portrait controls."""
  return config_class(**size, reference=False, normals=False, rays=False, expression="none", pose=False,
                      **settings)


def compiled_train_step(config, batch, compiler_options=None):
  """(run, peak bytes): `run()` takes one step and waits for its loss. The train state lives only
  in `run`'s closure, so dropping `run` frees it. `compiler_options`: XLA options for this
  compilation alone (benchmarks/matmul_libraries.py)."""
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
    compiled = jax.jit(train_step, donate_argnums=0).lower(state, batch).compile(compiler_options=compiler_options)
  memory = compiled.memory_analysis()
  holder = [state]

  def run():
    holder[0], loss = compiled(holder[0], batch)
    float(loss)  # waits for the step, and a NaN would show in the loss

  peak = (memory.temp_size_in_bytes + memory.argument_size_in_bytes + memory.output_size_in_bytes
          - memory.alias_size_in_bytes)
  return run, peak


def diffusers_train_step(size, batch, device="cpu", autocast=False, compiled=False):
  """diffusers' Wan at `size` and its train step on `batch` (ours, channels last) as `run()`, which
  takes a step and waits for it. `autocast`: bf16 compute over fp32 weights; `compiled`: each
  transformer block through torch.compile (diffusers' regional compilation). AdamW is PyTorch's
  fused one on a GPU."""
  import torch  # pylint: disable=g-import-not-at-top
  from diffusers import WanTransformer3DModel  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  model = WanTransformer3DModel(
      patch_size=(1, 2, 2), num_attention_heads=size["heads"], attention_head_dim=size["dim"] // size["heads"],
      in_channels=16, out_channels=16, text_dim=size["text_dim"], ffn_dim=size["ffn_dim"],
      num_layers=size["layers"]).to(device).train()
  if compiled:
    model.compile_repeated_blocks(fullgraph=True)
  optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device == "cuda")
  tensors = {k: torch.from_numpy(np.asarray(v)).to(device) for k, v in batch.items()}
  latents = tensors["latents"].permute(0, 4, 1, 2, 3).contiguous()
  target = tensors["target"].permute(0, 4, 1, 2, 3).contiguous()

  def run():
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
      out = model(latents, tensors["timestep"], tensors["context"], return_dict=False)[0]
    loss = torch.mean(torch.square(out.float() - target))
    loss.backward()
    optimizer.step()
    float(loss.detach())  # waits for the step

  return run
