"""One stored clip -> one training example (numpy; runs in Grain workers, never imports jax).

Per example, from the example's own random generator (Grain seeds it from the pipeline seed and
the element's index, so results do not depend on which worker runs it):
- a window of `T = 4k + 1` frames, `stride` apart, at a random start;
- the reference image: a random frame of the same clip, or (`cross_clip`) of another clip of the
  same identity, i.e. another time and camera, as DeX-Portrait's cross-view training does;
- Plücker ray maps of the window's cameras; normal maps, stored or re-rendered on the fly;
- with `warped_reference`, the reference carried onto every frame of the window through the mesh
  (data_pipeline/reference_warp.py);
- the explicit head pose (6D rotation, t, s) and the ground-truth expression controls;
- the driving frames the expression encoder sees: face crops placed by the known head pose;
- condition-drop flags for classifier-free guidance (see `draw_drop_flags`);
- with `expression_twins = k`, k frames of the window (`twin_frames`) worn again by another person
  seen from another view (`twin_people`: one person for them all, or one each), cropped alike
  (`driving_twin`, data_pipeline/expression_twins.py), for the motion trainer. Twins are
  rendered in the worker, so k sets the input's cost.
The keys and shapes are listed in docs/data_format.md ("Training examples").
"""
import grain
import numpy as np
from PIL import Image

from data_pipeline import controls, expression_twins, face_crop, head_pose, rays, reference_warp, renderer, world
from data_pipeline.errors import require
from data_pipeline.template_head import build_template

CONDITIONS = ("reference", "expression", "pose", "camera")
REFERENCE_MODES = ("same_clip", "cross_clip")
NORMAL_SOURCES = ("stored", "render")
NORMAL_ENCODINGS = ("uint8", "unit")
CROP_SOURCES = ("frames", "stored", "mixed")
RAY_DTYPES = ("float32", "float16")


def crop_source(face_crop_config):
  """`(source, stored_share)` of a `face_crop` config: where crops come from and, for "mixed", the
  share of them rendered at crop resolution (configs older than the share: a half)."""
  source = face_crop_config.get("source", "frames")
  require(source in CROP_SOURCES, f"face_crop.source must be one of {CROP_SOURCES}, got {source!r}")
  share = float(face_crop_config.get("stored_share", 0.5))
  require(0.0 <= share <= 1.0, f"face_crop.stored_share must lie in [0, 1], got {share}")
  return source, share


def draw_drop_flags(rng, rates):
  """Which conditions this example trains without (True = dropped).

  Dropping everything (`all`) trains the unconditional branch and dropping the three motion
  signals together (`motion`) the reference-only branch of the hybrid guidance; otherwise each
  condition is dropped on its own with its own rate. One uniform draw picks among the joint
  cases, so their rates are exact; four more draws decide the single drops.
  """
  joint = rng.uniform()
  single = rng.uniform(size=len(CONDITIONS))
  if joint < rates["all"]:
    flags = np.ones(len(CONDITIONS), bool)
  elif joint < rates["all"] + rates["motion"]:
    flags = np.array([False, True, True, True])
  else:
    flags = single < np.array([rates[name] for name in CONDITIONS])
  return {f"drop_{name}": np.bool_(flag) for name, flag in zip(CONDITIONS, flags)}


def window_span(num_frames, stride):
  return (num_frames - 1) * stride + 1


