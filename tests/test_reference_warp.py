import numpy as np
import pytest

from data_pipeline import cameras
from data_pipeline.errors import InputError
from data_pipeline.rays import camera_directions
from data_pipeline.reference_warp import warp_reference
from data_pipeline.renderer import Lighting, Renderer
from tests.test_renderer import _analytic_sphere, _sphere

FLAT = Lighting(ambient=(1.0, 1.0, 1.0), colour=(0.0, 0.0, 0.0), specular=0.0, shadows=False)
SIZE, RADIUS = 64, 0.3


def _turned(vertices, degrees):
  a = np.radians(degrees)
  rotation = np.array([[np.cos(a), 0.0, np.sin(a)], [0.0, 1.0, 0.0], [-np.sin(a), 0.0, np.cos(a)]])
  return vertices @ rotation.T, rotation


@pytest.fixture(scope="module")
def textured_sphere():
  vertices, faces = _sphere(RADIUS)
  # A smooth texture that changes across the whole sphere, so a wrong correspondence shows.
  unit = vertices / RADIUS
  albedo = np.stack([0.5 + 0.4 * unit[:, 0], 0.5 + 0.4 * unit[:, 1], 0.5 + 0.4 * np.sin(3.0 * unit[:, 2])], -1)
  cams = cameras.orbit([0.0], [10.0], [1.2], SIZE, SIZE, focal=1.2, target=(0, 0, 0))
  return vertices, faces, albedo, cams


def _render(faces, vertices, albedo, cams):
  return Renderer(faces, SIZE, SIZE, threads=1).render(vertices, cams.intrinsics[0], cams.extrinsics[0],
                                                       albedo=albedo, lighting=FLAT)


def _portrait_turned(textured_sphere, degrees, fill_holes=True):
  """The sphere's portrait, a render of it turned by `degrees`, and the portrait warped onto that
  turn (`[H, W, 3]` and `[H, W]`)."""
  vertices, faces, albedo, cams = textured_sphere
  portrait = _render(faces, vertices, albedo, cams)["rgb"]
  turned, _ = _turned(vertices, degrees)
  target = _render(faces, turned, albedo, cams)
  warped, valid = warp_reference(faces, portrait, vertices, cams.intrinsics[0], cams.extrinsics[0],
                                 turned[None], cams.intrinsics, cams.extrinsics, fill_holes)
  return portrait, target, warped[0], valid[0]


def test_the_warped_portrait_matches_a_render_of_the_turned_head(textured_sphere):
  portrait, target, warped, valid = _portrait_turned(textured_sphere, 25.0)
  carried = valid & (target["mask"] > 0)
  assert carried.sum() > 0.6 * (target["mask"] > 0).sum()
  error = np.abs(warped.astype(float) - target["rgb"].astype(float))[carried]
  repeated = np.abs(portrait.astype(float) - target["rgb"].astype(float))[carried]
  # Bilinear resampling of a 64-pixel render: a grey level or two on average, where the portrait
  # itself is off by ~10x that.
  assert np.mean(error) < 2.0 and np.mean(repeated) > 10 * np.mean(error)
  # Pixels off the mesh keep the portrait's own.
  off_mesh = target["mask"] == 0
  assert np.array_equal(warped[off_mesh], portrait[off_mesh])


def test_points_the_portrait_cannot_see_are_not_carried(textured_sphere):
  vertices, faces, albedo, cams = textured_sphere
  portrait = _render(faces, vertices, albedo, cams)["rgb"]
  turned, rotation = _turned(vertices, 40.0)
  _, valid = warp_reference(faces, portrait, vertices, cams.intrinsics[0], cams.extrinsics[0],
                            turned[None], cams.intrinsics, cams.extrinsics)
  hit, _, depth = _analytic_sphere(cams, RADIUS, SIZE)
  # The exact sphere point each pixel sees, turned back to the portrait's pose: it is seen there
  # when it faces the camera.
  directions_cam = camera_directions(cams.intrinsics[0], SIZE, SIZE).astype(np.float64)
  points_cam = directions_cam * (depth / directions_cam[..., 2])[..., None]
  points = (points_cam - cams.extrinsics[0][:, 3]) @ cams.extrinsics[0][:, :3]  # camera -> world
  before = points @ rotation  # undo the turn
  to_camera = cams.centres[0] - before
  facing = np.sum(before / RADIUS * to_camera, axis=-1) / np.linalg.norm(to_camera, axis=-1)
  # Grazing points (the portrait's rim) may go either way: bilinear samples there touch background.
  hidden, shown = hit & (facing < 0.0), hit & (facing > 0.35)
  assert hidden.sum() > 50  # the turn brings part of the back into view
  assert np.mean(valid[0][hidden]) < 0.05 and np.mean(valid[0][shown]) > 0.95


