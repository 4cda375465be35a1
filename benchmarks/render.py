"""Renderer and ray-map throughput at 512x512 on this machine.

  python benchmarks/render.py [--frames=16] [--repeats=5]

Prints `normals_fps` (normal map + depth + mask), `rgb_fps` (everything plus shaded RGB with
shadow rays) and `raymaps_per_s`, each the median over repeats of rendering a posed,
moving clip of the template head (scene build, tracing and shading included). The headline
figures render through `RenderPool` (one worker process a core, as the dataset builder does);
the `*_one_process` lines are `Renderer.render_clip` in this process, for comparison.
`scene_build_ms`, `embreex_mesh_ms` (the part of the build spent in embreex's `TriangleMesh`,
which copies the mesh one Python item at a time; the renderer hands it the faces as tuple rows)
and `frame_rest_ms` (culling, tracing, shading) split one frame's time on one thread;
`embreex_mesh_int_faces_ms` is the same copy from a plain int32 face array, for comparison.
`latent_grid_rays_ms` is the DiT's camera input for the clip's first 1 + 4k frames, made in its
latent cells (`rays.latent_grid_rays`), beside `latent_grid_rays_map_then_fold_ms`, a whole ray
map made and then folded (`to_latent_grid(plucker_rays(...))`, the input pipeline's way before).
"""
import argparse

import time

import numpy as np
import threadpoolctl
from embreex import rtcore_scene
from embreex.mesh_construction import TriangleMesh

from data_pipeline import appearance, cameras, controls, rays, world
from data_pipeline.render_pool import RenderPool
from data_pipeline.renderer import Renderer
from data_pipeline.template_head import build_template
from timing import median_seconds  # benchmarks/timing.py


def stage_milliseconds(renderer, vertices, cams):
  """Median ms per frame on one thread: (scene build, embreex's mesh copy as the renderer makes it,
  the same from int faces, the rest of the frame)."""
  build, mesh, int_faces, rest = [], [], [], []
  rows = renderer._index_rows  # pylint: disable=protected-access  # the renderer's own copy
  with threadpoolctl.threadpool_limits(1):
    for t in range(len(vertices)):
      frame = np.ascontiguousarray(vertices[t], np.float32)
      start = time.perf_counter()
      TriangleMesh(rtcore_scene.EmbreeScene(), frame, rows)
      mesh.append(time.perf_counter() - start)
      start = time.perf_counter()
      TriangleMesh(rtcore_scene.EmbreeScene(), frame, renderer.faces)
      int_faces.append(time.perf_counter() - start)
      start = time.perf_counter()
      renderer._scene(frame)  # pylint: disable=protected-access
      build.append(time.perf_counter() - start)
      start = time.perf_counter()
      renderer.render(frame, cams.intrinsics[t], cams.extrinsics[t], threads=1)  # reuses that scene
      rest.append(time.perf_counter() - start)
  return tuple(1e3 * float(np.median(times)) for times in (build, mesh, int_faces, rest))


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--frames", type=int, default=16)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--size", type=int, default=512)
  parser.add_argument("--workers", type=int, default=0, help="render processes (0: one a core)")
  args = parser.parse_args()
  size, frames = args.size, args.frames

  model = build_template()
  rng = np.random.default_rng(0)
  spec = world.ClipSpec(size, size, 1)
  expression = world.sample_expression(model, rng, frames, spec.fps)
  rotation, translation, scale = world.sample_head_motion(rng, frames, spec.fps)
  head_pose = np.concatenate([rotation, translation[:, :, None]], axis=2)
  vertices = controls.pose_vertices(model, np.zeros(model.num_shape), expression, head_pose, scale)
  cams = cameras.turntable(frames, size, size)
  person = appearance.sample_identity(model, rng)
  renderer = Renderer(model.f, size, size)

  def fps(render_clip, **kwargs):
    seconds = median_seconds(lambda: render_clip(vertices, cams.intrinsics, cams.extrinsics, **kwargs), args.repeats)
    return frames / seconds

  with RenderPool(model.f, size, size, workers=args.workers or None) as pool:
    normals_fps, rgb_fps = fps(pool.render_clip), fps(pool.render_clip, albedo=person.albedo)
    workers = pool.workers
  normals_one, rgb_one = fps(renderer.render_clip), fps(renderer.render_clip, albedo=person.albedo)
  build_ms, mesh_ms, int_faces_ms, rest_ms = stage_milliseconds(renderer, vertices, cams)
  rays_s = median_seconds(lambda: rays.plucker_rays(cams.intrinsics, cams.extrinsics, size, size), args.repeats)
  # The DiT's camera input for the clip's first 1 + 4k frames: made in the latent cells, against a
  # ray map made whole and then folded (what the input pipeline did before).
  grid = slice(0, 1 + 4 * ((frames - 1) // 4))
  grid_cams = (cams.intrinsics[grid], cams.extrinsics[grid], size, size)
  in_cells_s = median_seconds(lambda: rays.latent_grid_rays(*grid_cams), args.repeats)
  folded_s = median_seconds(lambda: rays.to_latent_grid(rays.plucker_rays(*grid_cams)), args.repeats)
  print(f"triangles: {len(model.f)}")
  print(f"resolution: {size}x{size}")
  print(f"render_workers: {workers}")
  print(f"normals_fps: {normals_fps:.1f}")
  print(f"rgb_fps: {rgb_fps:.1f}")
  print(f"normals_fps_one_process: {normals_one:.1f}")
  print(f"rgb_fps_one_process: {rgb_one:.1f}")
  print(f"scene_build_ms: {build_ms:.1f}")
  print(f"embreex_mesh_ms: {mesh_ms:.1f}")
  print(f"embreex_mesh_int_faces_ms: {int_faces_ms:.1f}")
  print(f"frame_rest_ms: {rest_ms:.1f}")
  print(f"raymaps_per_s: {frames / rays_s:.1f}")
  print(f"latent_grid_rays_ms: {in_cells_s * 1e3:.1f}")
  print(f"latent_grid_rays_map_then_fold_ms: {folded_s * 1e3:.1f}")
  print(f"latent_grid_rays_speedup: {folded_s / in_cells_s:.2f}")


if __name__ == "__main__":
  main()
