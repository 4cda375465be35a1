"""Host-side ray-cast renderer on Embree (through embreex): normals, depth, mask, shaded RGB.

Normal map encoding: the unit surface normal in camera coordinates, converted from OpenCV's
(x right, y down, z forward) to (x right, y up, z towards the viewer) and stored as
`uint8 = round((n + 1) / 2 * 255)`, so a surface facing the camera is (128, 128, 255).
Pixels off the mesh are 0. Depth is the camera-space z in metres (0 off the mesh); the mask is
the pixel's coverage, 0..255 (binary without supersampling).
"""
import concurrent.futures
import dataclasses
import os

import numpy as np
import scipy.sparse
from embreex import rtcore, rtcore_scene
from embreex.mesh_construction import TriangleMesh

from data_pipeline.cameras import validate_cameras
from data_pipeline.errors import require, require_finite, require_resolution
from data_pipeline.rays import camera_directions

_DEVICE = None
_OPENCV_TO_VIEW = np.array([1.0, -1.0, -1.0], np.float32)


def _device():
  global _DEVICE
  if _DEVICE is None:
    _DEVICE = rtcore.EmbreeDevice()
  return _DEVICE


@dataclasses.dataclass(frozen=True)
class Lighting:
  """Ambient plus one directional light (direction towards the light, world coordinates)."""
  ambient: tuple = (0.35, 0.35, 0.35)
  direction: tuple = (0.3, 0.5, 1.0)
  colour: tuple = (0.75, 0.75, 0.75)
  specular: float = 0.08
  shininess: float = 24.0
  shadows: bool = True


@dataclasses.dataclass(frozen=True)
class Background:
  """Vertical gradient from `top` to `bottom` (RGB in [0, 1]); equal colours give a solid one."""
  top: tuple = (0.8, 0.8, 0.8)
  bottom: tuple = (0.6, 0.6, 0.6)


def encode_normals(normals, hit):
  encoded = np.rint((normals * _OPENCV_TO_VIEW + 1.0) * 127.5)
  return np.where(hit[..., None], np.clip(encoded, 0, 255), 0).astype(np.uint8)


def decode_normals(encoded):
  """uint8 normal map -> unit normals in OpenCV camera coordinates (zeros off the mesh)."""
  normals = normalize((encoded.astype(np.float32) / 127.5 - 1.0) * _OPENCV_TO_VIEW)
  return np.where(np.any(encoded > 0, axis=-1, keepdims=True), normals, 0.0)


def normalize(vectors):
  """Rows scaled to unit length (zero rows stay zero)."""
  norm = np.sqrt(np.einsum("...i,...i->...", vectors, vectors))[..., None]
  return vectors / np.maximum(norm, 1e-12)


