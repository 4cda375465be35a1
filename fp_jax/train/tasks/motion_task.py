"""Motion task: expression and pose encoders, supervised by the synthetic world's ground truth.

The expression latent is read out linearly into the expression controls (so it must carry them).
The pose encoder regresses each frame's `(6D rotation, t, s)` as that frame's camera sees the head:
a face crop shows the head relative to the camera, so a world-frame target would be unknowable
whenever the camera moves (sampling maps estimates back through the driving camera). With
expression twins in the batch (`input.expression_twins` frames of each window), an invariance term
asks a crop and its twin (the same expressions, another person and view) for the same latent.
With `motion_loss.blur_share` > 0 that share of the crops is blurred first (`blur_crops`).
With `motion.expression_parts` the driving crops hold close-ups of those parts beside the face
crop (`[..., 1 + P, S, S, 3]`): the expression encoder reads them all, the pose encoder the face.
With `motion_loss.nuisance_weight` > 0 the latent must also be what a learned linear map of the
true controls gives (`nuisance`): what it holds beyond the controls is the person, the light or
the view.
With `motion_loss.jitter` set the expression encoder's crops are jittered at every step (shifted
by whole pixels, their light and colour changed, noise added: fp_jax/train/jitter.py), so that a
person kept and seen again is another picture of the same expression; the pose encoder's are not.
With `motion_loss.mirror_share` > 0 the expression encoder sees that share of the examples
mirrored, with their controls mirrored to match (`Mirror`): twice the faces to learn expressions
from, where a few thousand rendered people are otherwise memorised. With `motion_loss.mirror_pose`
the pose encoder sees the same mirrored examples, their poses mirrored to match.
"""
import math

import dm_pix
import jax
import jax.numpy as jnp
from flax import nnx

from data_pipeline import controls, face_crop, head_pose
from data_pipeline.errors import require
from data_pipeline.template_head import build_template
from fp_jax.models.motion import to_unit_range
from fp_jax.train import jitter
from fp_jax.train.tasks import common


def blur_crops(crops, key, share, sigma_range):
  """`[..., H, W, 3]` crops with a random `share` of them Gaussian-blurred, each by its own sigma
  drawn uniformly from `sigma_range` (pixels); the rest unchanged. Crops cut from generated frames
  are softer than rendered ones (the VAE's reconstruction loses detail), and encoders that never
  saw soft crops read them as another pose. Returns floats in [-1, 1]."""
  images = to_unit_range(crops)
  if share <= 0:
    return images
  low, high = sigma_range
  flat = images.reshape(-1, *images.shape[-3:])
  pick, spread = jax.random.split(key)
  sigma = jax.random.uniform(spread, (flat.shape[0],), minval=low, maxval=high)
  size = 2 * math.ceil(3 * high) + 1  # +-3 sigma of the widest blur
  blurred = jax.vmap(lambda image, s: dm_pix.gaussian_blur(image, s, size, padding="SAME"))(flat, sigma)
  chosen = jax.random.bernoulli(pick, share, (flat.shape[0], 1, 1, 1))
  return jnp.where(chosen, blurred, flat).reshape(images.shape)


# A camera-frame pose vector `[r1, r2, t, s]` of the mirrored scene (x -> -x, the crop flipped left
# to right): the rotation becomes M R M with M = diag(-1, 1, 1), so its first column keeps x and
# flips y and z, its second flips x alone; t flips x. Exact where the principal point is the image
# centre, as the world's cameras have it.
POSE_MIRROR_SIGNS = (1.0, -1.0, -1.0, -1.0, 1.0, 1.0, -1.0, 1.0, 1.0, 1.0)


