"""The motion encoders: face crop -> expression latent, face crop -> head pose.

Both are small convolutional networks over one frame at a time (frames are folded into the
batch): a stride-2 stem, residual stages that halve the resolution, global average pooling and a
linear head. The expression encoder gives a 128-d latent (FactorPortrait; 512-d for DeX's 32
tokens of 16) and the pose encoder `(6D rotation, t, s)`.

Average pooling keeps what the features are but not where: with `pooling="mean_keypoints"` each
channel also gives the expected position of its activation (a softmax over the positions: a
keypoint, as in robot learning's spatial softmax), the geometry a head pose is read from.
With `pooling="grid"` the features are averaged over a GRID x GRID grid of cells instead of the
whole map and the head reads every cell's features: on crops centred on the face, a feature at
the mouth and the same feature at the eyes reach the head apart, so the head can tell a mouth
that opens from eyes that close without the convolutions having to encode where they looked.

Two options for reading fine detail (`EncoderConfig`): `stem_width > 0` puts a stride-1 3x3
convolution before the first stage, so features are formed at the crop's full resolution before
the first stride-2 convolution halves it (a pupil that moves a few pixels); `standardise` takes each
crop's mean away and divides by its spread first, so the light and the skin's brightness, which
change a crop fifty times as much as an expression does, do not have to be learned away.
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from data_pipeline.errors import require
from fp_jax.models.dit_config import POSE_DIM


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
  widths: tuple = (32, 64, 128, 256)
  output_dim: int = 128
  pooling: str = "mean"  # one of POOLINGS
  parts: int = 0  # close-ups beside the face crop (data_pipeline/face_crop.py PARTS), each read by a tower of its own
  stem_width: int = 0  # a stride-1 convolution to this many channels before the first stage (0: none)
  standardise: bool = False  # each crop less its mean, over its spread (STANDARDISE_EPS), before the convolutions


POOLINGS = ("mean", "mean_keypoints", "grid")
GRID = 4
STANDARDISE_EPS = 0.05  # in [-1, 1] units: a nearly flat crop (a closed eye's close-up) is not blown up


def cell_weights(size, cells):
  """`[cells, size]`: row i averages the positions adaptive average pooling gives cell i (from
  floor(i * size / cells) to ceil((i + 1) * size / cells)), so maps of any size pool as PyTorch's
  `adaptive_avg_pool2d` pools them."""
  weights = np.zeros((cells, size), np.float32)
  for i in range(cells):
    start, end = (i * size) // cells, -(-((i + 1) * size) // cells)
    weights[i, start:end] = 1.0 / (end - start)
  return weights


def grid_pool(features, cells=GRID):
  """`[N, H, W, C]` -> `[N, cells * cells * C]`, cell-major (row, column, channel)."""
  n, h, w, c = features.shape
  pooled = jnp.einsum("ih,jw,nhwc->nijc", cell_weights(h, cells), cell_weights(w, cells), features)
  return pooled.reshape(n, cells * cells * c)


def pooled_dim(pooling, channels):
  return channels * {"mean": 1, "mean_keypoints": 3, "grid": GRID * GRID}[pooling]


def keypoints(features):
  """`[N, H, W, C]` -> `[N, 2C]`: per channel, the softmax-weighted mean (x, y) in [-1, 1]."""
  n, h, w, c = features.shape
  weights = jax.nn.softmax(features.reshape(n, h * w, c), axis=1).reshape(n, h, w, c)
  x = jnp.einsum("nhwc,w->nc", weights, jnp.linspace(-1.0, 1.0, w))
  y = jnp.einsum("nhwc,h->nc", weights, jnp.linspace(-1.0, 1.0, h))
  return jnp.concatenate([x, y], axis=-1)


def standardise(x):
  """`[N, H, W, C]` -> each image less its mean, over its standard deviation (plus STANDARDISE_EPS)."""
  mean = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
  return (x - mean) / (jnp.std(x, axis=(1, 2, 3), keepdims=True) + STANDARDISE_EPS)


def to_unit_range(images):
  """uint8 images -> float32 in [-1, 1]; float images are taken as already in [-1, 1]."""
  if images.dtype == jnp.uint8:
    return images.astype(jnp.float32) / 127.5 - 1.0
  return images.astype(jnp.float32)


class _Stage(nnx.Module):
  """Stride-2 conv to `out` channels, then a residual pair of 3x3 convs."""

  def __init__(self, in_dim, out_dim, rngs):
    self.down = nnx.Conv(in_dim, out_dim, (3, 3), strides=(2, 2), rngs=rngs)
    self.norm1 = nnx.GroupNorm(out_dim, num_groups=8, rngs=rngs)
    # No bias: GroupNorm right after would remove it, leaving a weight with no gradient.
    self.conv1 = nnx.Conv(out_dim, out_dim, (3, 3), use_bias=False, rngs=rngs)
    self.norm2 = nnx.GroupNorm(out_dim, num_groups=8, rngs=rngs)
    self.conv2 = nnx.Conv(out_dim, out_dim, (3, 3), rngs=rngs)

  def __call__(self, x):
    x = self.down(x)
    return x + self.conv2(jax.nn.silu(self.norm2(self.conv1(jax.nn.silu(self.norm1(x))))))


def _stage_maps(tower, config, images):
  """`[N, H, W, 3]` images through a tower's stem and stages: each stage's output map."""
  x = to_unit_range(images)
  if config.standardise:
    x = standardise(x)
  if config.stem_width:
    x = jax.nn.silu(tower.stem(x))
  maps = []
  for stage in tower.stages:
    x = stage(x)
    maps.append(x)
  return maps


def _pooled(tower, config, last_map):
  """A tower's last stage map through its final norm, pooled: `[N, pooled_dim]`."""
  x = tower.norm(last_map)
  pooling = config.pooling
  if pooling == "grid":
    pooled = grid_pool(jax.nn.silu(x))
  else:
    pooled = jnp.mean(jax.nn.silu(x), axis=(1, 2))
  if pooling == "mean_keypoints":
    pooled = jnp.concatenate([pooled, keypoints(x)], axis=-1)
  return pooled


