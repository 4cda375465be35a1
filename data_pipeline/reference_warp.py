"""The portrait carried onto target frames by the tracked mesh: a warped reference.

Each pixel of a target frame that sees the mesh sees one surface point (a triangle and its
barycentric coordinates, `Renderer.surface`). The same point on the mesh posed as in the
portrait, projected into the portrait's camera, says where the portrait shows it; the portrait is
sampled there (bilinear over the pixels that show the mesh, so no background is blended in at its
silhouette). A point the portrait's camera does not see (behind the head, or outside the image)
keeps the portrait's own pixel, as do pixels off the mesh: `valid` marks the pixels carried.

Both meshes share one topology, so the correspondence needs no optimisation: it is exact for the
mesh, and as good as the tracking for a real portrait. Shading travels with the texture (the
portrait's light on the face, not the target's).
"""
import numpy as np

from data_pipeline.errors import require
from data_pipeline.renderer import Renderer, clip_inputs

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
                   vertices, intrinsics, extrinsics):
  """`portrait` uint8 [H,W,3] seen by its camera with the mesh posed as `portrait_vertices
  [V,3]`, carried onto `T` target frames (`vertices [T,V,3]` or `[V,3]`, cameras `[T,...]`,
  rendered at the portrait's size). Returns `warped` uint8 [T,H,W,3] and `valid` bool [T,H,W]."""
  portrait = np.asarray(portrait)
  require(portrait.ndim == 3 and portrait.shape[2] == 3 and portrait.dtype == np.uint8,
          f"the portrait must be uint8 [H, W, 3], got {portrait.dtype} {list(portrait.shape)}")
  height, width = portrait.shape[:2]
  renderer = Renderer(faces, height, width, threads=1)
  vertices, intrinsics, extrinsics = clip_inputs(vertices, intrinsics, extrinsics)
  portrait_vertices = np.asarray(portrait_vertices, np.float64)
  require(portrait_vertices.shape == vertices.shape[1:],
          f"the portrait's mesh has {portrait_vertices.shape[0]} vertices, the targets' {vertices.shape[1]}")
  portrait_intrinsics = np.asarray(portrait_intrinsics, np.float64)
  portrait_extrinsics = np.asarray(portrait_extrinsics, np.float64)
  seen_at, seen_depth = _projection(portrait_vertices, portrait_intrinsics, portrait_extrinsics)
  portrait_depth = renderer.surface(portrait_vertices, portrait_intrinsics, portrait_extrinsics)["depth"]
  faces = renderer.faces
  portrait_rgb = portrait.reshape(-1, 3).astype(np.float32)
  warped = np.broadcast_to(portrait, (len(vertices),) + portrait.shape).copy()
  valid = np.zeros((len(vertices), height, width), bool)
  for t in range(len(vertices)):
    surface = renderer.surface(vertices[t], intrinsics[t], extrinsics[t])
    pixel = np.flatnonzero(surface["triangle"] >= 0)
    corners = faces[surface["triangle"].ravel()[pixel]]
    u, v = (surface["barycentric"].reshape(-1, 2)[pixel, i, None] for i in range(2))
    barycentric = np.concatenate([1.0 - u - v, u, v], axis=1)
    point_at = np.sum(seen_at[corners] * barycentric[..., None], axis=1)  # where the portrait shows each point
    point_depth = np.sum(seen_depth[corners] * barycentric, axis=1)
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
    corner_depth = np.stack([portrait_depth.ravel()[at] for at in corners_at])
    on_mesh = corner_depth > 0
    weights = bilinear * on_mesh
    total = weights.sum(axis=0)
    farthest_surface = np.max(np.where(on_mesh, corner_depth, 0.0), axis=0)
    seen = inside & (total > 0) & (point_depth <= farthest_surface * (1.0 + DEPTH_TOLERANCE))
    weights = weights[:, seen] / total[seen]
    colours = np.stack([portrait_rgb[at[seen]] for at in corners_at])  # [4, N, 3]
    carried = pixel[seen]
    warped[t].reshape(-1, 3)[carried] = np.clip(np.rint(np.sum(weights[..., None] * colours, axis=0)), 0, 255)
    valid[t].ravel()[carried] = True
  return warped, valid