def test_mesh_pixels_the_portrait_cannot_show_take_the_nearest_carried_colour(textured_sphere):
  portrait, target, warped, valid = _portrait_turned(textured_sphere, 40.0)
  holes = (target["mask"] > 0) & ~valid
  assert holes.sum() > 50
  carried = np.argwhere(valid)
  for y, x in np.argwhere(holes):  # brute force: the colours of the carried pixels nearest to it
    distance = np.sum(np.square(carried - (y, x)), axis=1)
    nearest = carried[distance == distance.min()]
    assert any(np.array_equal(warped[y, x], warped[a, b]) for a, b in nearest), (y, x)
  # On a smooth texture the neighbour's colour is nearer the truth than the portrait's own pixel.
  error = lambda image: np.abs(image.astype(float) - target["rgb"].astype(float))[holes].mean()
  assert error(warped) < error(portrait)
  # Unfilled (warp version 1): every pixel not carried keeps the portrait's own; carried ones agree.
  _, _, unfilled, _ = _portrait_turned(textured_sphere, 40.0, fill_holes=False)
  assert np.array_equal(unfilled[~valid], portrait[~valid]) and np.array_equal(unfilled[valid], warped[valid])


def test_background_the_portraits_head_covered_takes_its_nearest_background_colour(textured_sphere):
  vertices, faces, albedo, cams = textured_sphere
  render = _render(faces, vertices, albedo, cams)
  head = render["mask"] > 0
  # A background that changes across the picture, so the nearest background pixel is the only
  # right one.
  rows, columns = np.mgrid[:SIZE, :SIZE]
  backdrop = np.stack([4 * columns, 4 * rows, 255 - 2 * (rows + columns) // 2], -1).clip(0, 255).astype(np.uint8)
  portrait = np.where(head[..., None], render["rgb"], backdrop)
  moved = vertices + np.array([0.12, 0.0, 0.0])  # the head steps aside: part of the backdrop shows
  target = _render(faces, moved, albedo, cams)
  target_rgb = np.where((target["mask"] > 0)[..., None], target["rgb"], backdrop)
  warp = lambda **fill: warp_reference(faces, portrait, vertices, cams.intrinsics[0], cams.extrinsics[0],
                                       moved[None], cams.intrinsics, cams.extrinsics, **fill)[0][0]
  warped, unfilled = warp(), warp(fill_background=False)
  uncovered = head & (target["mask"] == 0)
  assert uncovered.sum() > 50
  background = np.argwhere(~head)
  for y, x in np.argwhere(uncovered):  # brute force: the portrait's background pixels nearest to it
    distance = np.sum(np.square(background - (y, x)), axis=1)
    nearest = background[distance == distance.min()]
    assert any(np.array_equal(warped[y, x], portrait[a, b]) for a, b in nearest), (y, x)
  # Nearer the truth than the head the portrait shows there (the backdrop changes by up to 4 grey
  # levels a pixel, and the nearest background pixel is a few pixels away).
  error = lambda image: np.abs(image.astype(float) - target_rgb.astype(float))[uncovered].mean()
  assert error(warped) < 0.25 * error(unfilled)
  # Without the fill (warp version 2) they keep the portrait's head; every other pixel is the same.
  assert np.array_equal(unfilled[uncovered], portrait[uncovered])
  assert np.array_equal(unfilled[~uncovered], warped[~uncovered])


def test_a_bad_portrait_is_refused(textured_sphere):
  vertices, faces, _, cams = textured_sphere
  with pytest.raises(InputError, match="uint8"):
    warp_reference(faces, np.zeros((SIZE, SIZE, 3), np.float32), vertices, cams.intrinsics[0],
                   cams.extrinsics[0], vertices[None], cams.intrinsics, cams.extrinsics)
  with pytest.raises(InputError, match="vertices"):
    warp_reference(faces, np.zeros((SIZE, SIZE, 3), np.uint8), vertices[:-1], cams.intrinsics[0],
                   cams.extrinsics[0], vertices[None], cams.intrinsics, cams.extrinsics)


def test_a_training_examples_warp_is_its_reference_on_the_reference_frame(data_dir):
  from data_pipeline import examples  # pylint: disable=g-import-not-at-top
  from data_pipeline.records import ClipRecords  # pylint: disable=g-import-not-at-top
  from tests.run_helpers import train_config  # pylint: disable=g-import-not-at-top
  config = train_config(data_dir, "dit")  # the tiny DiT reads the warped reference
  assert config.input.warped_reference and config.input.reference == "same_clip"
  records = ClipRecords(data_dir, "tiny", "train")
  frames = np.asarray(records[0]["frames"])  # 5 frames: the window is the whole clip
  example = examples.MakeExample(records, config.input).example(0, 0, np.random.default_rng(1))
  warped, reference = example["warped"].astype(int), example["reference"].astype(int)
  assert warped.shape == frames.shape
  at = [i for i in range(len(frames)) if np.array_equal(frames[i], example["reference"])]
  assert len(at) == 1
  # Carried onto its own frame, the reference is itself (bilinear weights at pixel centres), but
  # for the few mesh pixels at grazing angles it cannot show, which take a neighbour's colour; on
  # the others the head has moved.
  differs = np.abs(warped[at[0]] - reference).max(axis=-1) > 1
  assert differs.mean() < 0.01
  others = [i for i in range(len(frames)) if i != at[0]]
  assert min(np.abs(warped[i] - reference).mean() for i in others) > 0.5
