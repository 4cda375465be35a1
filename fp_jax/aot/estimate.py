"""Per-chip memory, FLOPs and an estimated step time from the TPU compiler's own analyses.

Memory is the compiled program's (arguments + outputs + temporaries, less outputs that reuse a
donated argument's buffer). Two traps in the compiler's cost figures are corrected:

- a scanned loop's body is costed once, not once per layer: the step is also compiled with 1 and
  2 unrolled layers, and the per-layer difference is extrapolated to the model's depth;
- a Pallas kernel (splash attention) is costed as zero FLOPs and no time: its FLOPs are counted
  from the shapes (what the kernels execute, recomputation included) and timed at the chip's peak.

MFU counts model FLOPs (the step traced without rematerialisation, attention as plain matmuls:
what the model needs, not what the program recomputes) over the estimated time at peak.
"""
import collections
import copy
import dataclasses
import math

import jax

from fp_jax.aot import programs
from fp_jax.models.dit_config import DiTConfig
from fp_jax.parallel.attention import SPLASH_BLOCK, splash_padded_length

GIB = 2 ** 30
# Splash attention FLOPs per unit of `batch x q_tokens x k_tokens x dim` (tokens padded to whole
# tiles): the forward kernel does two products (q k^T, p v), the fused backward kernel five (q k^T
# again, then dv, dp, dk, dq); one product is 2 FLOPs per multiply-add.
SPLASH_FORWARD, SPLASH_BACKWARD = 4, 10
PALLAS_KERNELS = {"splash": "einsum", "ulysses_splash": "ulysses"}  # -> the same maths in XLA


class OutOfMemory(Exception):
  """The compiler found no allocation within the chip's HBM."""


@dataclasses.dataclass
class Memory:
  arguments: int
  outputs: int
  aliased: int  # outputs written into donated arguments' buffers
  temporaries: int
  host_temporaries: int = 0  # host memory the step's offloaded residuals occupy (not HBM)
  host_arguments: int = 0  # state parked in host memory between steps (`offload_state`; not HBM)

  @property
  def total(self):
    return self.arguments + self.outputs - self.aliased + self.temporaries


@dataclasses.dataclass
class Estimate:
  memory: Memory
  largest_arguments: list  # (name, bytes per chip), largest first
  model_flops: float  # per step, all chips
  executed_flops: float  # XLA's extrapolated count plus the Pallas kernels'
  xla_seconds: float  # the compiler's estimate, extrapolated over the layers
  pallas_flops: float
  pallas_seconds: float
  raw_xla_flops: float  # the compiler's figures for the scanned program, per chip
  raw_xla_seconds: float
  layers: int
  pallas_kernels: dict  # Mosaic (Pallas TPU) kernel name -> calls in the compiled step's text

  @property
  def step_seconds(self):
    return self.xla_seconds + self.pallas_seconds


def compile_program(program):
  try:
    return program.lower().compile()
  except jax.errors.JaxRuntimeError as error:
    if "RESOURCE_EXHAUSTED" in str(error):
      raise OutOfMemory(str(error).strip()) from None
    raise


def pallas_kernels(hlo_text):
  """Mosaic kernel calls in compiled HLO text by kernel name (`splash_mha_fwd_...`): how often
  each appears in the program's text (a scanned body's kernels once)."""
  calls = collections.Counter()
  for line in hlo_text.splitlines():
    if 'custom_call_target="tpu_custom_call"' in line:
      calls[line.split("=")[0].strip().lstrip("%").rsplit(".", 1)[0]] += 1
  return dict(calls)


def memory_of(compiled):
  stats = compiled.memory_analysis()
  return Memory(stats.argument_size_in_bytes, stats.output_size_in_bytes, stats.alias_size_in_bytes,
                stats.temp_size_in_bytes, getattr(stats, "host_temp_size_in_bytes", 0),
                getattr(stats, "host_argument_size_in_bytes", 0))


def cost_of(compiled):
  """(FLOPs, seconds) per chip as the compiler costs the program (loop bodies once)."""
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", 0.0)), float(cost.get("optimal_seconds", 0.0))


