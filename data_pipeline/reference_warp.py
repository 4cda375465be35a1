"""The portrait carried onto target frames by the tracked mesh: a warped reference.

Each pixel of a target frame that sees the mesh sees one surface point (a triangle and its
barycentric coordinates, `Renderer.surface`). The same point on the mesh posed as in the
portrait, projected into the portrait's camera, says where the portrait shows it; the portrait is
sampled there (bilinear over the pixels that show the mesh, so no background is blended in at its
silhouette). `valid` marks the pixels carried. A point the portrait's camera does not see (behind
the head, or outside the image) takes the colour of the nearest carried pixel: the portrait's own
pixel there shows another part of the picture (on the demo's validation clips those 2.7% of the
pixels held 42% of the warp's squared error; filled, the warp's PSNR rose from 26.44 to 26.89 dB).
Pixels off the mesh show the background: they keep the portrait's own where it shows the
background too, and where the portrait's head covers them (the head has moved away) they take
the colour of its nearest background pixel (on the validation clips those 1.4% of the pixels
took the warp from 26.89 to 31.69 dB).

Both meshes share one topology, so the correspondence needs no optimisation: it is exact for the
mesh, and as good as the tracking for a real portrait. Shading travels with the texture (the
portrait's light on the face, not the target's).
"""
import numpy as np
from scipy import ndimage

from data_pipeline.errors import require
from data_pipeline.renderer import Renderer, clip_inputs

# What the warp makes: 1, uncarried mesh pixels kept the portrait's own; 2, they take the nearest
# carried pixel's colour; 3, background the portrait's head covers takes its nearest background
# pixel's colour. Latent caches record it (data_pipeline/latent_cache.py).
WARP_VERSION = 3

# A target's surface point counts as seen by the portrait when its depth in the portrait's camera
# is within this share of the portrait's depth map around it (the mesh's own facets and the map's
# pixel grid disagree by about this much at grazing angles).
DEPTH_TOLERANCE = 0.02


def _projection(vertices, intrinsics, extrinsics):
  """Pixel coordinates (centres at i + 0.5) and camera-space depth of `vertices [V, 3]`."""
  camera = vertices @ extrinsics[:, :3].T + extrinsics[:, 3]
  image = camera @ intrinsics.T
  return image[:, :2] / image[:, 2:], camera[:, 2]


def warp_reference(faces, portrait, portrait_vertices, portrait_intrinsics, portrait_extrinsics,
                   vertices, intrinsics, extrinsics, fill_holes=True, fill_background=True):
  """`portrait` uint8 [H,W,3] seen by its camera with the mesh posed as `portrait_vertices
  [V,3]`, carried onto `T` target frames (`vertices [T,V,3]` or `[V,3]`, cameras `[T,...]`,
  rendered at the portrait's size). Returns `warped` uint8 [T,H,W,3] and `valid` bool [T,H,W]."""
  warped, valid = warp_references(faces, np.asarray(portrait)[None], np.asarray(portrait_vertices)[None],
                                  np.asarray(portrait_intrinsics)[None], np.asarray(portrait_extrinsics)[None],
                                  vertices, intrinsics, extrinsics, fill_holes, fill_background)
  return warped[0], valid[0]


def warp_references(faces, portraits, portrait_vertices, portrait_intrinsics, portrait_extrinsics,
                    vertices, intrinsics, extrinsics, fill_holes=True, fill_background=True):
  """`warp_reference` for `R` portraits at once (`[R, ...]` each) onto the same targets: each
  target frame is traced once. Returns `warped` uint8 [R,T,H,W,3] and `valid` bool [R,T,H,W].
  For comparison (benchmarks/reference_warp.py): `fill_holes=False`, mesh pixels the portrait
  cannot show keep its own (as warp version 1); `fill_background=False`, background pixels keep
  the portrait's own even where they show its head (as version 2)."""
  portraits = np.asarray(portraits)
  require(portraits.ndim == 4 and portraits.shape[3] == 3 and portraits.dtype == np.uint8,
          f"the portrait must be uint8 [H, W, 3], got {portraits.dtype} {list(portraits.shape[1:])}")
  count, height, width = portraits.shape[:3]
  renderer = Renderer(faces, height, width, threads=1)
  vertices, intrinsics, extrinsics = clip_inputs(vertices, intrinsics, extrinsics)
  portrait_vertices = np.asarray(portrait_vertices, np.float64)
  require(portrait_vertices.shape == (count,) + vertices.shape[1:],
          f"the portrait's mesh has {portrait_vertices.shape[1]} vertices, the targets' {vertices.shape[1]}")
  views = [_PortraitView(renderer, portraits[r], portrait_vertices[r], np.asarray(portrait_intrinsics[r], np.float64),
                         np.asarray(portrait_extrinsics[r], np.float64)) for r in range(count)]
  warped = np.broadcast_to(portraits[:, None], (count, len(vertices)) + portraits.shape[1:]).copy()
  valid = np.zeros((count, len(vertices), height, width), bool)
  for t in range(len(vertices)):
    surface = renderer.surface(vertices[t], intrinsics[t], extrinsics[t])
    pixel = np.flatnonzero(surface["triangle"] >= 0)
    corners = renderer.faces[surface["triangle"].ravel()[pixel]]
    u, v = (surface["barycentric"].reshape(-1, 2)[pixel, i, None] for i in range(2))
    barycentric = np.concatenate([1.0 - u - v, u, v], axis=1)
    for r, view in enumerate(views):
      carried, colours = view.carry(corners, barycentric)
      warped[r, t].reshape(-1, 3)[pixel[carried]] = colours
      valid[r, t].ravel()[pixel[carried]] = True
      if fill_holes:
        _fill_holes(warped[r, t], valid[r, t], surface["triangle"] >= 0)
      if fill_background:
        view.uncover(warped[r, t], surface["triangle"] >= 0)
  return warped, valid


