"""The device mesh: axes ('data', 'fsdp', 'context', 'tensor'), sizes from the config.

A mesh config names a size per axis; one axis may be -1 and takes the devices left over. For a
pod of several slices, `dcn` gives per-axis sizes across slices (the data-centre network), and
the mesh is the product of the in-slice (ICI) and cross-slice shapes.
"""
import math

import jax
import numpy as np
from jax.experimental import mesh_utils

from data_pipeline.errors import InputError, require

MESH_AXES = ("data", "fsdp", "context", "tensor")
BATCH_AXES = ("data", "fsdp")  # the batch dimension is split over these


def resolve_shape(sizes, num_devices, what="mesh"):
  """Per-axis sizes (dict or ConfigDict, -1 fills) -> a tuple in MESH_AXES order."""
  sizes = dict(sizes)
  unknown = set(sizes) - set(MESH_AXES) - {"dcn"}
  require(not unknown, f"{what} has unknown axes {sorted(unknown)}; axes are {MESH_AXES}")
  shape = [int(sizes.get(axis, 1)) for axis in MESH_AXES]
  fill = [i for i, size in enumerate(shape) if size == -1]
  require(len(fill) <= 1, f"{what}: at most one axis may be -1, got {dict(zip(MESH_AXES, shape))}")
  require(all(size >= 1 for i, size in enumerate(shape) if i not in fill),
          f"{what}: axis sizes must be >= 1 or -1, got {dict(zip(MESH_AXES, shape))}")
  known = math.prod(size for i, size in enumerate(shape) if i not in fill)
  if fill:
    require(num_devices % known == 0,
            f"{what}: {num_devices} devices do not divide over the fixed axes (product {known})")
    shape[fill[0]] = num_devices // known
  require(math.prod(shape) == num_devices,
          f"{what} {dict(zip(MESH_AXES, shape))} needs {math.prod(shape)} devices, there are {num_devices}")
  return tuple(shape)


def make_mesh(mesh_config, devices=None):
  """A `jax.sharding.Mesh` over `devices` (default: all) laid out for the hardware topology."""
  devices = list(jax.devices() if devices is None else devices)
  dcn = dict(mesh_config.get("dcn", None) or {})
  if dcn and math.prod(int(v) for v in dcn.values()) > 1:
    num_slices = len({getattr(device, "slice_index", 0) for device in devices})
    dcn_shape = resolve_shape(dcn, num_slices, "mesh.dcn")
    ici_shape = resolve_shape(mesh_config, len(devices) // num_slices, "mesh (per slice)")
    grid = mesh_utils.create_hybrid_device_mesh(ici_shape, dcn_shape, devices,
                                                allow_split_physical_axes=True)
  else:
    shape = resolve_shape(mesh_config, len(devices))
    try:
      grid = mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=True)
    except (ValueError, NotImplementedError, AssertionError):  # no known topology: keep device order
      grid = np.asarray(devices).reshape(shape)
  return jax.sharding.Mesh(grid, MESH_AXES)


def batch_shards(mesh):
  """How many ways the batch dimension is split."""
  return math.prod(mesh.shape[axis] for axis in BATCH_AXES)


def check_global_batch(global_batch_size, mesh):
  if global_batch_size % batch_shards(mesh):
    raise InputError(f"global batch {global_batch_size} does not split over the mesh's batch axes "
                     f"{BATCH_AXES} ({batch_shards(mesh)} ways)")
