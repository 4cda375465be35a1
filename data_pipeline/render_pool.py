"""Renders a clip's frames in worker processes, one `Renderer` each.

embreex holds the GIL while it copies each frame's mesh in, and numpy's small steps hold it too,
so threads in one process overlap only the tracing; processes render whole frames side by side.
Each worker limits BLAS to one thread: numpy's small matrix products would otherwise wake a BLAS
thread pool in every worker, and those pools spinning against each other made two workers slower
than one process.

Workers write their frames straight into one memory-backed file (in /dev/shm where there is
one) that the caller then maps: the returned arrays are views of it, not copies. Sending 2-3 MB a
frame back through a pipe cost more than rendering it, and copying them out of shared memory
afterwards cost ~2 ms a frame that no worker could overlap. The file's name is unlinked before
`render_clip` returns (or raises); the mapping lives as long as the arrays.
"""
import concurrent.futures
import multiprocessing
import os
import secrets
import tempfile

import numpy as np
import threadpoolctl

from data_pipeline.errors import require
from data_pipeline.renderer import Renderer, clip_inputs

_WORKER_RENDERER = None
OUTPUT_FILE_PREFIX = "fp_render_"  # names a leaked output file (e.g. /dev/shm/fp_render_...) as ours


def _output_directory():
  return "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()


def _start_worker(faces, height, width, supersample):
  global _WORKER_RENDERER
  threadpoolctl.threadpool_limits(1)
  _WORKER_RENDERER = Renderer(faces, height, width, supersample, threads=1)


def _output_layout(num_frames, height, width, with_rgb):
  """(name, shape, dtype, byte offset) of each output array in one shared buffer, and its size."""
  arrays = [("normals", (num_frames, height, width, 3), np.uint8), ("depth", (num_frames, height, width), np.float32),
            ("mask", (num_frames, height, width), np.uint8)]
  if with_rgb:
    arrays.append(("rgb", (num_frames, height, width, 3), np.uint8))
  layout, offset = [], 0
  for name, shape, dtype in arrays:
    layout.append((name, shape, dtype, offset))
    offset += int(np.prod(shape)) * np.dtype(dtype).itemsize
  return layout, offset


def _views(buffer, layout):
  return {name: np.ndarray(shape, dtype, buffer=buffer, offset=offset) for name, shape, dtype, offset in layout}


def _render_frames(path, layout, first, vertices, intrinsics, extrinsics, albedo, lighting, background):
  outputs = _views(np.memmap(path, np.uint8, "r+"), layout)
  _write_frames(outputs, first, vertices, intrinsics, extrinsics, albedo, lighting, background)


def _write_frames(outputs, first, vertices, intrinsics, extrinsics, albedo, lighting, background):
  for t in range(len(extrinsics)):
    frame = _WORKER_RENDERER.render(vertices[t], intrinsics[t], extrinsics[t], albedo, lighting, background)
    for name, image in frame.items():
      outputs[name][first + t] = image


class RenderPool:
  """`Renderer.render_clip` spread over `workers` processes (default: one per core).

  Same pixels as one `Renderer`; use it as a context manager or call `close()`.
  """

  def __init__(self, faces, height, width, supersample=1, workers=None):
    self._renderer = Renderer(faces, height, width, supersample, threads=1)  # checks the arguments
    self.workers = int(workers or os.cpu_count() or 1)
    require(self.workers >= 1, f"workers must be >= 1, got {workers}")
    # Spawned, not forked: the parent may hold threads (JAX, Grain) that a fork would copy mid-use.
    self._pool = concurrent.futures.ProcessPoolExecutor(
        self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker,
        initargs=(self._renderer.faces, height, width, supersample))

  def render_clip(self, vertices, intrinsics, extrinsics, albedo=None, lighting=None, background=None):
    """As `Renderer.render_clip`: `T` frames, returned as stacked arrays."""
    vertices, intrinsics, extrinsics = clip_inputs(vertices, intrinsics, extrinsics)
    num_frames = len(extrinsics)
    renderer = self._renderer
    layout, size = _output_layout(num_frames, renderer.height, renderer.width, albedo is not None)
    path = os.path.join(_output_directory(), f"{OUTPUT_FILE_PREFIX}{os.getpid()}_{secrets.token_hex(6)}")
    with open(path, "xb") as output:
      output.truncate(max(size, 1))
    try:
      # Two contiguous runs of frames a worker: few messages, and a slow run cannot idle the rest long.
      bounds = np.linspace(0, num_frames, min(num_frames, 2 * self.workers) + 1).astype(int)
      jobs = [self._pool.submit(_render_frames, path, layout, a, vertices[a:b], intrinsics[a:b],
                                extrinsics[a:b], albedo, lighting, background)
              for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
      for job in jobs:
        job.result()
      images = _views(np.memmap(path, np.uint8, "r+"), layout)
    finally:
      os.unlink(path)
    return images

  def close(self):
    self._pool.shutdown(wait=True, cancel_futures=True)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
