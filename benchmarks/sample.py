"""Sampling step cost: 1, 2 and 3 guidance branches against the bare DiT forward.

  python benchmarks/sample.py [--repeats=5] [--size=bench]

The `bench` DiT (8 layers, dim 512) with every portrait control, on one 17-frame window at
128x128 (5 x 16 x 16 latents, 320 tokens), fp32, this machine's CPU, one device. It times the
compiled sampling step of `fp-sample` (fp_jax/sample/pipeline.py: branches batched into one
forward, guidance combination, window blending, multistep update) with guidance `off`, `cfg` and
`hybrid`, and the bare model forward at batch 1 and 3 on the same inputs. Prints medians and
  sampler_overhead: step(1 branch) / forward(batch 1) - 1   (goal <= 0.05)
  cfg3_vs_batch3:   step(3 branches) / forward(batch 3)     (goal <= 1.1)
"""
import argparse
import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from fp_jax.host_memory import keep_freed_memory_on_cpu  # pylint: disable=g-import-not-at-top
keep_freed_memory_on_cpu()  # as the fp-* commands do, before any thread takes a malloc arena

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
from flax import nnx  # pylint: disable=g-import-not-at-top

from configs import tiny  # pylint: disable=g-import-not-at-top
from configs.models import dit as dit_configs  # pylint: disable=g-import-not-at-top
from fp_jax.diffusion import guidance  # pylint: disable=g-import-not-at-top
from fp_jax.models.build import create_sharded  # pylint: disable=g-import-not-at-top
from fp_jax.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
from fp_jax.parallel.sharding import DEFAULT_RULES, use_mesh  # pylint: disable=g-import-not-at-top
from fp_jax.sample import models as models_lib, pipeline, windows  # pylint: disable=g-import-not-at-top
from fp_jax.train.tasks import common, get_task  # pylint: disable=g-import-not-at-top

FRAMES, HEIGHT, WIDTH = 17, 128, 128


def random_models(config, mesh):
  make = lambda build: create_sharded(build, mesh, DEFAULT_RULES)
  return models_lib.Models(
      dit=make(lambda: get_task(config).make_model(nnx.Rngs(0))),
      vae=make(lambda: common.make_vae(config, nnx.Rngs(1))),
      expression=make(lambda: common.make_expression_encoder(config, nnx.Rngs(2))),
      pose=make(lambda: common.make_pose_encoder(config, nnx.Rngs(3))), step=0, workdir="")


def inputs(config, rng):
  latent_frames, h, w = (FRAMES - 1) // 4 + 1, HEIGHT // 8, WIDTH // 8
  latents = rng.standard_normal((1, latent_frames, h, w, 16)).astype(np.float32)
  conditions = dict(
      reference=rng.standard_normal((1, h, w, 16)).astype(np.float32),
      normals=rng.standard_normal((1, latent_frames, h, w, 16)).astype(np.float32),
      rays=rng.standard_normal((1, FRAMES, HEIGHT, WIDTH, 6)).astype(np.float32),
      expression=rng.standard_normal((1, FRAMES, config.model.expression_dim)).astype(np.float32),
      head_pose=rng.standard_normal((1, FRAMES, 10)).astype(np.float32))
  return latents, {k: jnp.asarray(v) for k, v in conditions.items()}


def interleaved_medians(calls, repeats):
  """Median seconds of each call, timed in rounds (one of each per round) so that a noisy
  neighbour slows every call alike instead of whichever ran during the noise."""
  for call in calls.values():
    call()  # compile and warm up
  samples = {name: [] for name in calls}
  for _ in range(repeats):
    for name, call in calls.items():
      start = time.perf_counter()
      call()
      samples[name].append(time.perf_counter() - start)
  return {name: float(np.median(values)) for name, values in samples.items()}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--size", default="bench")
  args = parser.parse_args()
  config = tiny.get_config("dit")
  config.model = dit_configs.get_config(args.size)
  config.input.window.num_frames = FRAMES
  config.sample.update(height=HEIGHT, width=WIDTH)
  mesh = mesh_lib.make_mesh(dict(data=1, fsdp=1, context=1, tensor=1), jax.devices()[:1])
  models = random_models(config, mesh)
  latents, conditions = inputs(config, np.random.default_rng(0))
  _, dit_state = nnx.split(models.dit)
  dit_graphdef = nnx.graphdef(models.dit)
  plan = windows.plan(latents.shape[1] - 1, latents.shape[1] - 1, 0)
  x = jnp.asarray(latents[:, 1:])
  print(f"model: {args.size}, tokens: {latents.shape[1] * (HEIGHT // 16) * (WIDTH // 16)}, "
        f"devices: 1 ({jax.devices()[0].platform})")

  with use_mesh(mesh, DEFAULT_RULES):
    forward = jax.jit(lambda state, x, t, c: nnx.merge(dit_graphdef, state)(x, t, None, **c))

    def forward_call(batch):
      tiled = lambda a: jnp.concatenate([a] * batch)
      call_args = (dit_state, tiled(jnp.asarray(latents)), jnp.full((batch,), 500.0),
                   {k: tiled(v) for k, v in conditions.items()})
      return lambda: jax.block_until_ready(forward(*call_args))

    def step_call(mode):
      with config.sample.unlocked():
        config.sample.guidance.mode = mode
      job = pipeline.Pipeline(config, models, mesh, DEFAULT_RULES)
      step, weights = job.step_function(plan), job.guidance.weights(0.5)
      state = {"x": jnp.array(x, copy=True), "v": jnp.zeros_like(x)}

      def run():  # the step donates x and the previous velocity, as in fp-sample's loop
        state["x"], state["v"] = step(dit_state, state["x"], np.float32(0.5), np.float32(0.45), state["v"],
                                      np.float32(-0.05), weights, conditions)
        jax.block_until_ready(state["x"])
      return run

    calls = {"forward_batch1": forward_call(1), "forward_batch3": forward_call(3)}
    for mode in ("off", "cfg", "hybrid"):
      calls[f"step_{len(guidance.MODE_BRANCHES[mode])}_branches"] = step_call(mode)
    times = interleaved_medians(calls, args.repeats)
  for name, seconds in times.items():
    print(f"{name}_ms: {1000 * seconds:.1f} ms")
  step_times = {n: times[f"step_{n}_branches"] for n in (1, 2, 3)}
  forward_times = {n: times[f"forward_batch{n}"] for n in (1, 3)}
  print(f"branch2_vs_branch1: {step_times[2] / step_times[1]:.3f} x")
  print(f"branch3_vs_branch1: {step_times[3] / step_times[1]:.3f} x")
  print(f"sampler_overhead: {step_times[1] / forward_times[1] - 1:.4f}")
  print(f"cfg3_vs_batch3: {step_times[3] / forward_times[3]:.3f}")


if __name__ == "__main__":
  main()
