import numpy as np
import pytest

from data_pipeline import cameras
from data_pipeline.errors import InputError
from data_pipeline.rays import camera_directions
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
