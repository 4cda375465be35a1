"""Expression-preserving jitter of training crops, drawn anew at every step.

A person rendered once and kept is seen again every epoch; an encoder that learns the exact
pixels of each learns the people by heart (the motion task's training people are memorised after
about a dozen visits each). Jitter makes each visit another picture of the same expression: a
shift of the crop window by whole pixels (a landmark detector's error), and the light's level,
contrast and colour, and sensor noise. None of them changes an expression control, so the targets
stay as they are.
"""
import dm_pix
import jax
import jax.numpy as jnp

from data_pipeline.errors import InputError, require

FIELDS = ("shift", "brightness", "contrast", "gain", "noise")


def check_settings(settings):
  """Raises a one-line error for a jitter setting out of its range."""
  unknown = sorted(set(settings) - set(FIELDS))
  require(not unknown, f"unknown jitter settings {unknown}; known: {FIELDS}")
  shift = settings.get("shift", 0)
  require(int(shift) == shift and shift >= 0, f"jitter shift is a whole number of pixels >= 0, got {shift}")
  for name in FIELDS[1:]:  # the fractions
    value = settings.get(name, 0.0)
    require(0.0 <= value < 1.0, f"jitter {name} must lie in [0, 1), got {value}")


def parse_settings(text):
  """Comma-separated NAME=VALUE of FIELDS (a command line's) -> checked settings; "" -> none."""
  pairs = [item.split("=") for item in text.split(",") if item]
  require(all(len(pair) == 2 for pair in pairs), f"expected NAME=VALUE pairs, got {text!r}")
  try:
    settings = {name: float(value) for name, value in pairs}
  except ValueError:
    raise InputError(f"values must be numbers, got {text!r}") from None
  check_settings(settings)
  if "shift" in settings:
    settings["shift"] = int(settings["shift"])  # as the config's field holds it
  return settings


def is_active(settings):
  return any(settings.get(name, 0) for name in FIELDS)


def _shifted(key, image, shift):
  """`image` `[H, W, 3]` moved by up to `shift` pixels each way, its edges repeated into the gap."""
  padded = jnp.pad(image, ((shift, shift), (shift, shift), (0, 0)), mode="edge")
  return dm_pix.random_crop(key, padded, image.shape)


def jitter_crops(images, key, settings):
  """`[..., H, W, 3]` float images in [-1, 1], each jittered on its own by `settings` (a mapping of
  FIELDS): shift in pixels; brightness, the largest level added (in [-1, 1] units); contrast and
  gain, the largest relative change of the contrast about the crop's mean and of each colour
  channel's intensity (the image + 1); noise, the Gaussian noise's standard deviation. Returns
  the same shape, clipped to [-1, 1]."""
  flat = images.reshape(-1, *images.shape[-3:])
  count = flat.shape[0]
  shift_key, level_key, contrast_key, gain_key, noise_key = jax.random.split(key, 5)
  shift = int(settings.get("shift", 0))
  if shift:
    flat = jax.vmap(lambda k, image: _shifted(k, image, shift))(jax.random.split(shift_key, count), flat)
  contrast = settings.get("contrast", 0.0)
  if contrast:
    factor = jax.random.uniform(contrast_key, (count, 1, 1, 1), minval=1 - contrast, maxval=1 + contrast)
    mean = jnp.mean(flat, axis=(1, 2, 3), keepdims=True)
    flat = mean + factor * (flat - mean)
  gain = settings.get("gain", 0.0)
  if gain:
    # A light's colour scales each channel's intensity, black staying black.
    scale = jax.random.uniform(gain_key, (count, 1, 1, 3), minval=1 - gain, maxval=1 + gain)
    flat = (flat + 1.0) * scale - 1.0
  brightness = settings.get("brightness", 0.0)
  if brightness:
    flat = flat + jax.random.uniform(level_key, (count, 1, 1, 1), minval=-brightness, maxval=brightness)
  noise = settings.get("noise", 0.0)
  if noise:
    flat = flat + noise * jax.random.normal(noise_key, flat.shape)
  return jnp.clip(flat, -1.0, 1.0).reshape(images.shape)
