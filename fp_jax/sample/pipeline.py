"""Inputs -> conditions -> sampling -> video frames.

Host side: the portrait and driving clip are read and checked; the encoders give each driving
frame an expression code and (without tracking) a head pose; the mode and motion settings turn
them into the target signals; the template mesh, posed by them, is rendered to normal maps from
the target cameras, whose Plücker rays are computed alongside.

Device side: the VAE encodes the reference and the normal maps (per window), and one compiled
step (every window and every guidance branch in one batched DiT forward, then the solver's
update) runs once per noise level. The VAE decodes the result.

Frame layout: the generated video has `1 + 4K` frames; frame 0 is the reference image's slot (its
conditions copy the first driving frame) and frames 1..N follow the N driving frames (the last
is repeated to fill `4K`). The output is frames 1..N.
"""
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec
from tqdm import tqdm

from data_pipeline import cameras as cameras_lib
from data_pipeline import controls, rays, reference_warp, world
from data_pipeline import head_pose as head_pose_lib
from data_pipeline.errors import require
from data_pipeline.template_head import build_template
from fp_jax.diffusion import flow, guidance as guidance_lib, samplers
from fp_jax.parallel import mesh as mesh_lib
from fp_jax.parallel.sharding import use_mesh
from fp_jax.sample import inputs, modes, motion_control, windows
from fp_jax.train.tasks import common

PLAUSIBLE_SCALE = (0.5, 2.0)  # the synthetic world draws head scales in [0.95, 1.05]


@dataclasses.dataclass
class Request:
  """Everything one sampling run is asked for (the CLI's flags)."""
  image: str
  driving: str = ""
  tracking: str = ""
  camera: str = ""  # "" = the mode's default
  mode: str = "static-frontal"
  motion: str = "relative"
  strength: float = 1.0
  smooth: float = 0.0
  crop: str = ""
  frames: int = 0  # output length without a driving clip (0: one trained window)
  seed: int = 0


@dataclasses.dataclass
class Conditions:
  """Host arrays at video rate (`1 + 4K` frames) and what they came from."""
  portrait: inputs.Portrait
  driving: inputs.Driving
  signals: motion_control.Signals
  cameras: cameras_lib.Cameras
  normals: np.ndarray  # uint8 [T, H, W, 3]
  rays: np.ndarray  # float32 [T, H, W, 6]
  num_frames: int  # N, the output length
  fps: float
  camera: str  # the preset or file the cameras came from
  warped: np.ndarray = None  # uint8 [T, H, W, 3]: the portrait carried onto each frame (model.warped_reference)


def _pad_to_video_rate(array):
  """`[N, ...]` -> `[1 + 4K, ...]`: frame 0 copies frame 0, the tail repeats the last frame."""
  total = 1 + 4 * math.ceil(len(array) / 4)
  tail = np.repeat(array[-1:], total - 1 - len(array), axis=0)
  return np.concatenate([array[:1], array, tail], axis=0)


def window_latents(config):
  """Latent frames in one trained window (`1 + 4k` video frames -> k)."""
  return (int(config.input.window.num_frames) - 1) // 4


@dataclasses.dataclass
class Inputs:
  """A request's inputs, read and checked: all that needs no model."""
  mode: modes.Mode
  portrait: inputs.Portrait
  driving: inputs.Driving  # None without a driving clip
  num_frames: int  # N, the output length
  cameras: cameras_lib.Cameras  # at video rate
  camera: str  # the preset or file they came from