def _key_name(key):
  for attribute in ("key", "name", "idx"):
    if hasattr(key, attribute):
      return str(getattr(key, attribute))
  return str(key)


def largest_arguments(program, count=6):
  """The biggest argument buffers in one chip's HBM: (name, bytes), largest first."""
  sizes = []
  for name, arg in zip(program.arg_names, program.args):
    for path, leaf in jax.tree_util.tree_flatten_with_path(arg)[0]:
      if leaf.sharding.memory_kind == "pinned_host":
        continue
      size = leaf.dtype.itemsize * math.prod(leaf.sharding.shard_shape(leaf.shape))
      parts = [name] + [_key_name(key) for key in path if _key_name(key) != "value"]
      sizes.append(("/".join(parts), size))
  return sorted(sizes, key=lambda item: -item[1])[:count]


def with_model(config, **fields):
  config = copy.deepcopy(config)
  for key, value in fields.items():
    config.model[key] = value
  return config


def pallas_flops(config, program, train):
  """FLOPs the splash kernels execute in one step, all chips (self-attention over every token;
  cross-attention on keys shorter than a block runs as einsum, which XLA counts)."""
  model = DiTConfig.from_config(config.model)
  if model.attention not in PALLAS_KERNELS:
    return 0.0
  samples = program.samples * (1 if train else len(programs.HYBRID))
  tokens = splash_padded_length(program.tokens)
  units = tokens * tokens
  expression_tokens = model.expression_dim // model.expression_token_dim
  if model.attention == "splash" and model.expression_cross_attention and expression_tokens >= SPLASH_BLOCK:
    units += tokens * splash_padded_length(expression_tokens)
  forward = SPLASH_FORWARD * samples * units * model.dim * model.layers
  if not train:
    return float(forward)
  recomputed = forward if model.remat_reruns_attention else 0  # the forward kernel again in backward
  return float(forward + recomputed + forward * SPLASH_BACKWARD / SPLASH_FORWARD)


def estimate(job, config, mesh, rules, video, chip, sample_batch=None, log=print, time=True):
  """Compiles the step (and its 1- and 2-layer unrolled versions) for `mesh`; raises OutOfMemory."""
  chips = mesh.size
  program = programs.build(job, config, mesh, rules, video, sample_batch)
  largest = largest_arguments(program)
  log("compiling the step ...")
  try:
    compiled = compile_program(program)
  except OutOfMemory as error:
    error.largest_arguments = largest
    raise
  memory = memory_of(compiled)
  raw_flops, raw_seconds = cost_of(compiled)
  pallas = pallas_kernels(compiled.as_text())
  del compiled
  log("counting model FLOPs ...")
  attention = PALLAS_KERNELS.get(config.model.attention, config.model.attention)
  model_config = with_model(config, remat="none", attention=attention)
  model_flops = programs.build(job, model_config, mesh, rules, video, sample_batch).jaxpr_flops()
  if not time:
    return Estimate(memory, largest, model_flops, float("nan"), float("nan"), 0.0, float("nan"),
                    raw_flops, raw_seconds, config.model.layers, pallas)
  costs = []
  for layers in (1, 2):
    log(f"compiling {layers} unrolled layer{'s' if layers > 1 else ''} ...")
    variant = with_model(config, layers=layers, scan_layers=False)
    costs.append(cost_of(compile_program(programs.build(job, variant, mesh, rules, video, sample_batch))))
  (flops_1, seconds_1), (flops_2, seconds_2) = costs
  layers = config.model.layers
  xla_flops = (flops_1 + (layers - 1) * (flops_2 - flops_1)) * chips
  xla_seconds = seconds_1 + (layers - 1) * (seconds_2 - seconds_1)
  flops = pallas_flops(config, program, job == "train")
  return Estimate(memory, largest, model_flops, xla_flops + flops, xla_seconds, flops,
                  flops / (chip.peak_flops * chips), raw_flops, raw_seconds, layers, pallas)
