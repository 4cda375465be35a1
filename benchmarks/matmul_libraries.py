"""XLA:CPU's matrix products by library, against PyTorch's: what bounds ratio_vs_diffusers here.

  python benchmarks/matmul_libraries.py [--rounds=9] [--no_step]

XLA:CPU hands its products to one of several libraries: YNNPACK (the default in this jaxlib),
oneDNN or its own Eigen kernels. A compiler option picks one per compilation, so all of them and
PyTorch's (fp32 on the CPU) take turns in one process, once each per round:

1. The products of the dit_step bench's train step (2560 tokens: the feed-forward's `512 -> 2048`
   and an attention projection's `512 -> 512`, each as its forward `x W`, its input gradient
   `dy W^T` and its weight gradient `x^T dy`) and a 2048^3 one: `gemm_NAME_LIBRARY: X GFLOP/s`
   (median over the rounds) and `gemm_NAME_torch_over_ynn: X` (the median per-round ratio of
   their times, above 1 where PyTorch's is faster).
2. Our bench train step (benchmarks/dit_train_step.py) compiled with each library:
   `step_LIBRARY: X ms` and `step_LIBRARY_speed_vs_ynn: X` (the median per-round ratio).

After each PyTorch call the next call waits 0.2 s: PyTorch's OpenMP threads spin on the cores for
a while after their work, and the call that follows at once ran up to 1.6x slower (a 2560 x 512 x
512 product in Eigen, 171 against 281 GFLOP/s).
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
import torch  # pylint: disable=g-import-not-at-top

from configs.models import dit as dit_configs  # pylint: disable=g-import-not-at-top
from dit_train_step import BENCH_BATCH, compiled_train_step, make_batch, wan_core  # pylint: disable=g-import-not-at-top
from timing import median_seconds  # pylint: disable=g-import-not-at-top  # benchmarks/timing.py

# Compiler options choosing the library that runs every product.
LIBRARIES = {
    "ynn": {},
    "onednn": {"xla_cpu_use_onednn": True, "xla_cpu_experimental_ynn_fusion_type": "",
               "xla_cpu_experimental_onednn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"},
    "eigen": {"xla_cpu_experimental_ynn_fusion_type": ""},
}
# The dit_step bench's tokens, all examples together (patches of 2 x 2 latents): 2 x 1280.
TOKENS = BENCH_BATCH[0] * BENCH_BATCH[1] * (BENCH_BATCH[2] // 2) * (BENCH_BATCH[3] // 2)
SPIN_WAIT = 0.2  # seconds after a PyTorch call (see above)


def products(dim, ffn_dim):
  """name -> (m, k, n, layout): `layout` says which operand comes transposed (NN, NT, TN)."""
  table = {"square_2048": (2048, 2048, 2048, "NN")}
  for layer, (d_in, d_out) in (("ffn", (dim, ffn_dim)), ("proj", (dim, dim))):
    table[f"{layer}_forward"] = (TOKENS, d_in, d_out, "NN")  # x [T, in] W [in, out]
    table[f"{layer}_input_grad"] = (TOKENS, d_out, d_in, "NT")  # dy [T, out] W^T
    table[f"{layer}_weight_grad"] = (d_in, TOKENS, d_out, "TN")  # x^T dy
  return table


def operands(m, k, n, layout, rng):
  a = rng.standard_normal((k, m) if layout == "TN" else (m, k)).astype(np.float32)
  b = rng.standard_normal((n, k) if layout == "NT" else (k, n)).astype(np.float32)
  return a, b


def xla_product(layout, a, b, options):
  contract = {"NN": ((1,), (0,)), "NT": ((1,), (1,)), "TN": ((0,), (0,))}[layout]
  product = lambda x, y: jax.lax.dot_general(x, y, (contract, ((), ())))
  compiled = jax.jit(product).lower(a, b).compile(compiler_options=options)
  return lambda: compiled(a, b).block_until_ready()


def torch_product(layout, a, b):
  a, b = torch.from_numpy(a), torch.from_numpy(b)
  a = a.t() if layout == "TN" else a
  b = b.t() if layout == "NT" else b
  return lambda: torch.mm(a, b)


def take_turns(calls, rounds, after=None):
  """{name: [seconds per round]}: each call once a round, in turn, after two warm-up calls."""
  for call in calls.values():
    call()
    call()
  times = {name: [] for name in calls}
  for _ in range(rounds):
    for name, call in calls.items():
      times[name].append(median_seconds(call, 1, warmups=0))
      if after and name in after:
        time.sleep(after[name])
  return {name: np.asarray(t) for name, t in times.items()}


def gemms(size, rounds):
  rng = np.random.default_rng(0)
  for name, (m, k, n, layout) in products(size["dim"], size["ffn_dim"]).items():
    a, b = operands(m, k, n, layout, rng)
    ja, jb = jnp.asarray(a), jnp.asarray(b)
    calls = {library: xla_product(layout, ja, jb, options) for library, options in LIBRARIES.items()}
    calls["torch"] = torch_product(layout, a, b)
    times = take_turns(calls, rounds, after={"torch": SPIN_WAIT})
    flops = 2 * m * k * n
    for library, t in times.items():
      print(f"gemm_{name}_{library}: {flops / np.median(t) / 1e9:.0f} GFLOP/s")
    print(f"gemm_{name}_torch_over_ynn: {np.median(times['ynn'] / times['torch']):.2f}")


def steps(size, attention, rounds):
  config = wan_core(size, attention=attention, scan_layers=False)
  calls = {library: compiled_train_step(config, make_batch(size), compiler_options=options)[0]
           for library, options in LIBRARIES.items()}
  times = take_turns(calls, rounds)
  for library, t in times.items():
    print(f"step_{library}: {1000 * np.median(t):.0f} ms")
    print(f"step_{library}_speed_vs_ynn: {np.median(times['ynn'] / t):.2f}")


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--rounds", type=int, default=9)
  parser.add_argument("--no_step", action="store_true", help="the products alone")
  args = parser.parse_args()
  torch.set_num_threads(os.cpu_count())
  bench = dit_configs.get_config("bench")
  size = {key: bench[key] for key in ("dim", "heads", "layers", "ffn_dim", "text_dim")}
  gemms(size, args.rounds)
  if not args.no_step:
    steps(size, bench.attention, max(3, args.rounds // 2))


if __name__ == "__main__":
  main()