def read_inputs(config, request):
  """Reads and checks every input of a request. It needs no model, so a sampling job reads all its
  requests before it loads any weights: a bad input is an error in seconds, not after the load."""
  height, width = int(config.sample.height), int(config.sample.width)
  mode = modes.get(request.mode)
  portrait = inputs.load_portrait(request.image, height, width, config.input, request.crop)
  driving = None
  if request.driving:
    driving = inputs.load_driving(request.driving, config.input, request.tracking, config.sample.fps)
  require(driving is not None or not mode.needs_driving, f"mode {request.mode} needs --driving")
  require(0.0 <= request.smooth <= 100.0, f"--smooth must be in [0, 100] frames, got {request.smooth}")
  num_frames = len(driving.frames) if driving is not None else (request.frames or 4 * window_latents(config))
  require(num_frames >= 1, f"nothing to generate: {num_frames} frames")
  total = 1 + 4 * math.ceil(num_frames / 4)
  camera_name = request.camera or mode.camera
  if camera_name == "driving":  # the driving clip's own cameras (self-reenactment, evaluation)
    tracking = driving.tracking if driving is not None else None
    require(tracking is not None and "intrinsics" in tracking,
            "--camera=driving needs a driving clip whose tracking has cameras")
    scale = np.diag([width / driving.frames.shape[2], height / driving.frames.shape[1], 1.0])
    target_cameras = cameras_lib.Cameras(_pad_to_video_rate(scale @ tracking["intrinsics"]),
                                         _pad_to_video_rate(tracking["extrinsics"])).validate(height, width)
  else:
    target_cameras = cameras_lib.from_preset(camera_name, total, height, width)
  modes.check_camera(request.mode, mode, camera_name, target_cameras)
  return Inputs(mode, portrait, driving, num_frames, target_cameras, camera_name)


