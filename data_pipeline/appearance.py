"""Per-identity looks: albedo per vertex (skin, lips, eyes, brows, hair cap, clothes), lights
and backgrounds, all drawn from a seeded generator."""
import dataclasses

import numpy as np

from data_pipeline.renderer import Background, Lighting
from data_pipeline.template_head import EYE_RADIUS

_SKIN_TONES = np.array([[0.96, 0.80, 0.69], [0.89, 0.67, 0.53], [0.78, 0.57, 0.42],
                        [0.60, 0.42, 0.30], [0.42, 0.28, 0.20], [0.30, 0.20, 0.14]])
_HAIR = np.array([[0.08, 0.06, 0.05], [0.25, 0.16, 0.09], [0.55, 0.38, 0.20], [0.80, 0.68, 0.45],
                  [0.45, 0.18, 0.08], [0.60, 0.60, 0.60]])
_IRIS = np.array([[0.35, 0.22, 0.10], [0.20, 0.35, 0.55], [0.25, 0.42, 0.25], [0.40, 0.40, 0.45]])


@dataclasses.dataclass(frozen=True)
class Identity:
  """What makes one synthetic person: shape coefficients and looks."""
  shape: np.ndarray  # [S] identity coefficients
  albedo: np.ndarray  # [V, 3] RGB in [0, 1]
  background: Background


def _label(model, name):
  if model.vertex_labels is None or name not in model.label_names:
    return np.zeros(model.num_vertices, bool)
  return model.vertex_labels == model.label_names.index(name)


def sample_albedo(model, rng):
  """Per-vertex albedo for `model`; regions come from the template's labels."""
  rest = model.v_template
  skin = _SKIN_TONES[rng.integers(len(_SKIN_TONES))] * rng.uniform(0.92, 1.05, 3)
  albedo = np.tile(skin, (model.num_vertices, 1))
  # Low-frequency blotches so the skin is not a flat colour.
  waves = rng.normal(size=(3, 3)) * 25.0
  albedo *= (1.0 + 0.04 * np.sin(rest @ waves).mean(axis=1))[:, None]
  hair = _HAIR[rng.integers(len(_HAIR))] * rng.uniform(0.85, 1.15, 3)
  hairline = rng.uniform(0.20, 0.25)  # how far down the forehead the hair cap reaches
  scalp = _label(model, "scalp") & ((rest[:, 1] > hairline) | (rest[:, 2] < 0.05))
  if rng.uniform() < 0.15:  # some identities are bald
    scalp &= rest[:, 2] < -0.2
  albedo[scalp] = hair
  albedo[_label(model, "brows")] = hair * 0.8
  albedo[_label(model, "lips")] = skin * np.array([0.85, 0.55, 0.55]) * rng.uniform(0.85, 1.05)
  clothes = _label(model, "torso") & (rest[:, 1] < rng.uniform(-0.06, -0.02))  # neckline
  albedo[clothes] = rng.uniform(0.1, 0.9, 3)
  if rng.uniform() < 0.3:  # striped shirt
    stripes = clothes & (np.sin(rest[:, 1] * rng.uniform(60, 160)) > 0.3)
    albedo[stripes] *= 0.6
  eyes = _label(model, "eyeball")
  if eyes.any():
    iris = _IRIS[rng.integers(len(_IRIS))]
    centre = np.zeros_like(rest)
    for side in (1.0, -1.0):
      this = eyes & (np.sign(rest[:, 0]) == side)
      centre[this] = rest[this].mean(axis=0)
    forward = (rest[eyes, 2] - centre[eyes, 2]) / EYE_RADIUS  # cos of the angle from the gaze
    colour = np.where(forward[:, None] > 0.96, 0.03, np.where(forward[:, None] > 0.82, iris, 0.95))
    albedo[eyes] = colour
  return np.clip(albedo, 0.0, 1.0)


def sample_lighting(rng):
  ambient = rng.uniform(0.25, 0.5) * rng.uniform(0.9, 1.1, 3)
  direction = np.array([rng.uniform(-1, 1), rng.uniform(-0.2, 1), rng.uniform(0.3, 1.2)])
  colour = rng.uniform(0.5, 0.9) * rng.uniform(0.9, 1.1, 3)
  return Lighting(ambient=tuple(ambient), direction=tuple(direction), colour=tuple(colour),
                  specular=float(rng.uniform(0.03, 0.15)), shininess=float(rng.uniform(12, 40)))


def sample_background(rng):
  top = rng.uniform(0.1, 0.95, 3)
  bottom = top if rng.uniform() < 0.4 else rng.uniform(0.1, 0.95, 3)
  return Background(top=tuple(top), bottom=tuple(bottom))


def sample_identity(model, rng, shape_std=1.0):
  shape = np.clip(rng.normal(scale=shape_std, size=model.num_shape), -2.5, 2.5)
  return Identity(shape=shape, albedo=sample_albedo(model, rng), background=sample_background(rng))
