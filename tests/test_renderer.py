import os

import numpy as np
import pytest

from data_pipeline import cameras
from data_pipeline.errors import InputError
from data_pipeline.rays import camera_directions
from data_pipeline.render_pool import OUTPUT_FILE_PREFIX, RenderPool
from data_pipeline.renderer import Background, Lighting, Renderer, decode_normals


def _sphere(radius, rings=80, segments=160):
  theta = np.linspace(0, np.pi, rings + 1)[1:-1]
  phi = np.linspace(0, 2 * np.pi, segments, endpoint=False)
  t, p = np.meshgrid(theta, phi, indexing="ij")
  ring = np.stack([np.sin(t) * np.cos(p), np.cos(t), np.sin(t) * np.sin(p)], -1).reshape(-1, 3)
  vertices = radius * np.concatenate([[[0, 1, 0]], ring, [[0, -1, 0]]])
  idx = lambda r, i: 1 + r * segments + (i % segments)
  faces = [(0, idx(0, i + 1), idx(0, i)) for i in range(segments)]
  for r in range(rings - 2):
    for i in range(segments):
      faces += [(idx(r, i), idx(r, i + 1), idx(r + 1, i + 1)), (idx(r, i), idx(r + 1, i + 1), idx(r + 1, i))]
  last = len(vertices) - 1
  faces += [(last, idx(rings - 2, i), idx(rings - 2, i + 1)) for i in range(segments)]
  return vertices, np.array(faces)


def _analytic_sphere(cams, radius, size):
  """Exact ray-sphere hits for a sphere at the origin: mask, camera-space normals, depth."""
  directions_cam = camera_directions(cams.intrinsics[0], size, size).astype(np.float64)
  rotation = cams.rotations[0]
  directions = directions_cam @ rotation
  origin = cams.centres[0]
  b = directions @ origin
  disc = b ** 2 - (origin @ origin - radius ** 2)
  hit = disc > 0
  t = -b - np.sqrt(np.where(hit, disc, 0))
  points = origin + t[..., None] * directions
  normals = (points / radius) @ rotation.T
  return hit, normals, t * directions_cam[..., 2]


@pytest.fixture(scope="module")
def sphere_scene():
  radius, size = 0.3, 64
  vertices, faces = _sphere(radius)
  cams = cameras.orbit([25.0], [15.0], [1.2], size, size, focal=1.2, target=(0, 0, 0))
  return radius, size, vertices, faces, cams


def test_normals_depth_and_mask_of_a_sphere_match_the_analytic_answer(sphere_scene):
  radius, size, vertices, faces, cams = sphere_scene
  out = Renderer(faces, size, size, threads=2).render(vertices, cams.intrinsics[0], cams.extrinsics[0])
  hit, normals, depth = _analytic_sphere(cams, radius, size)
  mask = out["mask"] > 0
  # The polygonal sphere differs from the true one only along the silhouette.
  assert np.sum(mask != hit) <= 0.02 * hit.sum()
  both = mask & hit
  decoded = decode_normals(out["normals"])[both]
  angle = np.degrees(np.arccos(np.clip(np.sum(decoded * normals[both], axis=-1), -1, 1)))
  assert np.median(angle) < 1.0 and np.percentile(angle, 99) < 4.0
  # Depth puts each hit on the polygon, which lies between the sphere and its inscribed bound.
  directions_cam = camera_directions(cams.intrinsics[0], size, size).astype(np.float64)[both]
  points = cams.centres[0] + (out["depth"][both] / directions_cam[:, 2])[:, None] * (directions_cam @ cams.rotations[0])
  distance = np.linalg.norm(points, axis=1)
  assert distance.max() <= radius * (1 + 1e-5) and distance.min() >= radius * (1 - 5e-4)
  assert np.all(out["depth"][~mask] == 0) and np.all(out["normals"][~mask] == 0)
  # A surface facing the camera encodes as (128, 128, 255).
  centre = np.unravel_index(np.argmin(np.where(both, depth, np.inf)), depth.shape)
  np.testing.assert_allclose(out["normals"][centre], [128, 128, 255], atol=6)


