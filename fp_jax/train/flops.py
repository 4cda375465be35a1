"""FLOPs of a step and the devices' peak, for MFU.

XLA's cost analysis counts the body of a loop once, so a model with scanned layers (or a
chunked VAE) would look many times cheaper than it is. Instead the step's jaxpr is walked:
matrix products and convolutions (the FLOPs MFU is about) are counted exactly, scan bodies
times their length, `shard_map` bodies times the devices they run on, the costlier branch of a
`cond`. Recomputation under `jax.checkpoint` is counted as the program runs it.
"""
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jax_core

# Dense bf16 peak FLOP/s per device, by `device_kind`.
PEAK_FLOPS = {
    "TPU v2": 45e12, "TPU v3": 123e12, "TPU v4": 275e12, "TPU v5 lite": 197e12,
    "TPU v5e": 197e12, "TPU v5p": 459e12, "TPU v5": 459e12, "TPU v6 lite": 918e12, "TPU v6e": 918e12,
    "NVIDIA A100-SXM4-80GB": 312e12, "NVIDIA A100-SXM4-40GB": 312e12, "NVIDIA H100 80GB HBM3": 989e12,
    "NVIDIA H200": 989e12,
}


def _dot_flops(eqn):
  (contract, _), _ = eqn.params["dimension_numbers"]
  lhs = eqn.invars[0].aval.shape
  return 2 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[d] for d in contract)


def _conv_flops(eqn):
  rhs = eqn.invars[1].aval.shape
  out_features = rhs[eqn.params["dimension_numbers"].rhs_spec[0]]
  # Each output element: one multiply-add per kernel tap per input channel of its group.
  return 2 * math.prod(eqn.outvars[0].aval.shape) * math.prod(rhs) // out_features


def jaxpr_flops(jaxpr):
  """Matmul and convolution FLOPs of a `Jaxpr` or `ClosedJaxpr`."""
  if isinstance(jaxpr, jax_core.ClosedJaxpr):
    jaxpr = jaxpr.jaxpr
  total = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "dot_general":
      total += _dot_flops(eqn)
    elif name == "conv_general_dilated":
      total += _conv_flops(eqn)
    elif name == "scan":
      total += eqn.params["length"] * jaxpr_flops(eqn.params["jaxpr"])
    elif name == "cond":
      total += max(jaxpr_flops(branch) for branch in eqn.params["branches"])
    elif name == "shard_map":
      mesh = eqn.params["mesh"]
      devices = math.prod(mesh.shape[axis] for axis in eqn.params["newly_manual_axes"])
      total += devices * jaxpr_flops(eqn.params["jaxpr"])
    else:  # jit, remat, custom_jvp/vjp, while (body once: its trip count is unknown)
      total += sum(jaxpr_flops(sub) for sub in jax_core.jaxprs_in_params(eqn.params))
  return total


def step_flops(fn, *args):
  """FLOPs of one call of `fn(*args)` (arrays or `jax.ShapeDtypeStruct`s), traced, not run."""
  return jaxpr_flops(jax.make_jaxpr(fn)(*args))


def measured_matmul_peak(size=1024, repeats=5):
  """FLOP/s of a large fp32 matmul on the first device (on a CPU: all its cores)."""
  a = jnp.ones((size, size), jnp.float32, device=jax.devices()[0])
  dot = jax.jit(lambda x: x @ x)
  dot(a).block_until_ready()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    dot(a).block_until_ready()
    times.append(time.perf_counter() - start)
  return 2 * size ** 3 / float(np.median(times))


def peak_flops_per_device(configured=0.0):
  """The configured peak, else the table's for this accelerator, else (CPUs, unknown kinds) a
  measured matmul peak shared by the local devices (simulated CPU devices share the cores)."""
  if configured:
    return float(configured)
  kind = jax.devices()[0].device_kind
  for name, peak in PEAK_FLOPS.items():
    if kind.startswith(name):
      return peak
  return measured_matmul_peak() / jax.local_device_count()