class Pipeline:

  def __init__(self, config, models, mesh, rules):
    self.config, self.models, self.mesh, self.rules = config, models, mesh, rules
    sample = config.sample
    self.height, self.width = int(sample.height), int(sample.width)
    require(self.height % 16 == 0 and self.width % 16 == 0,
            f"sample.height and sample.width must be multiples of 16, got {self.height}x{self.width}")
    samplers.check(sample.sampler)
    self.start_level = float(sample.get("start_level", 1.0))
    require(0.0 < self.start_level <= 1.0, f"sample.start_level must be in (0, 1], got {self.start_level}")
    max_level = float(config.diffusion.get("max_level", 1.0))
    require(self.start_level <= max_level, f"sample.start_level ({self.start_level}) is above the noise levels "
            f"the DiT trained on (diffusion.max_level {max_level})")
    flow.check_shift(sample.shift, "sample.shift")
    self.guidance = guidance_lib.Guidance.from_config(sample.guidance)
    self.window_latents = window_latents(config)
    self.crop_size = int(config.input.face_crop.size)
    self.crop_margin = float(config.input.face_crop.margin)
    # Close-ups the expression encoder reads beside each face crop (the encoder's own field).
    self.crop_parts = common.expression_parts(config)
    self.replicated = NamedSharding(mesh, PartitionSpec())
    self.pad_to = mesh_lib.batch_shards(mesh)
    self._encoders = {}
    self._steps = {}  # compiled sampling steps by window layout and ablation: once per shape
    vae_graphdef, self._vae_state = nnx.split(models.vae)
    self._encode_video = jax.jit(lambda state, video: _encode_latents(vae_graphdef, state, video))
    self._decode_video = jax.jit(lambda state, latents: _decode_latents(vae_graphdef, state, latents),
                                 out_shardings=self.replicated)

  # -- host side -----------------------------------------------------------------------------

  def _put(self, array):
    array = np.asarray(array)
    return jax.make_array_from_callback(array.shape, self.replicated, lambda index: array[index])

  def encode_crops(self, name, crops):
    """Encoder `name` on uint8 face crops `[N, s, s, 3]`, in fixed-size chunks (one compile). Crops
    with close-ups of parts (`face_crops(..., self.crop_parts)`): the expression encoder reads them
    all, the others the face."""
    if self.crop_parts and name != "expression":
      crops = crops[:, 0]
    if name not in self._encoders:
      graphdef, state = nnx.split(getattr(self.models, name))
      self._encoders[name] = (jax.jit(lambda state, x: nnx.merge(graphdef, state)(x)), state)
    encode, state = self._encoders[name]
    chunk = 16
    padded = np.concatenate([crops, np.repeat(crops[-1:], -len(crops) % chunk, axis=0)])
    with use_mesh(self.mesh, self.rules):
      outputs = [np.asarray(encode(state, self._put(padded[i:i + chunk]))) for i in range(0, len(padded), chunk)]
    return np.concatenate(outputs)[:len(crops)].astype(np.float64)

  def _source_signals(self, portrait, num_controls):
    crop = inputs.face_crops(portrait.image[None], portrait.truth, self.crop_size, self.crop_margin,
                            self.crop_parts)
    code = self.encode_crops("expression", crop)
    truth = portrait.truth
    if truth is not None:
      return motion_control.Signals.from_pose(truth["head_pose"], truth["head_scale"], code, truth["expression"])
    head_pose, scale = _estimated_pose(self.encode_crops("pose", crop))
    return motion_control.Signals.from_pose(head_pose, scale, code, np.zeros((1, num_controls)))

  def _driving_signals(self, driving, num_controls):
    crops = inputs.face_crops(driving.frames, driving.tracking, self.crop_size, self.crop_margin, self.crop_parts)
    codes = self.encode_crops("expression", crops)
    tracking = driving.tracking
    if tracking is not None:
      coefficients = tracking.get("expression", np.zeros((len(crops), num_controls)))
      require(coefficients.shape[1] == num_controls,
              f"tracking expression has {coefficients.shape[1]} controls, the template {num_controls}")
      return motion_control.Signals.from_pose(tracking["head_pose"], tracking["head_scale"], codes, coefficients)
    head_pose, scale = _estimated_pose(self.encode_crops("pose", crops))
    return motion_control.Signals.from_pose(head_pose, scale, codes, np.zeros((len(crops), num_controls)))

  def prepare(self, request, read=None):
    """The host-side conditions of a request whose inputs `read_inputs` has read (or reads now)."""
    read = read or read_inputs(self.config, request)
    mode, portrait, driving, num_frames = read.mode, read.portrait, read.driving, read.num_frames
    target_cameras = read.cameras
    total = 1 + 4 * math.ceil(num_frames / 4)
    model = build_template()
    num_controls = controls.num_controls(model)
    source = self._source_signals(portrait, num_controls)
    held = source.repeat(num_frames)
    driven = held
    if driving is not None:
      driven_raw = motion_control.smooth(self._driving_signals(driving, num_controls), request.smooth)
      driven = motion_control.combine(driven_raw, source, request.motion, request.strength)
    signals = motion_control.select(driven, held, mode.drive_pose, mode.drive_expression)
    signals = motion_control.Signals(*(_pad_to_video_rate(v) for v in dataclasses.astuple(signals)))

    shape = portrait.truth["shape"] if portrait.truth is not None else np.zeros(model.num_shape)
    pose = lambda s: controls.pose_vertices(model, shape, controls.clip_to_range(s.coefficients), s.head_pose, s.scale)
    vertices = pose(signals)  # the targets' meshes: their normal maps and, with the warp, its targets
    normals = world.renderer_for(model.f.tobytes(), self.height, self.width, 1).render_clip(
        vertices, target_cameras.intrinsics, target_cameras.extrinsics)["normals"]
    ray_maps = rays.plucker_rays(target_cameras.intrinsics, target_cameras.extrinsics, self.height, self.width)
    fps = driving.fps if driving is not None else float(self.config.sample.fps)
    warped = None
    if self.config.model.get("warped_reference", False):
      intrinsics, extrinsics = _portrait_camera(portrait, self.height, self.width)
      warped, _ = reference_warp.warp_reference(model.f, portrait.image, pose(source)[0], intrinsics, extrinsics,
                                                vertices, target_cameras.intrinsics, target_cameras.extrinsics)
    return Conditions(portrait, driving, signals, target_cameras, normals, ray_maps.astype(np.float32),
                      num_frames, fps, read.camera, warped)

  # -- device side ---------------------------------------------------------------------------

  def _window_inputs(self, conditions, window_plan):
    """The DiT's conditions for every window, stacked window-major (batch = windows)."""
    pick = lambda array: np.stack([array[window_plan.video_frames(s)] for s in window_plan.starts])
    host = dict(normals=pick(conditions.normals), rays=rays.to_latent_grid(pick(conditions.rays)),
                expression=pick(conditions.signals.codes.astype(np.float32)),
                head_pose=pick(conditions.signals.pose_vectors()))
    if conditions.warped is not None:
      host["warped"] = pick(conditions.warped)
    return host

  def _step_for(self, window_plan, drop):
    key = (window_plan.total, window_plan.length, window_plan.starts, drop)
    if key not in self._steps:
      self._steps[key] = self.step_function(window_plan, drop)
    return self._steps[key]

  def step_function(self, window_plan, drop=()):
    """The compiled sampling step: every window and guidance branch in one forward, then the
    solver update. Args: (dit state, x, sigma, next_sigma, previous velocity, previous step,
    branch weights, window conditions); returns (x at next_sigma, velocity). `drop` names
    conditions withheld in every guidance branch (evaluation's ablations)."""
    dit_graphdef, _ = nnx.split(self.models.dit)
    branches, sampler, pad_to = self.guidance.branches, self.config.sample.sampler, self.pad_to

    def step(dit_state, x, sigma, next_sigma, previous_velocity, previous_step, weights, conditions):
      dit = nnx.merge(dit_graphdef, dit_state)
      parts = windows.split(x, window_plan)
      latents = jnp.concatenate([jnp.zeros_like(parts[:, :1]), parts], axis=1)
      timestep = flow.timesteps(jnp.full((latents.shape[0],), sigma))
      velocity = guidance_lib.guided_velocity(dit, latents, timestep, conditions, branches, weights, pad_to, drop)
      velocity = windows.merge(velocity[:, 1:], window_plan, x.shape[0])
      x = samplers.update(sampler, x, velocity, sigma, next_sigma, previous_velocity, previous_step)
      return x, velocity

    return jax.jit(step, donate_argnums=(1, 4), out_shardings=(self.replicated, self.replicated))

  def sample(self, conditions, seed=0, progress=True, drop=()):
    """Latents `[1, 1 + K, h, w, C]` (reference first) for `conditions`, with the conditions named
    in `drop` withheld from the model."""
    total_latents = (len(conditions.normals) - 1) // 4
    window_plan = windows.plan(total_latents, self.window_latents, int(self.config.sample.window_overlap))
    host = self._window_inputs(conditions, window_plan)
    sample = self.config.sample
    with use_mesh(self.mesh, self.rules):
      reference = self._encode_video(self._vae_state, self._put(conditions.portrait.image[None, None]))[:, 0]
      device = {key: self._put(value) for key, value in host.items()}
      for name in ("normals", "warped"):
        if name in device:
          device[name] = self._encode_video(self._vae_state, device[name])
      device["reference"] = jnp.repeat(reference, window_plan.count, axis=0)
      step = self._step_for(window_plan, tuple(drop))
      _, dit_state = nnx.split(self.models.dit)
      shape = (1, total_latents) + reference.shape[1:]
      x = jax.jit(lambda key: jax.random.normal(key, shape), out_shardings=self.replicated)(jax.random.key(seed))
      if self.start_level < 1.0:
        x = self._noised_start(x, device, window_plan, drop)
      previous = jnp.zeros_like(x)
      sigmas = np.asarray(flow.sampling_sigmas(int(sample.steps), float(sample.shift), self.start_level), np.float32)
      previous_step = np.float32(0.0)
      levels = range(len(sigmas) - 1)
      for index in tqdm(levels, desc="sampling", unit="step", disable=not progress or jax.process_index() != 0):
        tau = index / max(1, len(levels) - 1)
        x, previous = step(dit_state, x, sigmas[index], sigmas[index + 1], previous, previous_step,
                           self.guidance.weights(tau), device)
        previous_step = np.float32(sigmas[index + 1] - sigmas[index])
      return jnp.concatenate([reference[:, None], x], axis=1)

  def _noised_start(self, noise, device, window_plan, drop):
    """The flow's state at `start_level` on the way from what the model measures its frames from
    in the `all` branch (SDEdit; `DiT.residual_base`: the warped portrait where the model reads
    it and `drop` keeps it, else the portrait itself); the rest is `noise`."""
    keep = guidance_lib.branch_keeps(("all",), window_plan.count, drop)
    base = self.models.dit.residual_base(device["reference"], device.get("warped"), keep)
    if base.ndim == noise.ndim - 1:  # the portrait alone, one latent frame for every frame
      base = jnp.broadcast_to(base[:1, None], noise.shape)
    else:
      base = windows.merge(base[:, 1:], window_plan, noise.shape[0])
    return flow.noised_start(base, noise, self.start_level)

  def reconstruct(self, frames):
    """uint8 `[1 + 4k, H, W, 3]` frames through the VAE and back: what the VAE alone keeps of a
    video, the ceiling of anything generated in its latent space."""
    require(frames.ndim == 4 and (len(frames) - 1) % 4 == 0, f"reconstruct takes 1 + 4k frames, got {frames.shape}")
    with use_mesh(self.mesh, self.rules):
      latents = self._encode_video(self._vae_state, self._put(frames[None]))
    return self._decoded(latents)

  def decode(self, latents, num_frames):
    """uint8 frames `[N, H, W, 3]` of the generated video (the reference's slot dropped)."""
    return self._decoded(latents)[1:1 + num_frames]

  def _decoded(self, latents):
    """Every frame of one video's latents `[1, F, h, w, C]`, as uint8 on the host."""
    with use_mesh(self.mesh, self.rules):
      video = self._decode_video(self._vae_state, latents)
    return np.asarray(jax.device_get(video))[0]