def test_threads_and_clip_rendering_give_the_same_pixels(sphere_scene):
  _, size, vertices, faces, cams = sphere_scene
  one = Renderer(faces, size, size, threads=1).render(vertices, cams.intrinsics[0], cams.extrinsics[0])
  clip = Renderer(faces, size, size, threads=2).render_clip(
      np.stack([vertices] * 3), np.repeat(cams.intrinsics, 3, 0), np.repeat(cams.extrinsics, 3, 0))
  for key in one:
    for t in range(3):
      np.testing.assert_array_equal(clip[key][t], one[key])


def test_supersampling_gives_fractional_coverage_on_the_silhouette_only(sphere_scene):
  radius, size, vertices, faces, cams = sphere_scene
  out = Renderer(faces, size, size, supersample=3).render(vertices, cams.intrinsics[0], cams.extrinsics[0])
  hit, _, _ = _analytic_sphere(cams, radius, size)
  partial = (out["mask"] > 0) & (out["mask"] < 255)
  assert partial.sum() > 0
  interior = hit.copy()
  for axis in (0, 1):
    for shift in (-1, 1):
      interior &= np.roll(hit, shift, axis)
  assert not np.any(partial & interior)


def test_rgb_shading_is_albedo_times_light(sphere_scene):
  _, size, vertices, faces, cams = sphere_scene
  albedo = np.tile([0.8, 0.5, 0.25], (len(vertices), 1))
  dark = Lighting(ambient=(0.5, 0.5, 0.5), colour=(0.0, 0.0, 0.0), specular=0.0)
  background = Background(top=(0.0, 0.0, 1.0), bottom=(1.0, 0.0, 0.0))
  out = Renderer(faces, size, size).render(vertices, cams.intrinsics[0], cams.extrinsics[0], albedo=albedo,
                                           lighting=dark, background=background)
  mask = out["mask"] > 0
  np.testing.assert_allclose(out["rgb"][mask], np.broadcast_to(np.rint(np.array([0.4, 0.25, 0.125]) * 255), (mask.sum(), 3)), atol=1)
  np.testing.assert_array_equal(out["rgb"][0, 0], [0, 0, 255])
  np.testing.assert_array_equal(out["rgb"][-1, 0], [255, 0, 0])
  lit = Lighting(ambient=(0.2, 0.2, 0.2), direction=tuple(cams.centres[0]), colour=(0.8, 0.8, 0.8), specular=0.0)
  bright = Renderer(faces, size, size).render(vertices, cams.intrinsics[0], cams.extrinsics[0], albedo=albedo,
                                              lighting=lit)
  # Lambert: brightest where the normal faces the light (here: the camera).
  assert bright["rgb"][mask][:, 0].max() >= np.rint(0.8 * 0.99 * 255)


def _every_pixel_hit(faces, vertices, intrinsics, extrinsics, size):
  """Which pixels' rays hit the mesh, tracing every pixel straight through embreex."""
  from embreex import rtcore_scene
  from embreex.mesh_construction import TriangleMesh
  scene = rtcore_scene.EmbreeScene()
  TriangleMesh(scene, np.ascontiguousarray(vertices, np.float32), np.ascontiguousarray(faces, np.int32))
  rotation, translation = extrinsics[:, :3], extrinsics[:, 3]
  directions = (camera_directions(intrinsics, size, size).reshape(-1, 3) @ rotation).astype(np.float32)
  origins = np.broadcast_to(-rotation.T @ translation, directions.shape).astype(np.float32)
  return (scene.run(origins, np.ascontiguousarray(directions)) >= 0).reshape(size, size)


