"""DiT train step on one accelerator (a GPU): ours (JAX) against diffusers' Wan (PyTorch), bf16.

  python benchmarks/dit_step_device.py [--sizes=bench,wan_1_3b] [--steps=10]

benchmarks/dit_step.py measures the CPU; this one measures the step where it is meant to run.
Both sides run the Wan core (no portrait controls) with fp32 weights and bf16 compute (ours:
`dtype=bfloat16`; diffusers: `torch.autocast`) and AdamW; diffusers keeps every activation, ours
takes the size's remat preset (configs/models/dit.py) unless --remat names another:
- `bench`: the CPU benchmark's shapes (dim 512, 8 layers; 1280 tokens, batch 2, 64 text tokens);
- `wan_1_3b`: Wan 1.3B (dim 1536, 30 layers) on 81 frames at 240x416 (latents 21x30x52: 8190
  tokens), batch 1, 512 text tokens.
For each size it prints our step time with each attention kernel of --attention (the first is the
one the ratio uses), diffusers' step time with PyTorch's fused AdamW, `*_ratio_vs_diffusers`
(their time over ours; with --diffusers_compile also against diffusers with every transformer
block compiled by torch.compile, `*_ratio_vs_diffusers_compiled`), the analytic model FLOPs of a step, our achieved TFLOP/s and its share
of a bf16 matmul peak measured in the same run (an 8192^3 product), and the peak memory of each
side (ours from XLA's memory analysis, theirs from PyTorch's allocator). Before timing, the
`cudnn` kernel is checked against an fp32 einsum attention on fresh random bf16 inputs, forward
and gradients (relative error), so a fast wrong kernel cannot pass as a result.

JAX is told not to preallocate device memory, so PyTorch can share the device in one process;
diffusers runs first and hands its memory back, since JAX's allocator keeps what it has taken.
Figures measured on one H200: docs/scaling.md.
Times are medians of --steps steps after warm-up steps. On a machine without a GPU it runs the
`xla` kernel and PyTorch on the CPU (use --sizes=tiny there: the big sizes take hours).
"""
import argparse
import gc
import os
import sys

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import torch  # pylint: disable=g-import-not-at-top

from configs.models import dit as dit_configs  # pylint: disable=g-import-not-at-top
from fp_jax.parallel import attention as attention_lib  # pylint: disable=g-import-not-at-top
from dit_train_step import compiled_train_step, diffusers_train_step, make_batch, wan_core  # pylint: disable=g-import-not-at-top
from timing import median_seconds  # pylint: disable=g-import-not-at-top  # benchmarks/timing.py
from wan_flops import train_step_flops  # pylint: disable=g-import-not-at-top

# Per size: batch, latent frames, rows, columns (16 channels each), text tokens.
SHAPES = {
    "tiny": (1, 2, 8, 8, 16),
    "bench": (2, 5, 32, 32, 64),
    "wan_1_3b": (1, 21, 30, 52, 512),
}
ON_GPU = jax.default_backend() == "gpu"
TORCH_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def ours(size, batch, attention, remat="none"):
  """Our compiled train step as a timed callable, and its peak memory in bytes."""
  return compiled_train_step(wan_core(size, attention=attention, scan_layers=True, remat=remat, dtype="bfloat16"),
                             batch)


def theirs(size, batch, compiled=False):
  """diffusers' train step as a timed callable (bf16 autocast), and the function that reads its
  peak memory."""
  run = diffusers_train_step(size, batch, TORCH_DEVICE, autocast=True, compiled=compiled)
  if TORCH_DEVICE == "cuda":
    torch.cuda.reset_peak_memory_stats()
    return run, torch.cuda.max_memory_allocated
  return run, lambda: float("nan")


def timed_theirs(size, batch, steps, compiled=False):
  """diffusers' median step seconds and peak memory; its device memory is handed back after."""
  run, peak = theirs(size, batch, compiled)
  seconds = median_seconds(run, steps, warmups=3)
  memory = peak()
  del run
  gc.collect()
  if TORCH_DEVICE == "cuda":
    torch.cuda.empty_cache()  # JAX's allocator keeps what it takes: PyTorch goes first, then hands back
  return seconds, memory


def matmul_peak(steps):
  """bf16 matmul FLOP/s: an 8192^3 product (fp32 accumulation), median of `steps`."""
  n = 8192 if ON_GPU else 1024
  keys = jax.random.split(jax.random.key(0), 2)
  a, b = (jax.random.normal(key, (n, n), jnp.bfloat16) for key in keys)
  dot = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32))
  seconds = median_seconds(lambda: dot(a, b).block_until_ready(), steps, warmups=3)
  return 2 * n ** 3 / seconds