class Renderer:
  """Renders one triangle topology (`faces [F,3]`) at a fixed resolution.

  `threads` Embree ray batches run concurrently (embreex releases the GIL while tracing).
  `supersample` renders s x s samples per pixel and box-filters them.
  """

  def __init__(self, faces, height, width, supersample=1, threads=None):
    require_resolution(height, width)
    faces = np.ascontiguousarray(faces, dtype=np.int32)
    require(faces.ndim == 2 and faces.shape[1] == 3 and len(faces) > 0, "cannot render an empty mesh")
    require(int(supersample) == supersample and supersample >= 1, "supersample must be an integer >= 1")
    self.faces = faces
    self.height, self.width, self.supersample = int(height), int(width), int(supersample)
    self.threads = threads or min(4, os.cpu_count() or 1)
    self._pool = concurrent.futures.ThreadPoolExecutor(self.threads) if self.threads > 1 else None
    num_vertices = int(faces.max()) + 1
    rows = faces.ravel()
    cols = np.repeat(np.arange(len(faces)), 3)
    # Vertex normal = sum of the area-weighted normals of the faces around it.
    self._vertex_faces = scipy.sparse.csr_matrix(
        (np.ones(len(rows), np.float32), (rows, cols)), shape=(num_vertices, len(faces)))

  def vertex_normals(self, vertices):
    v = vertices[self.faces]
    face_normals = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]).astype(np.float32)
    return normalize(self._vertex_faces @ face_normals)

  def _scene(self, vertices):
    scene = rtcore_scene.EmbreeScene(_device(), robust=False)
    TriangleMesh(scene, vertices, self.faces)
    return scene

  def _trace(self, scene, origins, directions, threads):
    origins, directions = np.ascontiguousarray(origins), np.ascontiguousarray(directions)
    if threads <= 1 or self._pool is None or len(directions) < 4096:
      return scene.run(origins, directions, output=1)
    # Many small batches: hits cost ~4x misses, so equal halves would leave a thread idle.
    bounds = np.linspace(0, len(directions), 8 * threads + 1).astype(int)
    jobs = [self._pool.submit(scene.run, origins[a:b], directions[a:b], None, "INTERSECT", 1)
            for a, b in zip(bounds[:-1], bounds[1:])]
    parts = [job.result() for job in jobs]
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}

  def _occluded(self, scene, origins, directions):
    return scene.run(origins, directions, query="OCCLUDED") >= 0

  def render(self, vertices, intrinsics, extrinsics, albedo=None, lighting=None, background=None,
             threads=None):
    """Renders one frame. Returns a dict of `normals` uint8 [H,W,3], `depth` float32 [H,W],
    `mask` uint8 [H,W] and, when `albedo [V,3]` (RGB in [0, 1]) is given, `rgb` uint8 [H,W,3]."""
    vertices = np.ascontiguousarray(vertices, dtype=np.float32)
    require(vertices.ndim == 2 and vertices.shape[1] == 3 and len(vertices) > 0,
            "cannot render an empty mesh")
    require(len(vertices) > self.faces.max(), "faces index past the last vertex")
    require_finite("mesh vertices", vertices)
    intrinsics, extrinsics = np.asarray(intrinsics, np.float64), np.asarray(extrinsics, np.float64)
    validate_cameras(intrinsics[None], extrinsics[None])

    s = self.supersample
    height, width = self.height * s, self.width * s
    k = np.diag([s, s, 1.0]) @ intrinsics
    rotation = extrinsics[:, :3].astype(np.float32)
    translation = extrinsics[:, 3].astype(np.float32)
    centre = -rotation.T @ translation

    # Trace only the pixels inside the mesh's projected bounding box.
    cam = vertices @ rotation.T + translation
    rows, cols = slice(0, height), slice(0, width)
    if np.all(cam[:, 2] > 1e-6):
      projected = cam @ k.T.astype(np.float32)
      uv = projected[:, :2] / projected[:, 2:]
      u0, v0 = np.floor(uv.min(axis=0)).astype(int) - 1
      u1, v1 = np.ceil(uv.max(axis=0)).astype(int) + 1
      rows = slice(min(max(v0, 0), height), max(min(v1, height), 0))
      cols = slice(min(max(u0, 0), width), max(min(u1, width), 0))
    box_rows = np.arange(height)[rows]
    box_cols = np.arange(width)[cols]
    directions_cam = camera_directions(k, height, width)[rows, cols].reshape(-1, 3)

    pixel = np.zeros(0, np.int64)
    attributes = {}
    if len(directions_cam):
      directions = directions_cam @ rotation
      origins = np.broadcast_to(centre, directions.shape)
      scene = self._scene(vertices)
      result = self._trace(scene, origins, directions, self.threads if threads is None else threads)
      hits = np.flatnonzero(result["primID"] >= 0)
      # Flat pixel index of every hit in the full image.
      pixel = (box_rows[hits // len(box_cols)] * width + box_cols[hits % len(box_cols)])
      face = self.faces[result["primID"][hits]]
      u, v = result["u"][hits], result["v"][hits]
      bary = np.stack([1.0 - u - v, u, v], axis=1)

      def interpolate(per_vertex):
        return np.einsum("nij,ni->nj", np.take(per_vertex, face, axis=0), bary)

      world_normals = normalize(interpolate(self.vertex_normals(vertices)))
      t_hit = result["tfar"][hits]
      attributes["normals"] = world_normals @ rotation.T
      attributes["depth"] = t_hit * directions_cam[hits, 2]
      if albedo is not None:
        ray = directions[hits]
        attributes["rgb"] = self._shade(scene, interpolate(np.asarray(albedo, np.float32)), world_normals,
                                        ray, centre + t_hit[:, None] * ray, lighting or Lighting())
    if s == 1:
      return self._scatter(pixel, attributes, background if albedo is not None else None, albedo is not None)
    return self._supersampled(pixel, attributes, background, albedo is not None)

  def _scatter(self, pixel, attributes, background, with_rgb):
    """Writes hit attributes into full images (no supersampling)."""
    size = self.height * self.width
    normals = np.zeros((size, 3), np.uint8)
    depth = np.zeros(size, np.float32)
    mask = np.zeros(size, np.uint8)
    if len(pixel):
      normals[pixel] = encode_normals(attributes["normals"], np.ones(len(pixel), bool))
      depth[pixel] = attributes["depth"]
      mask[pixel] = 255
    shape = (self.height, self.width)
    out = {"normals": normals.reshape(shape + (3,)), "depth": depth.reshape(shape), "mask": mask.reshape(shape)}
    if with_rgb:
      rgb = np.rint(self._background(background or Background(), *shape) * 255.0).astype(np.uint8).reshape(size, 3)
      if len(pixel):
        rgb[pixel] = np.clip(np.rint(attributes["rgb"] * 255.0), 0, 255)
      out["rgb"] = rgb.reshape(shape + (3,))
    return out

  def _supersampled(self, pixel, attributes, background, with_rgb):
    """Box-filters s x s samples per pixel: coverage mask, averaged normals, depth and colour."""
    s = self.supersample
    height, width = self.height * s, self.width * s
    coverage = np.zeros(height * width, np.float32)
    coverage[pixel] = 1.0
    normals = np.zeros((height * width, 3), np.float32)
    depth = np.zeros(height * width, np.float32)
    if len(pixel):
      normals[pixel] = attributes["normals"]
      depth[pixel] = attributes["depth"]
    coverage = self._downsample(coverage.reshape(height, width))
    normals = self._downsample(normals.reshape(height, width, 3))
    normals = normalize(normals)
    depth = self._downsample(depth.reshape(height, width)) / np.maximum(coverage, 1e-12)
    covered = coverage >= 0.5
    out = {
        "normals": encode_normals(normals, covered),
        "depth": np.where(covered, depth, 0.0).astype(np.float32),
        "mask": np.rint(coverage * 255.0).astype(np.uint8),
    }
    if with_rgb:
      rgb = self._background(background or Background(), height, width).reshape(-1, 3).copy()
      if len(pixel):
        rgb[pixel] = attributes["rgb"]
      out["rgb"] = np.clip(np.rint(self._downsample(rgb.reshape(height, width, 3)) * 255.0), 0, 255).astype(np.uint8)
    return out

  @staticmethod
  def _background(background, height, width):
    """Float RGB `[H, W, 3]` in [0, 1]: a vertical gradient."""
    fade = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    top, bottom = np.asarray(background.top, np.float32), np.asarray(background.bottom, np.float32)
    return np.broadcast_to((1.0 - fade) * top + fade * bottom, (height, width, 3))

  def render_clip(self, vertices, intrinsics, extrinsics, albedo=None, lighting=None, background=None):
    """Renders `T` frames (`vertices [T,V,3]` or `[V,3]`, cameras `[T,...]`), two frames in
    flight so one frame's scene build overlaps another's tracing. Returns stacked arrays."""
    intrinsics, extrinsics = np.asarray(intrinsics), np.asarray(extrinsics)
    vertices = np.asarray(vertices)
    num_frames = len(extrinsics)
    if vertices.ndim == 2:
      vertices = np.broadcast_to(vertices, (num_frames,) + vertices.shape)
    require(len(vertices) == num_frames and len(intrinsics) == num_frames,
            f"need one mesh and one camera per frame: {len(vertices)} meshes, {len(intrinsics)} intrinsics, {num_frames} extrinsics")
    render = lambda t: self.render(vertices[t], intrinsics[t], extrinsics[t], albedo, lighting, background, threads=1)
    if self._pool is None or num_frames == 1:
      frames = [render(t) for t in range(num_frames)]
    else:
      frames = list(self._pool.map(render, range(num_frames)))
    return {key: np.stack([frame[key] for frame in frames]) for key in frames[0]}

  def _shade(self, scene, albedo, normals, directions, points, lighting):
    light = np.asarray(lighting.direction, np.float32)
    light = light / np.linalg.norm(light)
    # Interpolated normals may face away at silhouettes; shade the side the ray sees.
    facing = np.sum(normals * directions, axis=1, keepdims=True) > 0
    normals = np.where(facing, -normals, normals)
    diffuse = np.clip(normals @ light, 0.0, None)[:, None]
    if lighting.shadows and len(points):
      lit = diffuse[:, 0] > 0
      origins = np.ascontiguousarray(points[lit] + 1e-4 * normals[lit], np.float32)
      blocked = self._occluded(scene, origins, np.ascontiguousarray(np.broadcast_to(light, origins.shape)))
      shadow = np.ones(len(points), np.float32)
      shadow[np.flatnonzero(lit)[blocked]] = 0.0
      diffuse = diffuse * shadow[:, None]
    halfway = normalize(light[None] - directions)
    specular = lighting.specular * np.clip(np.sum(normals * halfway, axis=1), 0.0, None) ** lighting.shininess
    colour = np.asarray(lighting.colour, np.float32)
    return albedo * (np.asarray(lighting.ambient, np.float32) + colour * diffuse) + (specular[:, None] * diffuse) * colour

  def _downsample(self, image):
    s = self.supersample
    if s == 1:
      return image
    shape = (self.height, s, self.width, s) + image.shape[2:]
    return image.reshape(shape).mean(axis=(1, 3))
