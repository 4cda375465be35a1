"""Input pipeline throughput, and how long a training loop waits for it.

  python benchmarks/input_pipeline.py [--data_dir=outputs/bench/data] [--batches=12]

Builds the `tiny` and `demo` datasets under --data_dir if they are missing. Prints, per config
and worker count (0, 1, 2), `batches_per_s` (median of 3 timed runs after a warm-up batch), the
batch size and the bytes per batch. Then runs a training loop at the demo config, with the
pipeline's default workers and device prefetch on 8 simulated devices, and prints the loop's
median step time and `data_wait_share`: the time spent in `next(batches)` over the loop's total.

First, the cost of one latent-cache record (data_pipeline/latent_cache.py) at the demo's shapes:
`cached_record_decode_ms_safetensors` (today's records) against `cached_record_decode_ms_npz`
(the .npz records of earlier caches), medians of interleaved decodes in one run.

The step is a stand-in until the trainer exists: a jitted forward and backward pass of a small
3D conv net over the batch's video, normal and ray maps, sharded over the batch like the real one.
"""
import argparse
import os
import sys
import time

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # pylint: disable=g-import-not-at-top

from configs.data import input as input_config  # pylint: disable=g-import-not-at-top
from data_pipeline import input_pipeline, latent_cache  # pylint: disable=g-import-not-at-top
from bench_data import ensure_dataset  # pylint: disable=g-import-not-at-top  # benchmarks/bench_data.py


def batches_per_second(config, batches, runs=3):
  rates = []
  for _ in range(runs):
    iterator = input_pipeline.make_iterator(config)
    batch = next(iterator)  # start-up: workers spawn, first batch
    start = time.perf_counter()
    for _ in range(batches):
      next(iterator)
    rates.append(batches / (time.perf_counter() - start))
    iterator.close()
  size = sum(np.asarray(value).nbytes for value in batch.values())
  return float(np.median(rates)), size


def cached_record_decode_ms(rounds=300):
  """Median ms to decode a latent-cache record of the demo's shapes, safetensors then npz."""
  rng = np.random.default_rng(0)
  floats = lambda *shape: rng.standard_normal(shape).astype(np.float32)
  record = dict(latents=floats(5, 8, 8, 16), normals=floats(5, 8, 8, 16), references=floats(17, 8, 8, 16),
                expression=floats(17, 512), head_pose=floats(17, 10), intrinsics=floats(17, 3, 3),
                extrinsics=floats(17, 3, 4), identity=np.int64(3), record=np.int64(7), start_frame=np.int64(0))
  encoded = {name: latent_cache._encode(record, name) for name in ("safetensors", "npz")}  # pylint: disable=protected-access
  times = {name: [] for name in encoded}
  for _ in range(rounds):
    for name, data in encoded.items():
      start = time.perf_counter()
      latent_cache._decode(data, name)  # pylint: disable=protected-access
      times[name].append(time.perf_counter() - start)
  return {name: 1000 * float(np.median(values)) for name, values in times.items()}


def stand_in_step():
  """A jitted train step of a small 3D conv net over the batch (forward and backward)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  def features(batch):
    video = batch["video"].astype(jnp.float32) / 127.5 - 1
    normals = batch["normals"].astype(jnp.float32) / 127.5 - 1
    return jnp.concatenate([video, normals, batch["rays"].astype(jnp.float32)], axis=-1)

  def loss(weights, batch):
    x = features(batch)
    for layer, kernel in enumerate(weights):
      strides = (1, 4, 4) if layer == 0 else (1, 2, 2)  # a VAE-like 8x spatial reduction
      x = jax.nn.gelu(jax.lax.conv_general_dilated(
          x, kernel, strides, "SAME", dimension_numbers=("NDHWC", "DHWIO", "NDHWC")))
    return jnp.mean(x ** 2)

  widths = (12, 32, 64, 64)
  keys = jax.random.split(jax.random.key(0), len(widths) - 1)
  weights = [0.1 * jax.random.normal(k, (3, 3, 3, a, b)) for k, a, b in zip(keys, widths, widths[1:])]

  @jax.jit
  def step(weights, batch):
    value, grads = jax.value_and_grad(loss)(weights, batch)
    return [w - 1e-3 * g for w, g in zip(weights, grads)], value

  return step, weights


def training_loop_wait(config, steps):
  import jax  # pylint: disable=g-import-not-at-top
  from fp_jax.parallel import global_batches, mesh as mesh_lib  # pylint: disable=g-import-not-at-top

  mesh = mesh_lib.make_mesh({"data": -1})
  mesh_lib.check_global_batch(config.global_batch_size, mesh)
  batches = global_batches.GlobalBatchIterator(input_pipeline.make_iterator(config), mesh,
                                               prefetch=config.device_prefetch)
  step, weights = stand_in_step()
  for _ in range(3):  # compile and warm up; workers fill their buffers
    weights, value = step(weights, next(batches))
  jax.block_until_ready(value)
  waits, totals = [], []
  for _ in range(steps):
    start = time.perf_counter()
    batch = next(batches)
    waited = time.perf_counter() - start
    weights, value = step(weights, batch)
    jax.block_until_ready(value)
    waits.append(waited)
    totals.append(time.perf_counter() - start)
  batches.close()
  return float(np.sum(waits) / np.sum(totals)), float(np.median(totals)), float(np.median(waits))


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--data_dir", default="outputs/bench/data")
  parser.add_argument("--batches", type=int, default=12)
  parser.add_argument("--steps", type=int, default=20)
  args = parser.parse_args()
  decode = cached_record_decode_ms()
  for name, milliseconds in decode.items():
    print(f"cached_record_decode_ms_{name}: {milliseconds:.3f} ms")
  print(f"cached_record_decode_npz_over_safetensors: {decode['npz'] / decode['safetensors']:.1f}")
  for name in ("tiny", "demo"):
    ensure_dataset(name, args.data_dir)
    for workers in (0, 1, 2):
      config = input_config.get_config(name)
      config.data_dir = args.data_dir
      config.workers.count = workers
      rate, size = batches_per_second(config, args.batches)
      print(f"{name}_workers{workers}_batches_per_s: {rate:.2f} batches/s")
    print(f"{name}_batch_size: {config.global_batch_size} examples")
    print(f"{name}_batch_bytes: {size / 2**20:.1f} MiB")
  config = input_config.get_config("demo")
  config.data_dir = args.data_dir
  share, step_time, wait = training_loop_wait(config, args.steps)
  print(f"demo_workers: {config.workers.count}")
  print(f"demo_step_time: {step_time * 1000:.0f} ms")
  print(f"demo_data_wait: {wait * 1000:.1f} ms")
  print(f"data_wait_share: {share:.3f}")


if __name__ == "__main__":
  main()