def _decode_latents(graphdef, state, latents):
  """uint8 video of normalised latents, decoded frame by frame (bounded memory)."""
  vae = nnx.merge(graphdef, state)
  return common.to_uint8(vae.decode(vae.denormalize(latents), chunked=True))


def _portrait_camera(portrait, height, width):
  """The camera that saw the portrait at the model's resolution: a stored clip frame's own
  (`load_portrait` moves it with the crop and resize), else the frontal camera the pose estimate
  assumes."""
  if portrait.truth is None:
    frontal = cameras_lib.static_frontal(1, height, width)
    return frontal.intrinsics[0], frontal.extrinsics[0]
  return portrait.truth["intrinsics"][0], portrait.truth["extrinsics"][0]


def _estimated_pose(vectors):
  """The pose encoder's `(6D, t, s)`, which is seen from the driving camera, as a world-frame head
  pose: a driving video without tracking is taken as filmed by the frontal camera. The scale is
  kept within the world's plausible range (an estimate near zero or below would collapse the mesh)."""
  frontal = cameras_lib.static_frontal(1, 1, 1).extrinsics[0]
  head_pose, scale = head_pose_lib.pose_from_vector(head_pose_lib.from_camera_frame(vectors, frontal))
  return head_pose, np.clip(scale, *PLAUSIBLE_SCALE)


def _encode_latents(graphdef, state, video):
  """Normalised VAE latents (posterior means) of uint8 `video`; clips longer than one frame are
  encoded chunk by chunk, in bounded memory."""
  vae = nnx.merge(graphdef, state)
  return vae.normalize(vae.encode(common.unit_range(video), chunked=video.shape[1] > 1)[0])
