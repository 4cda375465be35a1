import numpy as np
import pytest

from data_pipeline import cameras, rays


def _random_cameras(rng, num_frames, height, width):
  yaw = rng.uniform(-80, 80, num_frames)
  pitch = rng.uniform(-30, 30, num_frames)
  distance = rng.uniform(0.5, 2.0, num_frames)
  focal = rng.uniform(1.0, 3.0, num_frames)
  return cameras.orbit(yaw, pitch, distance, height, width, focal, target=rng.normal(size=3) * 0.1)


def test_rays_pass_through_camera_centre_and_pixel_centre():
  rng = np.random.default_rng(0)
  height, width = 12, 20
  cams = _random_cameras(rng, 3, height, width)
  ray_map = rays.plucker_rays(cams.intrinsics, cams.extrinsics, height, width)
  assert ray_map.shape == (3, height, width, 6) and ray_map.dtype == np.float32
  direction = ray_map[..., :3].astype(np.float64)
  np.testing.assert_allclose(np.linalg.norm(direction, axis=-1), 1.0, atol=1e-5)
  centres = cams.centres
  for t in range(3):
    # A point along the ray, projected by the camera, lands on the pixel centre.
    points = centres[t] + 0.7 * direction[t]
    cam = points @ cams.rotations[t].T + cams.extrinsics[t, :, 3]
    assert np.all(cam[..., 2] > 0)
    pixels = cam @ cams.intrinsics[t].T
    uv = pixels[..., :2] / pixels[..., 2:]
    v, u = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    np.testing.assert_allclose(uv[..., 0], u, atol=1e-3)
    np.testing.assert_allclose(uv[..., 1], v, atol=1e-3)


def test_moment_is_orthogonal_and_independent_of_the_point_on_the_line():
  rng = np.random.default_rng(1)
  cams = _random_cameras(rng, 2, 8, 8)
  ray_map = rays.plucker_rays(cams.intrinsics, cams.extrinsics, 8, 8).astype(np.float64)
  direction, moment = ray_map[..., :3], ray_map[..., 3:]
  np.testing.assert_allclose(np.sum(direction * moment, axis=-1), 0.0, atol=1e-6)
  for t in range(2):
    other_point = cams.centres[t] + 3.0 * direction[t]  # any point on the ray gives the same moment
    np.testing.assert_allclose(np.cross(other_point, direction[t]), moment[t], atol=1e-5)
    np.testing.assert_allclose(np.cross(cams.centres[t], direction[t]), moment[t], atol=1e-5)


def test_per_frame_intrinsics_match_frame_by_frame():
  cams = cameras.dolly(5, 10, 14, zoom=True)
  together = rays.plucker_rays(cams.intrinsics, cams.extrinsics, 10, 14)
  for t in range(5):
    alone = rays.plucker_rays(cams.intrinsics[t:t + 1], cams.extrinsics[t:t + 1], 10, 14)
    np.testing.assert_array_equal(together[t], alone[0])
  assert not np.allclose(together[0, ..., :3], together[-1, ..., :3])  # the zoom changes the rays


def test_frontal_camera_central_ray_looks_at_target():
  cams = cameras.static_frontal(1, 32, 32)
  ray_map = rays.plucker_rays(cams.intrinsics, cams.extrinsics, 32, 32)
  centre = ray_map[0, 15:17, 15:17, :3].mean(axis=(0, 1))
  expected = np.array(cameras.DEFAULT_TARGET) - cams.centres[0]
  np.testing.assert_allclose(centre / np.linalg.norm(centre), expected / np.linalg.norm(expected), atol=1e-3)


@pytest.mark.parametrize("height,width", [(0, 8), (8, -1)])
def test_non_positive_resolution_is_rejected(height, width):
  cams = cameras.static_frontal(1, 8, 8)
  with pytest.raises(ValueError, match="positive"):
    rays.plucker_rays(cams.intrinsics, cams.extrinsics, height, width)


def test_latent_grid_holds_each_cells_rays_in_the_causal_vae_grouping():
  rng = np.random.default_rng(3)
  maps = rng.standard_normal((2, 9, 16, 24, 6)).astype(np.float32)  # batch 2, 9 = 1 + 4 * 2 frames
  grid = rays.to_latent_grid(maps)
  assert grid.shape == (2, 3, 2, 3, 4 * 8 * 8 * 6)
  # Element by element: latent frame 0 repeats video frame 0; frame f > 0 covers 1 + 4(f-1) + t.
  for f in range(3):
    for t in range(4):
      frame = 0 if f == 0 else 1 + 4 * (f - 1) + t
      for y in range(2):
        for x in range(3):
          for sy in (0, 5):
            for sx in (0, 7):
              start = ((t * 8 + sy) * 8 + sx) * 6
              np.testing.assert_array_equal(grid[:, f, y, x, start:start + 6],
                                            maps[:, frame, 8 * y + sy, 8 * x + sx])


def test_latent_grid_refuses_frames_or_sizes_off_the_grid():
  with pytest.raises(ValueError, match="1 \\+ 4k"):
    rays.to_latent_grid(np.zeros((6, 8, 8, 6), np.float32))
  with pytest.raises(ValueError, match="8x8 latent cells"):
    rays.to_latent_grid(np.zeros((5, 12, 8, 6), np.float32))


def test_rays_made_in_their_latent_cells_equal_the_folded_ray_maps():
  rng = np.random.default_rng(5)
  cams = _random_cameras(rng, 9, 24, 40)  # 1 + 4 * 2 frames, each its own camera
  intrinsics, extrinsics = cams.intrinsics, cams.extrinsics
  want = rays.to_latent_grid(rays.plucker_rays(intrinsics, extrinsics, 24, 40))
  got = rays.latent_grid_rays(intrinsics, extrinsics, 24, 40)
  assert got.shape == want.shape == (3, 3, 5, 1536) and got.dtype == np.float32
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError, match="1 \\+ 4k"):
    rays.latent_grid_rays(intrinsics[:6], extrinsics[:6], 24, 40)
  with pytest.raises(ValueError, match="8x8 latent cells"):
    rays.latent_grid_rays(intrinsics, extrinsics, 20, 40)
