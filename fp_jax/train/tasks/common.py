"""Pieces the tasks share: building models from config dicts, image scaling."""
import jax.numpy as jnp

from fp_jax.models import motion
from fp_jax.models.vae import VAEConfig, VideoVAE


def vae_config(config):
  values = dict(config.vae)
  for key in ("dim_mult", "temporal_downsample", "latents_mean", "latents_std"):
    if key in values:
      values[key] = tuple(values[key])
  z_dim = values.get("z_dim", VAEConfig.z_dim)
  if z_dim != VAEConfig.z_dim:  # Wan's statistics are for its 16 channels; a VAE trained here
    values.setdefault("latents_mean", (0.0,) * z_dim)  # is pulled to mean 0, std 1 (vae_task.py)
    values.setdefault("latents_std", (1.0,) * z_dim)
  return VAEConfig(**values)


def make_vae(config, rngs):
  return VideoVAE(vae_config(config), rngs=rngs)


def _encoder_config(config, output_dim, pooling_field, widths, parts=0, stem_width=0, standardise=False):
  # Runs saved before the pooling fields existed pooled by the mean.
  pooling = config.motion.get(pooling_field, "mean")
  return motion.EncoderConfig(tuple(widths), output_dim, pooling, parts, stem_width, standardise)


def expression_parts(config):
  """The close-ups beside the face crop that the expression encoder reads (names in face_crop.PARTS)."""
  return tuple(config.motion.get("expression_parts", ()))


def make_expression_encoder(config, rngs):
  # Runs saved before the stem and standardise fields existed had neither.
  return motion.ImageEncoder(_encoder_config(config, config.motion.expression_dim, "expression_pooling",
                                            config.motion.widths, len(expression_parts(config)),
                                            config.motion.get("expression_stem_width", 0),
                                            config.motion.get("expression_standardise", False)), rngs=rngs)


def face_view(config, crops):
  """The face crops `[..., S, S, 3]` of driving crops, which hold close-ups of parts beside them
  (`[..., 1 + P, S, S, 3]`) when the expression encoder reads parts: what the pose encoder reads."""
  return crops[..., 0, :, :, :] if expression_parts(config) else crops


def make_pose_encoder(config, rngs):
  # An empty pose_widths (or a run saved before it existed): as wide as the expression encoder.
  widths = config.motion.get("pose_widths") or config.motion.widths
  return motion.ImageEncoder(_encoder_config(config, 10, "pose_pooling", widths), rngs=rngs)


def make_identity_encoder(config, rngs):
  identity = config.identity
  return motion.ImageEncoder(motion.EncoderConfig(tuple(identity.widths), identity.embedding_dim, identity.pooling),
                             rngs=rngs)


def unit_range(images):
  return images.astype(jnp.float32) / 127.5 - 1.0


def to_uint8(images):
  """[-1, 1] floats -> uint8."""
  return jnp.clip(jnp.round((images + 1.0) * 127.5), 0, 255).astype(jnp.uint8)
