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
import threadpoolctl
from embreex import rtcore, rtcore_scene
from embreex.mesh_construction import TriangleMesh

from data_pipeline.cameras import validate_cameras
from data_pipeline.errors import require, require_finite, require_resolution
from data_pipeline.rays import camera_directions

_DEVICE = None
_LAST_SCENE = None  # (faces, vertices, scene) of the last scene built


def _remember_scene(faces, vertices, scene):
  global _LAST_SCENE
  _LAST_SCENE = (faces, vertices, scene)
_OPENCV_TO_VIEW = np.array([1.0, -1.0, -1.0], np.float32)


def _index_rows(faces):
  """The faces as embreex's `TriangleMesh` reads them fastest. It copies the index array one
  Python item at a time (`faces[i][0]`); on an int array each row read makes a numpy view, on an
  object array of tuples it is a tuple lookup: 10 ms -> 2 ms of a 512x512 frame's ~45 (11.6k
  triangles). Made once per topology."""
  rows = np.empty(len(faces), dtype=object)
  rows[:] = [tuple(row) for row in faces.tolist()]
  return rows


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


_TILE = 8  # pixels a side of the tiles the culling works in


def _tile_pixels(height, width):
  """Flat pixel indices of every `_TILE` x `_TILE` tile, `[tiles, _TILE**2]`, -1 past the edge."""
  tiles_y, tiles_x = -(-height // _TILE), -(-width // _TILE)
  rows = np.arange(tiles_y * _TILE).reshape(tiles_y, 1, _TILE, 1)
  cols = np.arange(tiles_x * _TILE).reshape(1, tiles_x, 1, _TILE)
  index = np.where((rows < height) & (cols < width), rows * width + cols, -1)
  return index.reshape(tiles_y * tiles_x, _TILE * _TILE)


def _covered_pixels(uv, faces_by_corner, tile_pixels, height, width):
  """Flat indices of the pixels in tiles that some triangle's projected bounding box touches
  (`uv [V, 2]` the vertices' image coordinates, padded a pixel against rounding): a superset of
  the pixels whose rays can hit the mesh. Boxes are summed in a 2-D difference array."""
  tiles_y, tiles_x = -(-height // _TILE), -(-width // _TILE)
  # A vertex's box is the tiles holding the pixel centres within 1.5 pixels of it.
  low = np.floor((uv - 1.5) / _TILE).astype(np.int32)
  high = np.floor((uv + 1.5) / _TILE).astype(np.int32)
  col0, row0 = np.maximum(np.take(low, faces_by_corner, axis=0).min(axis=0), 0).T
  col1, row1 = np.minimum(np.take(high, faces_by_corner, axis=0).max(axis=0), [tiles_x - 1, tiles_y - 1]).T
  inside = (col0 <= col1) & (row0 <= row1)
  col0, row0, col1, row1 = col0[inside], row0[inside], col1[inside] + 1, row1[inside] + 1
  stride = tiles_x + 1
  corners = np.concatenate([row0 * stride + col0, row0 * stride + col1, row1 * stride + col0, row1 * stride + col1])
  sign = np.repeat(np.array([1.0, -1.0, -1.0, 1.0]), len(col0))
  counts = np.bincount(corners, sign, minlength=(tiles_y + 1) * stride).reshape(tiles_y + 1, stride)
  covered = np.cumsum(np.cumsum(counts, axis=0), axis=1)[:tiles_y, :tiles_x] > 0.5
  pixels = tile_pixels[covered.ravel()].ravel()
  return pixels[pixels >= 0]


def encode_normals(normals, hit=None):
  """Unit normals (OpenCV camera coordinates) -> uint8 normal map; pixels off `hit` are 0."""
  encoded = normals * _OPENCV_TO_VIEW
  encoded += 1.0
  encoded *= 127.5
  np.clip(np.rint(encoded, out=encoded), 0, 255, out=encoded)
  encoded = encoded.astype(np.uint8)
  if hit is not None:
    encoded[~hit] = 0
  return encoded


def decode_normals(encoded):
  """uint8 normal map -> unit normals in OpenCV camera coordinates (zeros off the mesh)."""
  normals = normalize((encoded.astype(np.float32) / 127.5 - 1.0) * _OPENCV_TO_VIEW)
  return np.where(np.any(encoded > 0, axis=-1, keepdims=True), normals, 0.0)


def normalize(vectors):
  """Rows scaled to unit length (zero rows stay zero)."""
  norm = np.sqrt(np.einsum("...i,...i->...", vectors, vectors))[..., None]
  return vectors / np.maximum(norm, 1e-12)


def clip_inputs(vertices, intrinsics, extrinsics):
  """A clip's meshes and cameras as arrays of `T` frames (one mesh `[V, 3]` serves every frame)."""
  intrinsics, extrinsics, vertices = np.asarray(intrinsics), np.asarray(extrinsics), np.asarray(vertices)
  num_frames = len(extrinsics)
  if vertices.ndim == 2:
    vertices = np.broadcast_to(vertices, (num_frames,) + vertices.shape)
  require(len(vertices) == num_frames and len(intrinsics) == num_frames,
          f"need one mesh and one camera per frame: {len(vertices)} meshes, {len(intrinsics)} intrinsics, {num_frames} extrinsics")
  return vertices, intrinsics, extrinsics


class Renderer:
  """Renders one triangle topology (`faces [F,3]`) at a fixed resolution.

  `threads` frames (or ray batches of one frame) are in flight at once. embreex releases the GIL
  while tracing but holds it while it copies a mesh in, and numpy's many small steps hold it too,
  so threads overlap only part of a frame: `RenderPool` renders frames in processes.
  `supersample` renders s x s samples per pixel and box-filters them.
  """

  def __init__(self, faces, height, width, supersample=1, threads=None):
    require_resolution(height, width)
    faces = np.ascontiguousarray(faces, dtype=np.int32)
    require(faces.ndim == 2 and faces.shape[1] == 3 and len(faces) > 0, "cannot render an empty mesh")
    require(int(supersample) == supersample and supersample >= 1, "supersample must be an integer >= 1")
    self.faces = faces
    self.height, self.width, self.supersample = int(height), int(width), int(supersample)
    self._faces_by_corner = np.ascontiguousarray(faces.T)
    self._index_rows = _index_rows(faces)
    self._tile_pixels = _tile_pixels(self.height * self.supersample, self.width * self.supersample)
    self.threads = threads or min(4, os.cpu_count() or 1)
    self._pool = concurrent.futures.ThreadPoolExecutor(self.threads) if self.threads > 1 else None
    num_vertices = int(faces.max()) + 1
    rows = faces.ravel()
    cols = np.repeat(np.arange(len(faces)), 3)
    # Vertex normal = sum of the area-weighted normals of the faces around it.
    self._vertex_faces = scipy.sparse.csr_matrix(
        (np.ones(len(rows), np.float32), (rows, cols)), shape=(num_vertices, len(faces)))

  def vertex_normals(self, vertices):
    v = np.take(vertices, self.faces, axis=0)
    face_normals = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]).astype(np.float32)
    return normalize(self._vertex_faces @ face_normals)

  def _scene(self, vertices):
    """The Embree scene of this mesh, reusing the last one built when nothing moved (a frozen
    pose seen by a moving camera, or the same frame rendered again at another size): building
    costs about as much as tracing a 512x512 frame."""
    last = _LAST_SCENE  # one read: other threads may replace it meanwhile
    if last is not None and np.array_equal(last[1], vertices) and np.array_equal(last[0], self.faces):
      return last[2]
    scene = rtcore_scene.EmbreeScene(_device(), robust=False)
    TriangleMesh(scene, vertices, self._index_rows)
    scene.run(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.float32))  # commits the scene
    _remember_scene(self.faces, vertices.copy(), scene)
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

  def _hits(self, vertices, intrinsics, extrinsics, supersample, threads):
    """Traces the rays of one camera at `supersample` samples a side: the flat indices of the
    samples that hit the mesh, Embree's hit record for them (`primID`, `u`, `v`, `tfar`), their
    camera-space directions, world directions and the camera centre."""
    vertices = np.ascontiguousarray(vertices, dtype=np.float32)
    require(vertices.ndim == 2 and vertices.shape[1] == 3 and len(vertices) > 0,
            "cannot render an empty mesh")
    require(len(vertices) > self.faces.max(), "faces index past the last vertex")
    require_finite("mesh vertices", vertices)
    intrinsics, extrinsics = np.asarray(intrinsics, np.float64), np.asarray(extrinsics, np.float64)
    validate_cameras(intrinsics[None], extrinsics[None])

    s = supersample
    height, width = self.height * s, self.width * s
    k = np.diag([s, s, 1.0]) @ intrinsics
    rotation = extrinsics[:, :3].astype(np.float32)
    translation = extrinsics[:, 3].astype(np.float32)
    centre = -rotation.T @ translation

    # Trace only the pixels a triangle's projected bounding box covers: every other ray misses.
    cam = vertices @ rotation.T + translation
    if np.all(cam[:, 2] > 1e-6):
      projected = cam @ k.T.astype(np.float32)
      tiles = self._tile_pixels if s == self.supersample else _tile_pixels(height, width)
      candidates = _covered_pixels(projected[:, :2] / projected[:, 2:], self._faces_by_corner,
                                   tiles, height, width)
    else:  # part of the mesh is behind the camera: its projection is unbounded
      candidates = np.arange(height * width)
    # np.take: several times faster than fancy indexing for row gathers.
    directions_cam = np.take(camera_directions(k, height, width).reshape(-1, 3), candidates, axis=0)
    directions = directions_cam @ rotation
    if not len(directions_cam):
      return candidates, {}, directions_cam, directions, centre, None
    scene = self._scene(vertices)
    result = self._trace(scene, np.broadcast_to(centre, directions.shape), directions,
                         self.threads if threads is None else threads)
    hits = np.flatnonzero(result["primID"] >= 0)
    result = {key: result[key][hits] for key in ("primID", "u", "v", "tfar")}
    return candidates[hits], result, directions_cam[hits], directions[hits], centre, scene

  def surface(self, vertices, intrinsics, extrinsics, threads=None):
    """What each pixel's centre sees of the mesh, one sample a pixel: `triangle` int32 [H,W] (-1
    off the mesh), `barycentric` float32 [H,W,2] (Embree's u, v: the point is
    `a + u (b - a) + v (c - a)` of the triangle's corners a, b, c) and `depth` float32 [H,W]
    (camera-space z, 0 off the mesh)."""
    pixel, result, directions_cam, _, _, _ = self._hits(vertices, intrinsics, extrinsics, 1, threads)
    size = self.height * self.width
    triangle = np.full(size, -1, np.int32)
    barycentric = np.zeros((size, 2), np.float32)
    depth = np.zeros(size, np.float32)
    if len(pixel):
      triangle[pixel] = result["primID"]
      barycentric[pixel, 0], barycentric[pixel, 1] = result["u"], result["v"]
      depth[pixel] = result["tfar"] * directions_cam[:, 2]
    shape = (self.height, self.width)
    return {"triangle": triangle.reshape(shape), "barycentric": barycentric.reshape(shape + (2,)),
            "depth": depth.reshape(shape)}

  def render(self, vertices, intrinsics, extrinsics, albedo=None, lighting=None, background=None,
             threads=None):
    """Renders one frame. Returns a dict of `normals` uint8 [H,W,3], `depth` float32 [H,W],
    `mask` uint8 [H,W] and, when `albedo [V,3]` (RGB in [0, 1]) is given, `rgb` uint8 [H,W,3]."""
    pixel, result, directions_cam, directions, centre, scene = self._hits(
        vertices, intrinsics, extrinsics, self.supersample, threads)
    vertices = np.asarray(vertices, np.float32)
    rotation = np.asarray(extrinsics, np.float64)[:, :3].astype(np.float32)
    attributes = {}
    if len(pixel):
      u, v = result["u"][:, None], result["v"][:, None]
      corners = np.take(self._faces_by_corner, result["primID"], axis=1)  # [3, N]: hit triangles' corners

      def interpolate(per_vertex):
        """`a + u (b - a) + v (c - a)` at each hit, in place: a third of the time of the weighted sum."""
        a, b, c = (np.take(per_vertex, corner, axis=0) for corner in corners)
        b -= a
        b *= u
        c -= a
        c *= v
        a += b
        a += c
        return a

      world_normals = normalize(interpolate(self.vertex_normals(vertices)))
      t_hit = result["tfar"]
      attributes["normals"] = world_normals @ rotation.T
      attributes["depth"] = t_hit * directions_cam[:, 2]
      if albedo is not None:
        attributes["rgb"] = self._shade(scene, interpolate(np.asarray(albedo, np.float32)), world_normals,
                                        directions, centre + t_hit[:, None] * directions, lighting or Lighting())
    if self.supersample == 1:
      return self._scatter(pixel, attributes, background if albedo is not None else None, albedo is not None)
    return self._supersampled(pixel, attributes, background, albedo is not None)

  def _scatter(self, pixel, attributes, background, with_rgb):
    """Writes hit attributes into full images (no supersampling)."""
    size = self.height * self.width
    normals = np.zeros((size, 3), np.uint8)
    depth = np.zeros(size, np.float32)
    mask = np.zeros(size, np.uint8)
    if len(pixel):
      encoded = encode_normals(attributes["normals"])
      for channel in range(3):  # one channel at a time: a 1-D scatter is faster than a row scatter
        normals[:, channel][pixel] = encoded[:, channel]
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
    vertices, intrinsics, extrinsics = clip_inputs(vertices, intrinsics, extrinsics)
    num_frames = len(extrinsics)
    render = lambda t: self.render(vertices[t], intrinsics[t], extrinsics[t], albedo, lighting, background, threads=1)
    if self._pool is None or num_frames == 1:
      frames = [render(t) for t in range(num_frames)]
    else:
      # Concurrent frames each waking BLAS's own thread pool for their small matrix products
      # would fight over the cores.
      with threadpoolctl.threadpool_limits(1, user_api="blas"):
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
