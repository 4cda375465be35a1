"""The programs a pod runs, built from abstract shapes: the dit train step and one sampling step.

Nothing here allocates a parameter or reads data: the model, frozen parts, optimizer state and
batch are `jax.ShapeDtypeStruct`s carrying the shardings the trainer would give them, so the
step lowers for any mesh, including one of compile-only TPU devices.

The train batch has the cached-latents layout (data_pipeline/latent_cache.py), which is what
pods train on: the frozen VAE and expression encoder are arguments of the step but do no work.
"""
import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from data_pipeline import rays
from data_pipeline.errors import require
from fp_jax.diffusion import flow, guidance, samplers
from fp_jax.models.build import abstract_sharded
from fp_jax.parallel import mesh as mesh_lib
from fp_jax.parallel.global_batches import batch_sharding
from fp_jax.parallel.sharding import use_mesh
from fp_jax.train import flops as flops_lib
from fp_jax.train.step import TrainStep
from fp_jax.train.tasks import get_task
from fp_jax.train.trainer import abstract_state

JOBS = ("train", "sample")
HYBRID = ("none", "reference", "all")  # the three guidance branches, batched in one forward


@dataclasses.dataclass
class Video:
  frames: int
  height: int
  width: int

  def latent_shape(self, config):
    stride_t, stride_h, stride_w = 4, 8, 8  # the causal VAE: 1 + 4k frames -> 1 + k, 8x8 pixels
    require((self.frames - 1) % stride_t == 0, f"--video: {self.frames} frames are not 1 + 4k")
    require(self.height % 16 == 0 and self.width % 16 == 0,
            f"--video: {self.height}x{self.width} is not a multiple of 16 (VAE stride 8 x patch 2)")
    return (1 + (self.frames - 1) // stride_t, self.height // stride_h, self.width // stride_w,
            config.vae.z_dim)


@dataclasses.dataclass
class Program:
  fn: object  # a jitted function
  args: tuple  # abstract arguments with shardings
  arg_names: tuple
  samples: int  # videos per step
  tokens: int  # DiT tokens per video
  mesh: object
  rules: tuple

  def lower(self):
    with use_mesh(self.mesh, self.rules):
      return self.fn.lower(*self.args)

  def jaxpr_flops(self):
    """FLOPs counted on the traced step (scan bodies times their length)."""
    with use_mesh(self.mesh, self.rules):
      return flops_lib.step_flops(self.fn, *self.args)


def _batch_arrays(config, video, batch, mesh, rays_dtype):
  """What one global batch of cached latents holds, split over the batch axes."""
  latent = video.latent_shape(config)
  sharding = batch_sharding(mesh)
  array = lambda shape, dtype=jnp.float32: jax.ShapeDtypeStruct((batch, *shape), dtype, sharding=sharding)
  arrays = dict(
      latents=array(latent), reference_latent=array(latent[1:]), normals_latents=array(latent),
      expression_codes=array((video.frames, config.motion.expression_dim)),
      rays=array((*latent[:3], math.prod(rays.VAE_STRIDE) * 6), jnp.dtype(rays_dtype)),  # folded on the host
      head_pose=array((video.frames, 10)))
  if config.model.get("warped_reference", False):
    arrays["warped_latents"] = array(latent)
  return arrays


def _tokens(config, latent):
  patch = config.model.get("patch", (1, 2, 2))
  return (latent[0] // patch[0]) * (latent[1] // patch[1]) * (latent[2] // patch[2])


def train_program(config, mesh, rules, video):
  """The trainer's step (fp_jax/train/step.py), donated state and all, for `mesh`."""
  batch_size = config.input.global_batch_size
  mesh_lib.check_global_batch(batch_size, mesh)
  task = get_task(config)
  graphdef, params = abstract_sharded(lambda: task.make_model(nnx.Rngs(config.seed)), mesh, rules)
  frozen_graphdef, frozen = abstract_sharded(lambda: nnx.Dict(task.make_frozen(nnx.Rngs(config.seed + 1))),
                                             mesh, rules)
  with use_mesh(mesh, rules):
    step = TrainStep(config, task, graphdef, frozen_graphdef)
  state = abstract_state(params, step.tx, config.seed, mesh, rules, step.offloaded)  # as the trainer makes it
  replicated = NamedSharding(mesh, PartitionSpec())
  batch = _batch_arrays(config, video, batch_size, mesh, config.input.rays_dtype)
  flag = lambda dtype: jax.ShapeDtypeStruct((batch_size,), dtype, sharding=batch_sharding(mesh))
  batch.update({f"drop_{name}": flag(jnp.bool_) for name in ("reference", "expression", "pose", "camera")})
  batch.update({name: flag(jnp.int32) for name in ("identity", "record", "start_frame")})
  state_shardings = jax.tree.map(lambda x: x.sharding, state)
  fn = jax.jit(step._train_step, donate_argnums=0,  # pylint: disable=protected-access
               out_shardings=(state_shardings, replicated))
  latent = video.latent_shape(config)
  return Program(fn, (state, frozen, batch), ("state", "frozen", "batch"), batch_size,
                 _tokens(config, latent), mesh, rules)


def sample_program(config, mesh, rules, video, batch_size):
  """One guided Euler step: the DiT on the three hybrid-guidance branches at once, then the update."""
  task = get_task(config)
  shards = mesh_lib.batch_shards(mesh)
  graphdef, params = abstract_sharded(lambda: task.make_model(nnx.Rngs(config.seed)), mesh, rules)

  def sample_step(params, latents, sigma, next_sigma, weights, conditions):
    model = nnx.merge(graphdef, params)
    timestep = flow.timesteps(jnp.full((latents.shape[0],), sigma))
    velocity = guidance.guided_velocity(model, latents, timestep, conditions, HYBRID, weights, pad_to=shards)
    return samplers.update("euler", latents, velocity, sigma, next_sigma)

  arrays = _batch_arrays(config, video, batch_size, mesh, config.input.rays_dtype)
  if batch_size % shards:  # a batch that does not split is replicated (the branches still do)
    arrays = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=NamedSharding(
        mesh, PartitionSpec())), arrays)
  conditions = dict(reference=arrays["reference_latent"], normals=arrays["normals_latents"],
                    rays=arrays["rays"], expression=arrays["expression_codes"], head_pose=arrays["head_pose"])
  if "warped_latents" in arrays:
    conditions["warped"] = arrays["warped_latents"]
  scalar = jax.ShapeDtypeStruct((), jnp.float32, sharding=NamedSharding(mesh, PartitionSpec()))
  weights = jax.ShapeDtypeStruct((len(HYBRID),), jnp.float32, sharding=NamedSharding(mesh, PartitionSpec()))
  latents = arrays["latents"]
  fn = jax.jit(sample_step, donate_argnums=1, out_shardings=latents.sharding)
  return Program(fn, (params, latents, scalar, scalar, weights, conditions),
                 ("params", "latents", "sigma", "next_sigma", "weights", "conditions"), batch_size,
                 _tokens(config, video.latent_shape(config)), mesh, rules)


def build(job, config, mesh, rules, video, sample_batch=None):
  require(job in JOBS, f"--job must be one of {JOBS}, got {job!r}")
  require(config.task == "dit", f"fp-aot compiles the dit task's steps; this config's task is {config.task!r}")
  if job == "train":
    return train_program(config, mesh, rules, video)
  return sample_program(config, mesh, rules, video, sample_batch or config.input.global_batch_size)