class Mirror:
  """Mirrors a share of the examples: crops flipped left to right, controls as
  `controls.mirror_map` reads them in the mirror, and (`motion_loss.mirror_pose`) head poses as
  the mirrored scene holds them (`POSE_MIRROR_SIGNS`)."""

  def __init__(self, share, names, parts=()):
    require(0.0 <= share <= 1.0, f"motion_loss.mirror_share must lie in [0, 1], got {share}")
    self.share = float(share)
    order, signs = controls.mirror_map(names)
    self._order, self._signs = jnp.asarray(order), jnp.asarray(signs)
    # Crops of the face and its parts: in the mirror each close-up shows its mirrored part (the left
    # eye's, flipped, is the mirrored face's right eye).
    views = ("face",) + tuple(parts)
    self._views = [views.index(face_crop.MIRRORED_PARTS.get(view, view)) for view in views] if parts else None

  def choose(self, key, batch_size):
    """Which examples `[B]` are mirrored (the same choice serves an example's twin crops)."""
    return jax.random.bernoulli(key, self.share, (batch_size,))

  def crops(self, chosen, images):
    """`[B, T, H, W, 3]` images (`[B, T, 1 + P, H, W, 3]` with parts), the chosen examples' flipped
    left to right, each close-up then standing for its mirrored part."""
    flipped = images[..., ::-1, :]
    if self._views is not None:
      flipped = flipped[:, :, jnp.asarray(self._views)]
    return jnp.where(chosen.reshape((-1,) + (1,) * (images.ndim - 1)), flipped, images)

  def controls(self, chosen, values):
    """`[B, T, C]` controls, the chosen examples' as their mirror images wear them."""
    return jnp.where(chosen[:, None, None], values[..., self._order] * self._signs, values)

  def poses(self, chosen, vectors):
    """`[B, T, 10]` camera-frame pose vectors, the chosen examples' as their mirror images hold them."""
    return jnp.where(chosen[:, None, None], vectors * jnp.asarray(POSE_MIRROR_SIGNS), vectors)


class MotionModels(nnx.Module):

  def __init__(self, config, num_controls, rngs):
    self.expression = common.make_expression_encoder(config, rngs)
    self.pose = common.make_pose_encoder(config, rngs)
    self.readout = nnx.Linear(config.motion.expression_dim, num_controls, rngs=rngs)
    if config.motion_loss.get("nuisance_weight", 0.0):
      # The latent the true controls predict (training only: the nuisance term's reference).
      self.from_controls = nnx.Linear(num_controls, config.motion.expression_dim, rngs=rngs)


