"""TPU topologies as compile-only devices, and what each chip offers.

`v5p:4x4x4` names a slice (generation : chips along each torus axis). libtpu describes it without
any TPU attached, so the real programs compile for it here; `slices` > 1 adds the multi-slice
(data-centre network) dimension, as a queued resource of several slices would have.
"""
import dataclasses
import os

from data_pipeline.errors import InputError, require


@dataclasses.dataclass(frozen=True)
class Chip:
  name: str
  hbm_gib: float  # what the TPU compiler reports as available per chip
  peak_flops: float  # dense bf16 FLOP/s


CHIPS = {
    "v5p": Chip("TPU v5p", 95.74, 459e12),
    "v6e": Chip("TPU v6e", 31.25, 918e12),
    "v5e": Chip("TPU v5e", 15.75, 197e12),
}


def parse(topology):
  """`v5p:4x4x4` -> (generation, chip count); one-line errors for anything else."""
  generation, _, shape = topology.partition(":")
  require(generation in CHIPS, f"--topology {topology!r}: unknown TPU generation {generation!r}; "
                               f"known: {', '.join(sorted(CHIPS))} (e.g. v5p:4x4x4, v6e:8x8)")
  sizes = shape.split("x")
  require(shape and all(s.isdigit() and int(s) > 0 for s in sizes),
          f"--topology {topology!r}: the shape must be chips per axis, e.g. {generation}:"
          f"{'4x4x4' if generation == 'v5p' else '8x8'}")
  require(len(sizes) == (3 if generation == "v5p" else 2),
          f"--topology {topology!r}: {generation} slices have {3 if generation == 'v5p' else 2} axes")
  count = 1
  for size in sizes:
    count *= int(size)
  return generation, count


def devices(topology, slices=1):
  """Compile-only devices of `slices` slices of `topology` (no TPU needed)."""
  generation, _ = parse(topology)
  require(slices >= 1, f"--slices must be >= 1, got {slices}")
  # Compiling touches no TPU: several processes (test workers) may load libtpu at once.
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  try:
    kwargs = {"num_slices": slices} if slices > 1 else {}
    found = topologies.get_topology_desc(topology, "tpu", **kwargs).devices
  except Exception as error:  # pylint: disable=broad-except  # libtpu's message names the problem
    message = str(error).splitlines()[0] if str(error) else type(error).__name__
    raise InputError(f"--topology {topology!r}: {message}") from None
  return list(found), CHIPS[generation]