def check_config(config, records):
  """Start-up checks of an input config against the dataset it reads (one-line errors)."""
  window = config.window
  require(window.num_frames >= 1 and (window.num_frames - 1) % 4 == 0,
          f"window.num_frames must be 4k+1 for the causal video VAE, got {window.num_frames}")
  require(window.stride >= 1, f"window.stride must be >= 1, got {window.stride}")
  span = window_span(window.num_frames, window.stride)
  require(span <= records.num_frames,
          f"a window of {window.num_frames} frames at stride {window.stride} spans {span} frames, "
          f"but the clips of {records.name} have {records.num_frames}")
  require(config.reference in REFERENCE_MODES,
          f"reference must be one of {REFERENCE_MODES}, got {config.reference!r}")
  require(config.normals.source in NORMAL_SOURCES,
          f"normals.source must be one of {NORMAL_SOURCES}, got {config.normals.source!r}")
  require(config.normals.encoding in NORMAL_ENCODINGS,
          f"normals.encoding must be one of {NORMAL_ENCODINGS}, got {config.normals.encoding!r}")
  require(config.normals.source == "render" or not (config.normals.height or config.normals.width),
          "normals.height/width need normals.source='render' (stored maps have the video's size)")
  require(config.rays_dtype in RAY_DTYPES, f"rays_dtype must be one of {RAY_DTYPES}, got {config.rays_dtype!r}")
  rates = dict(config.drop)
  require(set(rates) == set(CONDITIONS) | {"all", "motion"},
          f"drop rates must name exactly {sorted(set(CONDITIONS) | {'all', 'motion'})}, got {sorted(rates)}")
  require(all(0.0 <= rate <= 1.0 for rate in rates.values()), f"drop rates must lie in [0, 1], got {rates}")
  require(rates["all"] + rates["motion"] <= 1.0, "drop.all + drop.motion must not exceed 1")