class MotionTask:
  name = "motion"
  augments_with_key = True  # its loss reads the key only to blur, mirror and jitter: validated without

  def __init__(self, config):
    self.config = config
    share = config.motion_loss.get("mirror_share", 0.0)
    self.mirror = (Mirror(share, controls.control_names(build_template()), common.expression_parts(config))
                   if share != 0 else None)
    self.mirror_pose = bool(config.motion_loss.get("mirror_pose", False))
    self.jitter = dict(config.motion_loss.get("jitter", {}))
    jitter.check_settings(self.jitter)

  def make_model(self, rngs):
    return MotionModels(self.config, self.config.motion.num_controls, rngs)

  def make_frozen(self, rngs):
    del rngs
    return {}

  def loss(self, models, frozen, batch, key):
    """Without a `key`, the crops as they are: neither blurred nor mirrored."""
    del frozen
    share, sigma_range = self.config.motion_loss.blur_share, tuple(self.config.motion_loss.blur_sigma)
    share = share if key is not None else 0.0
    blur = lambda crops, key: blur_crops(crops, key, share, sigma_range)
    driving_key, twin_key, mirror_key = jax.random.split(key, 3) if key is not None else (None,) * 3
    driving = blur(batch["driving"], driving_key)
    expression = batch["expression"]
    mirrored = self.mirror.choose(mirror_key, driving.shape[0]) if self.mirror and key is not None else None
    # What the expression encoder reads and its target; the pose encoder reads the same under
    # mirror_pose (`pose_inputs`), the crops as rendered otherwise.
    view = (lambda crops: self.mirror.crops(mirrored, crops)) if mirrored is not None else (lambda crops: crops)
    seen = view(driving)
    expression_seen = self.mirror.controls(mirrored, expression) if mirrored is not None else expression
    pose_mirrored = mirrored is not None and self.mirror_pose
    pose_inputs = lambda crops, crops_seen, poses: ((crops_seen, self.mirror.poses(mirrored, poses)) if pose_mirrored
                                                    else (crops, poses))
    # Jitter draws keys of its own (fold_in), so runs without it keep their random streams.
    jittered = lambda crops, stream: (jitter.jitter_crops(crops, jax.random.fold_in(key, stream), self.jitter)
                                      if key is not None and jitter.is_active(self.jitter) else crops)
    latent = models.expression(jittered(seen, 1))
    expression_error = jnp.mean(jnp.square(models.readout(latent) - expression_seen))
    # The controls vary by ~0.2, so their squared error is weighted up (a fixed weight, not the
    # batch's variance: micro-batches must add up to the whole batch) lest the other terms drown it.
    weight = self.config.motion.expression_weight
    variance = jnp.mean(jnp.var(expression.reshape(-1, expression.shape[-1]), axis=0)) + 1e-4
    crops, target = pose_inputs(driving, seen, head_pose.to_camera_frame(batch["head_pose"], batch["extrinsics"]))
    pose_error = jnp.mean(jnp.square(models.pose(common.face_view(self.config, crops)) - target))
    loss = weight * expression_error + pose_error
    metrics = {"expression_mse": expression_error, "expression_unexplained": expression_error / variance,
               "pose_mse": pose_error}
    nuisance_weight = self.config.motion_loss.get("nuisance_weight", 0.0)
    if nuisance_weight:
      # What of the latent the true controls do not predict (linearly) is nuisance: the person,
      # the light, the view. Measured against the latents' spread, as the twin term is, so that
      # shrinking the latents does not pay. Twins cancel the nuisance of one pair at a time; this
      # needs no second render. (Like the twin term's, the spread is each micro-batch's own.)
      spread = jnp.mean(jnp.var(latent.reshape(-1, latent.shape[-1]), axis=0)) + 1e-6
      nuisance = jnp.mean(jnp.square(latent - models.from_controls(expression_seen))) / spread
      loss = loss + nuisance_weight * nuisance
      metrics["nuisance"] = nuisance
    if "driving_twin" in batch:
      # The same expressions on another person from another view must give the same latent;
      # measured against the latents' spread so that shrinking them all does not pay (the spread
      # is each micro-batch's own: with accumulation this term is not exactly the whole batch's).
      frames = batch["twin_frames"]
      driving_twin = blur(batch["driving_twin"], twin_key)
      twin_seen = view(driving_twin)
      twin = models.expression(jittered(twin_seen, 2))
      twinned = jnp.take_along_axis(latent, frames[..., None], axis=1)
      spread = jnp.mean(jnp.var(latent.reshape(-1, latent.shape[-1]), axis=0)) + 1e-6
      invariance = jnp.mean(jnp.square(twinned - twin)) / spread
      # The twin wears the same controls, so its latent must read out to them as well.
      twin_target = jnp.take_along_axis(expression_seen, frames[..., None], axis=1)
      twin_error = jnp.mean(jnp.square(models.readout(twin) - twin_target))
      # Each twin is a person never seen before: the pose encoder learns on them as well.
      crops, target = pose_inputs(driving_twin, twin_seen, batch["twin_pose"])
      twin_pose_error = jnp.mean(jnp.square(models.pose(common.face_view(self.config, crops)) - target))
      loss = loss + self.config.motion.invariance_weight * invariance + weight * twin_error + twin_pose_error
      metrics.update(invariance=invariance, twin_expression_mse=twin_error, twin_pose_mse=twin_pose_error)
    return loss, metrics