def _fill_holes(image, valid, on_mesh):
  """Mesh pixels of `image [H, W, 3]` the portrait did not show take the nearest carried pixel's
  colour (in place)."""
  holes = on_mesh & ~valid
  if holes.any() and valid.any():
    rows, columns = ndimage.distance_transform_edt(~valid, return_distances=False, return_indices=True)
    image[holes] = image[rows[holes], columns[holes]]


class _PortraitView:
  """One portrait, its camera and its posed mesh: where it shows each surface point."""

  def __init__(self, renderer, portrait, vertices, intrinsics, extrinsics):
    self.height, self.width = portrait.shape[:2]
    self.rgb = portrait.reshape(-1, 3).astype(np.float32)
    self.seen_at, self.seen_depth = _projection(vertices, intrinsics, extrinsics)
    self.depth = renderer.surface(vertices, intrinsics, extrinsics)["depth"].ravel()
    self.portrait = portrait
    self.head = (self.depth > 0).reshape(self.height, self.width)
    # Each pixel's nearest background pixel of the portrait (none when the head fills it).
    self.background_at = (ndimage.distance_transform_edt(self.head, return_distances=False, return_indices=True)
                          if not self.head.all() else None)

  def uncover(self, image, on_mesh):
    """Target pixels off the mesh `[H, W]` where the portrait shows its head take the colour of the
    portrait's nearest background pixel (in place in `image [H, W, 3]`)."""
    uncovered = self.head & ~on_mesh
    if self.background_at is not None and uncovered.any():
      rows, columns = self.background_at
      image[uncovered] = self.portrait[rows[uncovered], columns[uncovered]]

  def carry(self, corners, barycentric):
    """For surface points (their triangles' `corners [N, 3]` and `barycentric [N, 3]` weights):
    which the portrait shows (bool [N]) and their colours there (uint8 [n, 3])."""
    height, width = self.height, self.width
    point_at = np.sum(self.seen_at[corners] * barycentric[..., None], axis=1)
    point_depth = np.sum(self.seen_depth[corners] * barycentric, axis=1)
    x, y = point_at[:, 0] - 0.5, point_at[:, 1] - 0.5  # array indices of the pixel centres
    inside = (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)
    x0 = np.clip(np.floor(x), 0, width - 2).astype(int)
    y0 = np.clip(np.floor(y), 0, height - 2).astype(int)
    fx, fy = np.clip(x - x0, 0.0, 1.0), np.clip(y - y0, 0.0, 1.0)
    # Bilinear over the four pixels around the point, those off the mesh left out (no background
    # blended into the face at the portrait's silhouette). The point is seen when one of them
    # shows the mesh at its depth: a nearer surface there means the point is hidden behind it.
    corners_at = [(y0 + dy) * width + x0 + dx for dy in (0, 1) for dx in (0, 1)]
    bilinear = np.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy])
    corner_depth = np.stack([self.depth[at] for at in corners_at])
    on_mesh = corner_depth > 0
    weights = bilinear * on_mesh
    total = weights.sum(axis=0)
    farthest_surface = np.max(np.where(on_mesh, corner_depth, 0.0), axis=0)
    seen = inside & (total > 0) & (point_depth <= farthest_surface * (1.0 + DEPTH_TOLERANCE))
    weights = weights[:, seen] / total[seen]
    colours = np.stack([self.rgb[at[seen]] for at in corners_at])  # [4, n, 3]
    return seen, np.clip(np.rint(np.sum(weights[..., None] * colours, axis=0)), 0, 255).astype(np.uint8)
