"""DiT train step (forward + backward + AdamW): ours (JAX) against diffusers' Wan (PyTorch).

  python benchmarks/dit_step.py [--steps=7]

Both run the Wan core (no portrait controls) at the `bench` size of configs/models/dit.py (ours
with that config's layer layout, unrolled):
8 layers, dim 512, 8 heads, ffn 2048, on 1280 video tokens (5 x 32 x 32 latents, patch 1x2x2),
batch 2, with a 64-token text context, fp32, on this machine's CPU. Prints the median step
times, `ratio_vs_diffusers` (their step time over ours), the model FLOPs of one step (counted
analytically: 3x the forward's matmuls and attention), our achieved FLOP/s, a matmul peak
(a 2048^3 fp32 jnp.dot) and `matmul_peak_share`, and our step's peak memory from XLA's memory
analysis. The two steps and the matmul take turns, once each per round, for --steps rounds
(diffusers in a process of its own); the ratio and the share are medians of the per-round
figures, so both sides of each comparison ran in the same minutes (this machine's speed drifts
by a third within minutes).

Where the gap is: one layer's self-attention (forward + backward at the bench shapes: the bench
config's kernel, `blockwise`, against PyTorch's scaled_dot_product_attention) and one
feed-forward (matmul, GELU(tanh), matmul), timed alone in each framework, as
`attention_fwd_bwd_*` and `ffn_fwd_bwd_*`; and each step's minor page faults and kernel time
(`*_page_faults_per_step`, `*_kernel_time_per_step`).

With --profile, our step's wall time split by the kind of XLA thunk running (a profiler trace of
two steps, benchmarks/cpu_profile.py): `ours_matmul_in_step`, `ours_elementwise_in_step` and
`ours_idle_in_step` (no thunk running).

With --breakdown, what the self-attention and the text cross-attention cost inside our step, where
XLA overlaps them with other work: each round also times our step with that attention swapped
for a stand-in that reads q, k and v in one cheap elementwise pass (so their projections and
gradients stay), and prints the median per-round differences as `ours_self_attention_in_step`
and `ours_cross_attention_in_step`, with what is left as `ours_rest_of_step`.
"""
import argparse
import multiprocessing
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from fp_jax.host_memory import keep_freed_memory_on_cpu  # pylint: disable=g-import-not-at-top
keep_freed_memory_on_cpu()  # as the fp-* commands do, before any thread takes a malloc arena

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import torch  # pylint: disable=g-import-not-at-top

from configs.models import dit as dit_configs  # pylint: disable=g-import-not-at-top
from fp_jax.models.dit_config import DiTConfig  # pylint: disable=g-import-not-at-top
from dit_train_step import BENCH_BATCH, compiled_train_step, diffusers_train_step, make_batch, wan_core  # pylint: disable=g-import-not-at-top
from cpu_profile import time_by_kind  # pylint: disable=g-import-not-at-top  # benchmarks/cpu_profile.py
from timing import counted_seconds, median_seconds  # pylint: disable=g-import-not-at-top  # benchmarks/timing.py
from wan_flops import train_step_flops  # pylint: disable=g-import-not-at-top

BATCH, FRAMES, HEIGHT, WIDTH, TEXT = BENCH_BATCH


class WithoutSelfAttention(DiTConfig):
  """The bench model with a stand-in for its self-attention (--breakdown)."""

  def self_attention(self, q, k, v):
    return v * jnp.mean(q * k, axis=1, keepdims=True)


class WithoutCrossAttention(DiTConfig):
  """The bench model with a stand-in for its text cross-attention (--breakdown)."""

  def cross_attention(self, q, k, v):
    return q * jnp.mean(k * v, axis=1, keepdims=True)


def ours(size, batch, scan_layers, attention, config_class=DiTConfig):
  """Our train step as a timed callable, and its peak memory."""
  return compiled_train_step(wan_core(size, config_class, attention=attention, scan_layers=scan_layers), batch)


def theirs(size, batch):
  """diffusers' train step as a timed callable (fp32)."""
  return diffusers_train_step(size, batch)