def relative_error(x, reference):
  x, reference = np.asarray(x, np.float64), np.asarray(reference, np.float64)
  return float(np.linalg.norm(x - reference) / np.linalg.norm(reference))


def check_kernel(name, tokens, heads, head_dim, seed):
  """Forward and gradient relative errors of kernel `name` against an fp32 einsum attention."""
  keys = jax.random.split(jax.random.key(seed), 4)
  q, k, v, cotangent = (jax.random.normal(key, (1, tokens, heads, head_dim), jnp.bfloat16) for key in keys)
  kernel = attention_lib.get_kernel(name)
  upcast = lambda x: x.astype(jnp.float32)

  def with_grads(fn, q, k, v):
    out, vjp = jax.vjp(fn, q, k, v)
    return (out, *vjp(cotangent.astype(out.dtype)))

  got = jax.jit(lambda q, k, v: with_grads(kernel, q, k, v))(q, k, v)
  want = jax.jit(lambda q, k, v: with_grads(attention_lib.einsum_attention, q, k, v))(upcast(q), upcast(k), upcast(v))
  return [relative_error(g, w) for g, w in zip(got, want)]


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--sizes", default="bench,wan_1_3b")
  parser.add_argument("--attention", default="cudnn,xla" if ON_GPU else "xla",
                      help="our kernels to time, comma-separated; the first is compared with diffusers")
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--diffusers_compile", action="store_true",
                      help="also time diffusers with its blocks compiled (torch.compile)")
  parser.add_argument("--remat", default="",
                      help="our remat policy; default: the size's preset (diffusers keeps every activation)")
  args = parser.parse_args()
  kernels = args.attention.split(",")
  print(f"device: {jax.devices()[0].device_kind} (jax {jax.__version__}, torch {torch.__version__} on "
        f"{TORCH_DEVICE})")
  peak = matmul_peak(args.steps)
  print(f"matmul_peak_bf16: {peak / 1e12:.1f} TFLOP/s")
  for name in kernels:
    if name != "einsum":
      errors = check_kernel(name, 1280, 8, 64, seed=1)
      print(f"attention_{name}_rel_error_out_dq_dk_dv: " + " ".join(f"{e:.1e}" for e in errors))
  for size_name in args.sizes.split(","):
    preset = dit_configs.get_config(size_name)
    size = {key: preset[key] for key in ("dim", "heads", "layers", "ffn_dim", "text_dim")}
    shape = SHAPES[size_name]
    batch = make_batch(size, shape)
    tokens = shape[1] * (shape[2] // 2) * (shape[3] // 2)
    flops = train_step_flops(size, tokens, shape[4], shape[0])
    print(f"{size_name}_tokens: {tokens} (our remat: {args.remat or preset.remat})")
    print(f"{size_name}_step_flops: {flops / 1e12:.2f} TFLOP")
    their_time, their_memory = timed_theirs(size, batch, args.steps)
    print(f"{size_name}_diffusers_step_time: {their_time * 1000:.1f} ms")
    print(f"{size_name}_diffusers_tflops: {flops / their_time / 1e12:.1f} TFLOP/s")
    print(f"{size_name}_diffusers_peak_memory: {their_memory / 2**30:.2f} GiB")
    if args.diffusers_compile:
      compiled_time, compiled_memory = timed_theirs(size, batch, args.steps, compiled=True)
      print(f"{size_name}_diffusers_compiled_step_time: {compiled_time * 1000:.1f} ms")
      print(f"{size_name}_diffusers_compiled_peak_memory: {compiled_memory / 2**30:.2f} GiB")
    our_times = {}
    for name in kernels:
      run, memory = ours(size, batch, name, args.remat or preset.remat)
      our_times[name] = median_seconds(run, args.steps, warmups=3)
      print(f"{size_name}_ours_{name}_step_time: {our_times[name] * 1000:.1f} ms")
      print(f"{size_name}_ours_{name}_tflops: {flops / our_times[name] / 1e12:.1f} TFLOP/s")
      print(f"{size_name}_ours_{name}_matmul_peak_share: {flops / our_times[name] / peak:.2f}")
      print(f"{size_name}_ours_{name}_peak_memory: {memory / 2**30:.2f} GiB")
      del run  # frees our training state before the next one is built
    print(f"{size_name}_ratio_vs_diffusers: {their_time / our_times[kernels[0]]:.2f}")
    if args.diffusers_compile:
      print(f"{size_name}_ratio_vs_diffusers_compiled: {compiled_time / our_times[kernels[0]]:.2f}")


if __name__ == "__main__":
  main()