def _build_tower(tower, config, rngs):
  """Gives `tower` (the encoder, which reads the face, or a part's tower) its stem, stages and norm."""
  widths = tuple(config.widths)
  first = 3
  if config.stem_width:
    tower.stem = nnx.Conv(3, config.stem_width, (3, 3), rngs=rngs)
    first = config.stem_width
  tower.stages = nnx.List([_Stage(a, b, rngs) for a, b in zip((first,) + widths[:-1], widths)])
  tower.norm = nnx.GroupNorm(widths[-1], num_groups=8, rngs=rngs)


class _PartTower(nnx.Module):
  """The stem, stages and final norm that read one part's close-up."""

  def __init__(self, config, rngs):
    _build_tower(self, config, rngs)


class ImageEncoder(nnx.Module):
  """`[..., H, W, 3]` images -> `[..., output_dim]`, any number of leading axes. With
  `config.parts = P` the images are `[..., 1 + P, H, W, 3]`: the face crop, read by the encoder's
  own stages, then P close-ups of parts of it, each read by a tower of its own (`part_towers`); the
  head reads all their pooled features together."""

  def __init__(self, config: EncoderConfig, *, rngs: nnx.Rngs):
    require(config.pooling in POOLINGS, f"unknown pooling {config.pooling!r}; choose from {POOLINGS}")
    require(config.parts >= 0, f"parts must be >= 0, got {config.parts}")
    require(config.stem_width >= 0, f"stem_width must be >= 0, got {config.stem_width}")
    self.config = config
    _build_tower(self, config, rngs)
    if config.parts:
      self.part_towers = nnx.List([_PartTower(config, rngs) for _ in range(config.parts)])
    self.head = nnx.Linear((1 + config.parts) * pooled_dim(config.pooling, config.widths[-1]), config.output_dim,
                           rngs=rngs)

  def __call__(self, images, maps_of_stage=None):
    """The latent; with `maps_of_stage = k`, also each view's map after stage k (0: the first, -1:
    the last; `[N, h, w, width]`, the leading axes flattened), for training terms that read the
    features where they lie."""
    views = 1 + self.config.parts
    image_axes = 3 if views == 1 else 4
    require(images.ndim >= image_axes and images.shape[-1] == 3,
            f"images must be [..., H, W, 3], got shape {images.shape}" if views == 1 else
            f"images must be [..., {views}, H, W, 3] (the face, then {views - 1} parts), got shape {images.shape}")
    require(views == 1 or images.shape[-4] == views,
            f"images must hold {views} crops a frame (the face, then {views - 1} parts), got {images.shape[-4]}")
    require(images.shape[-3] >= 8 and images.shape[-2] >= 8,
            f"images must be at least 8x8, got {images.shape[-3]}x{images.shape[-2]}")
    leading = images.shape[:-image_axes]
    require(all(n > 0 for n in leading), f"empty batch or clip: shape {images.shape}")
    flat = images.reshape(-1, views, *images.shape[-3:])
    towers = [self] + list(self.part_towers if views > 1 else ())
    maps = [_stage_maps(tower, self.config, flat[:, view]) for view, tower in enumerate(towers)]
    pooled = [_pooled(tower, self.config, tower_maps[-1]) for tower, tower_maps in zip(towers, maps)]
    latent = self.head(jnp.concatenate(pooled, axis=-1)).reshape(*leading, -1)
    if maps_of_stage is None:
      return latent
    return latent, [tower_maps[maps_of_stage] for tower_maps in maps]


def expression_encoder(latent_dim=128, widths=(32, 64, 128, 256), seed=0):
  return ImageEncoder(EncoderConfig(tuple(widths), latent_dim), rngs=nnx.Rngs(seed))


def pose_encoder(widths=(32, 64, 128, 256), seed=0):
  return ImageEncoder(EncoderConfig(tuple(widths), POSE_DIM), rngs=nnx.Rngs(seed))