def parts_ms(size, tokens, steps, attention):
  """fwd+bwd ms of one layer's self-attention and feed-forward: (ours, torch) for each."""
  from fp_jax.parallel.attention import get_kernel  # pylint: disable=g-import-not-at-top
  d, heads, f = size["dim"], size["heads"], size["ffn_dim"]
  rng = np.random.default_rng(1)
  q, k, v = (rng.standard_normal((BATCH, tokens, heads, d // heads)).astype(np.float32) for _ in range(3))
  x = rng.standard_normal((BATCH * tokens, d)).astype(np.float32)
  w1, w2 = (0.02 * rng.standard_normal(shape).astype(np.float32) for shape in ((d, f), (f, d)))
  kernel = get_kernel(attention)
  attention = jax.jit(jax.grad(lambda q, k, v: jnp.sum(jnp.square(kernel(q, k, v))), argnums=(0, 1, 2)))
  ffn = jax.jit(jax.grad(lambda x, w1, w2: jnp.sum(jnp.square(jax.nn.gelu(x @ w1, approximate=True) @ w2)),
                         argnums=(0, 1, 2)))
  jq, jk, jv, jx, jw1, jw2 = map(jnp.asarray, (q, k, v, x, w1, w2))
  ours_attention = median_seconds(lambda: jax.block_until_ready(attention(jq, jk, jv)), steps, warmups=2)
  ours_ffn = median_seconds(lambda: jax.block_until_ready(ffn(jx, jw1, jw2)), steps, warmups=2)
  tq, tk, tv = (torch.from_numpy(a).transpose(1, 2).contiguous().requires_grad_() for a in (q, k, v))
  tx, tw1, tw2 = (torch.from_numpy(a).requires_grad_() for a in (x, w1, w2))

  def torch_attention():
    torch.square(torch.nn.functional.scaled_dot_product_attention(tq, tk, tv)).sum().backward()

  def torch_ffn():
    torch.square(torch.nn.functional.gelu(tx @ tw1, approximate="tanh") @ tw2).sum().backward()

  their_attention = median_seconds(torch_attention, steps, warmups=2)
  their_ffn = median_seconds(torch_ffn, steps, warmups=2)
  return [1000 * t for t in (ours_attention, their_attention, ours_ffn, their_ffn)]


def matmul():
  a = jnp.ones((2048, 2048), jnp.float32)
  dot = jax.jit(lambda x, y: x @ y)
  return lambda: dot(a, a).block_until_ready()


def diffusers_worker(connection, size, batch):
  """diffusers' step in a process of its own, timed on request: neither framework's allocator or
  thread pool touches the other's between turns; only the cores are shared."""
  torch.set_num_threads(os.cpu_count())
  run = theirs(size, batch)
  median_seconds(run, 1, warmups=2)
  connection.send("ready")
  while connection.recv() == "step":
    connection.send(counted_seconds(run))


def interleaved(our_step, peak_matmul, size, batch, rounds, ablated_steps=()):
  """Seconds of our step, diffusers' step and three matmuls in each round, taking turns within a
  round, so that every round compares them in the same minutes of a machine whose speed drifts;
  then each step's minor page faults and kernel seconds (ours, then diffusers'); then the seconds
  of each of `ablated_steps`, taken in the same round."""
  context = multiprocessing.get_context("spawn")
  connection, child_end = context.Pipe()
  worker = context.Process(target=diffusers_worker, daemon=True,
                           args=(child_end, size, batch))
  worker.start()
  connection.recv()
  for step in (our_step, *ablated_steps):
    median_seconds(step, 1, warmups=2)
  rows = []
  for _ in range(rounds):
    ours_seconds, ours_faults, ours_kernel = counted_seconds(our_step)
    connection.send("step")
    their_seconds, their_faults, their_kernel = connection.recv()
    rows.append([ours_seconds, their_seconds, median_seconds(lambda: [peak_matmul() for _ in range(3)], 1, warmups=0),
                 ours_faults, ours_kernel, their_faults, their_kernel]
                + [median_seconds(step, 1, warmups=0) for step in ablated_steps])
  connection.send("stop")
  worker.join()
  return np.asarray(rows)


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--steps", type=int, default=7)
  parser.add_argument("--breakdown", action="store_true",
                      help="also time the step with each attention swapped for a stand-in")
  parser.add_argument("--profile", action="store_true",
                      help="also split our step's time by the kind of XLA thunk running (benchmarks/cpu_profile.py)")
  args = parser.parse_args()
  torch.set_num_threads(os.cpu_count())
  bench = dit_configs.get_config("bench")
  size = {key: bench[key] for key in ("dim", "heads", "layers", "ffn_dim", "text_dim")}
  batch = make_batch(size)
  tokens = FRAMES * (HEIGHT // 2) * (WIDTH // 2)
  our_step, our_memory = ours(size, batch, bench.scan_layers, bench.attention)
  peak_of = lambda seconds: 2 * 2048 ** 3 / seconds
  ablated = [ours(size, batch, bench.scan_layers, bench.attention, config_class)[0]
             for config_class in ((WithoutSelfAttention, WithoutCrossAttention) if args.breakdown else ())]
  times = interleaved(our_step, matmul(), size, batch, args.steps, ablated)
  our_time, their_time = np.median(times[:, 0]), np.median(times[:, 1])
  peaks = peak_of(times[:, 2] / 3)  # each round times three matmuls
  peak = np.median(peaks)
  flops = train_step_flops(size, tokens, TEXT, BATCH)
  attention_ours, attention_torch, ffn_ours, ffn_torch = parts_ms(size, tokens, args.steps, bench.attention)
  print(f"tokens: {tokens}")
  print(f"ours_step_time: {our_time * 1000:.0f} ms")
  print(f"diffusers_step_time: {their_time * 1000:.0f} ms")
  print(f"ratio_vs_diffusers: {np.median(times[:, 1] / times[:, 0]):.2f}")
  print(f"step_flops: {flops / 1e9:.1f} GFLOP")
  print(f"ours_flops_per_s: {flops / our_time / 1e9:.1f} GFLOP/s")
  print(f"matmul_peak: {peak / 1e9:.1f} GFLOP/s")
  print(f"matmul_peak_share: {np.median(flops / times[:, 0] / peaks):.2f}")
  print(f"ours_peak_memory: {our_memory / 2**20:.0f} MiB")
  # Both processes keep freed memory mapped (fp_jax/host_memory.py), as the fp-* commands do. With
  # FP_KEEP_HOST_MEMORY=0 our step's 2.4 GB of temporaries are faulted in afresh every step: ~530k
  # faults, and on a 2-core VM 1.33x the step time (median of 8 interleaved rounds).
  print(f"ours_page_faults_per_step: {np.median(times[:, 3]):.0f}")
  print(f"ours_kernel_time_per_step: {np.median(times[:, 4]) * 1000:.0f} ms")
  print(f"diffusers_page_faults_per_step: {np.median(times[:, 5]):.0f}")
  print(f"diffusers_kernel_time_per_step: {np.median(times[:, 6]) * 1000:.0f} ms")
  print(f"attention_fwd_bwd_ours: {attention_ours:.0f} ms")
  print(f"attention_fwd_bwd_torch_sdpa: {attention_torch:.0f} ms")
  print(f"ffn_fwd_bwd_ours: {ffn_ours:.0f} ms")
  print(f"ffn_fwd_bwd_torch: {ffn_torch:.0f} ms")
  if args.profile:
    # Wall time of two traced steps by what ran: the matrix products (and what XLA fused into
    # them), everything else, and nothing (the thunk executor between thunks).
    for kind, ms in sorted(time_by_kind(our_step).items()):
      print(f"ours_{kind}_in_step: {ms:.0f} ms")
  if args.breakdown:
    # The ablated steps' seconds are the last columns of each round, in the order of `ablated`.
    self_attention, cross_attention = np.median(times[:, :1] - times[:, -len(ablated):], axis=0)
    print(f"ours_self_attention_in_step: {self_attention * 1000:.0f} ms")
    print(f"ours_cross_attention_in_step: {cross_attention * 1000:.0f} ms")
    print(f"ours_rest_of_step: {(our_time - self_attention - cross_attention) * 1000:.0f} ms")


if __name__ == "__main__":
  main()