def test_tile_culling_traces_every_pixel_that_can_hit(sphere_scene):
  # Large and sliver triangles, some leaving the image, some edge-on: only culled pixels are skipped.
  size = 64
  cams = cameras.orbit([0.0, 40.0, 170.0], [15.0, -20.0, 5.0], [1.2, 1.0, 1.5], size, size, focal=1.2, target=(0, 0, 0))
  rng = np.random.default_rng(3)
  centres = rng.normal(0.0, 0.35, (40, 1, 3))
  vertices = (centres + rng.normal(0.0, 0.12, (40, 3, 3)) * rng.choice([0.05, 1.0, 3.0], (40, 1, 1))).reshape(-1, 3)
  faces = np.arange(len(vertices)).reshape(-1, 3)
  for t in range(len(cams.extrinsics)):
    out = Renderer(faces, size, size, threads=1).render(vertices, cams.intrinsics[t], cams.extrinsics[t])
    expected = _every_pixel_hit(faces, vertices, cams.intrinsics[t], cams.extrinsics[t], size)
    assert expected.sum() > 100
    np.testing.assert_array_equal(out["mask"] > 0, expected)


def test_a_mesh_moved_in_place_is_rendered_anew(sphere_scene):
  # The last scene is reused only for exactly the same vertices, even when the caller's array changes.
  _, size, vertices, faces, cams = sphere_scene
  renderer = Renderer(faces, size, size, threads=1)
  moving = vertices.copy()
  first = renderer.render(moving, cams.intrinsics[0], cams.extrinsics[0])
  np.testing.assert_array_equal(renderer.render(moving, cams.intrinsics[0], cams.extrinsics[0])["depth"], first["depth"])
  moving += [0.05, 0.0, 0.0]
  moved = renderer.render(moving, cams.intrinsics[0], cams.extrinsics[0])
  fresh = Renderer(faces.copy(), size, size, threads=1).render(vertices + [0.05, 0.0, 0.0], cams.intrinsics[0],
                                                                cams.extrinsics[0])
  assert not np.array_equal(moved["mask"], first["mask"])
  for key in fresh:
    np.testing.assert_array_equal(moved[key], fresh[key])


def test_render_pool_gives_the_same_pixels_and_leaves_no_shared_memory(sphere_scene):
  _, size, vertices, faces, cams = sphere_scene
  frames = 5
  moving = np.stack([vertices + [0.02 * t, 0.0, 0.0] for t in range(frames)])
  intrinsics, extrinsics = np.repeat(cams.intrinsics, frames, 0), np.repeat(cams.extrinsics, frames, 0)
  albedo = np.random.default_rng(0).uniform(0.2, 0.9, (len(vertices), 3))
  expected = Renderer(faces, size, size, threads=1).render_clip(moving, intrinsics, extrinsics, albedo=albedo)
  with RenderPool(faces, size, size, workers=2) as pool:
    got = pool.render_clip(moving, intrinsics, extrinsics, albedo=albedo)
    with pytest.raises(InputError, match="one mesh and one camera per frame"):
      pool.render_clip(moving[:2], intrinsics, extrinsics)
    with pytest.raises(InputError, match="NaN"):  # raised in a worker, arrives whole
      pool.render_clip(np.full_like(moving, np.nan), intrinsics, extrinsics)
  assert sorted(got) == sorted(expected)
  for key in expected:
    np.testing.assert_array_equal(got[key], expected[key])
  if os.path.isdir("/dev/shm"):  # other tests' processes may hold segments of their own meanwhile
    assert not [name for name in os.listdir("/dev/shm") if name.startswith(OUTPUT_FILE_PREFIX)]


def test_bad_render_inputs_are_rejected(sphere_scene):
  _, size, vertices, faces, cams = sphere_scene
  with pytest.raises(InputError, match="empty"):
    Renderer(np.zeros((0, 3), int), size, size)
  with pytest.raises(InputError, match="positive integer"):
    Renderer(faces, 0, size)
  renderer = Renderer(faces, size, size)
  with pytest.raises(InputError, match="NaN"):
    renderer.render(np.full_like(vertices, np.nan), cams.intrinsics[0], cams.extrinsics[0])
  with pytest.raises(InputError, match="empty"):
    renderer.render(np.zeros((0, 3)), cams.intrinsics[0], cams.extrinsics[0])
  bad = cams.intrinsics[0].copy()
  bad[0, 0] = 0.0
  with pytest.raises(InputError, match="focal"):
    renderer.render(vertices, bad, cams.extrinsics[0])