class MakeExample(grain.transforms.RandomMap):
  """The per-example map of the training pipeline (picklable: it travels to Grain workers)."""

  def __init__(self, records, config):
    self._records = records
    self._num_frames = int(config.window.num_frames)
    self._stride = int(config.window.stride)
    self._reference = config.reference
    self._crop_size = int(config.face_crop.size)
    self._crop_margin = float(config.face_crop.margin)
    self._crop_source, self._stored_share = crop_source(config.face_crop)
    if self._crop_source != "frames":
      require(records.face_size > 0, f"face_crop.source={self._crop_source} needs stored face crops, and "
              f"{records!r} has none (build with face.size > 0, version 1.2.0 on)")
      require(abs(records.face_margin - self._crop_margin) < 1e-6,
              f"face_crop.margin {self._crop_margin} differs from the stored faces' {records.face_margin}")
    self._parts = face_crop.check_parts(config.face_crop.get("parts", ()))
    missing = [part for part in self._parts if part not in records.face_parts]
    require(self._crop_source == "frames" or not missing,
            f"face_crop.source={self._crop_source} needs the stored close-ups of {missing}, and {records!r} has "
            f"none (build with face.parts, version 1.5.0 on)")
    self._normals = config.normals.to_dict()
    self._rays_dtype = np.dtype(config.rays_dtype)
    self._warped_reference = bool(config.get("warped_reference", False))
    self._drop_rates = config.drop.to_dict()
    self._twins = int(config.get("expression_twins", 0))
    self._twin_people = config.get("twin_people", "one")
    require(self._twin_people in expression_twins.TWIN_PEOPLE,
            f"twin_people must be one of {expression_twins.TWIN_PEOPLE}, got {self._twin_people!r}")

  def random_map(self, index, rng):
    """`index`: a record of the split; it is read here, in the worker."""
    clip = self._records[int(index)]
    span = window_span(self._num_frames, self._stride)
    start = int(rng.integers(0, clip["frames"].shape[0] - span + 1))
    return self.example(int(index), start, rng, clip)

  def example(self, index, start, rng, clip=None):
    """The example of record `index` whose window starts at frame `start` (`rng`: the reference
    frame and the drop flags)."""
    clip = self._records[index] if clip is None else clip
    frames = np.arange(start, start + window_span(self._num_frames, self._stride), self._stride)
    source, reference_frame = self._reference_frame(index, clip, rng)
    reference = source["frames"][reference_frame]
    model = build_template()
    window = {key: clip[key][frames] for key in
              ("frames", "intrinsics", "extrinsics", "head_pose", "head_scale", "expression")}
    height, width = window["frames"].shape[1:3]
    views = face_crop.view_boxes(model, clip["shape"], window["head_pose"], window["head_scale"],
                                 window["intrinsics"], window["extrinsics"], self._crop_margin, self._parts)
    example = {
        "video": window["frames"],
        "reference": reference,
        "normals": self._normal_maps(model, clip, frames, window),
        "rays": rays.latent_grid_rays(window["intrinsics"], window["extrinsics"], height, width
                                  ).astype(self._rays_dtype, copy=False),
        "head_pose": head_pose.pose_vector(window["head_pose"], window["head_scale"]),
        "expression": window["expression"],
        "driving": self._driving_crops(clip, frames, window["frames"], views, rng),
        "face_boxes": views[0],
        "intrinsics": window["intrinsics"],
        "extrinsics": window["extrinsics"],
        "identity": np.int64(clip["identity"]),
        "regime": np.int64(clip["regime"]),
        "record": np.int64(index),
        "start_frame": np.int64(start),
    }
    if self._warped_reference:
      example["warped"] = warped_window(model, source, [reference_frame], clip, window)[0]
    example.update(draw_drop_flags(rng, self._drop_rates))
    if self._twins:
      count = len(frames)
      chosen = np.sort(rng.choice(count, min(self._twins, count), replace=False)).astype(np.int32)
      example["twin_frames"] = chosen
      example["driving_twin"], example["twin_pose"] = expression_twins.twins(
          model, window["expression"][chosen], rng, height, width, self._records.fps, self._crop_size,
          self._crop_margin, self._twin_people, self._parts)
    return example

  def _driving_crops(self, clip, frames, video, views, rng):
    """Face crops cut from the frames, or the stored ones rendered at crop resolution ("mixed":
    either, by a coin per example that falls "stored" with `face_crop.stored_share`, so the encoders
    learn both). With `face_crop.parts`: `[T, 1 + P, S, S, 3]`, the face then its parts'
    close-ups, all cut or all stored."""
    stored = self._crop_source == "stored" or (self._crop_source == "mixed" and rng.random() < self._stored_share)
    if stored:
      crops = [self._resized(clip["face"][frames])] + [self._resized(clip[f"face_{p}"][frames]) for p in self._parts]
    else:
      crops = [face_crop.crop(video, b, self._crop_size) for b in views]
    return np.stack(crops, axis=1) if self._parts else crops[0]

  def _resized(self, faces):
    """Stored crops `[T, s, s, 3]` at the crop size."""
    if faces.shape[1] == self._crop_size:
      return faces
    return np.stack([np.asarray(Image.fromarray(face).resize((self._crop_size,) * 2, Image.Resampling.BILINEAR))
                     for face in faces])

  def _reference_frame(self, index, clip, rng):
    """The clip the reference image comes from and its frame's index."""
    if self._reference == "cross_clip" and self._records.clips_per_identity > 1:
      others = [i for i in self._records.clips_of_identity(index) if i != index]
      clip = self._records[others[int(rng.integers(len(others)))]]
    return clip, int(rng.integers(clip["frames"].shape[0]))

  def _normal_maps(self, model, clip, frames, window):
    options = self._normals
    if options["source"] == "stored":
      normals = clip["normals"][frames]
    else:
      stored_height, stored_width = clip["frames"].shape[1:3]
      height = int(options["height"] or stored_height)
      width = int(options["width"] or stored_width)
      # Pixel coordinates with centres at i + 0.5 scale exactly with the image size.
      rescale = np.diag([width / stored_width, height / stored_height, 1.0]).astype(np.float32)
      spec = world.ClipSpec(height, width, len(frames), 25.0, int(options["supersample"]))
      normals, _ = world.render_normals(model, clip["shape"], window["expression"], window["head_pose"],
                                        window["head_scale"], rescale @ window["intrinsics"],
                                        window["extrinsics"], spec)
    if options["encoding"] == "unit":
      return renderer.decode_normals(normals).astype(np.float32)
    return normals


def warped_window(model, source, reference_frames, clip, window):
  """Frames `reference_frames` of clip `source` each carried onto the frames of `window` (of
  `clip`) through each clip's mesh as its tracking poses it: uint8 `[R, T, H, W, 3]`."""
  at = np.asarray(reference_frames)
  portrait_vertices = controls.pose_vertices(model, source["shape"], source["expression"][at],
                                             source["head_pose"][at], source["head_scale"][at])
  window_vertices = controls.pose_vertices(model, clip["shape"], window["expression"], window["head_pose"],
                                           window["head_scale"])
  warped, _ = reference_warp.warp_references(
      model.f, source["frames"][at], portrait_vertices, source["intrinsics"][at], source["extrinsics"][at],
      window_vertices, window["intrinsics"], window["extrinsics"])
  return warped
