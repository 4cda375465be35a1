"""The motion encoders and the identity embedding in PyTorch (no jax), mirroring `fp_jax/models/motion.py`.

Convolutions pad as Flax's "SAME" does (for stride 2 on even sizes: nothing before, one after),
not symmetrically; GroupNorm uses Flax's epsilon. Images are channels-last `[..., H, W, 3]`,
uint8 or floats in [-1, 1], as in JAX.

  encoders = MotionEncoders.from_export("exported/motion")   # model.safetensors + config.json
  embedding = IdentityEncoder.from_export("exported/identity")
"""
import math

import torch
from torch import nn
from torch.nn import functional as F

from fp_jax.export import torch_files

POSE_DIM = 10
GROUP_NORM_EPS = 1e-6
GRID = 4  # grid pooling's cells a side (fp_jax/models/motion.py)
STANDARDISE_EPS = 0.05  # as fp_jax/models/motion.py


class SameConv2d(nn.Conv2d):

  def forward(self, x):
    pads = []
    for size, kernel, stride in zip(x.shape[-2:], self.kernel_size, self.stride):
      total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
      pads.append((total // 2, total - total // 2))
    (top, bottom), (left, right) = pads
    return super().forward(F.pad(x, (left, right, top, bottom)))


class Stage(nn.Module):

  def __init__(self, in_dim, out_dim):
    super().__init__()
    self.down = SameConv2d(in_dim, out_dim, 3, stride=2)
    self.norm1 = nn.GroupNorm(8, out_dim, eps=GROUP_NORM_EPS)
    self.conv1 = SameConv2d(out_dim, out_dim, 3, bias=False)
    self.norm2 = nn.GroupNorm(8, out_dim, eps=GROUP_NORM_EPS)
    self.conv2 = SameConv2d(out_dim, out_dim, 3)

  def forward(self, x):
    x = self.down(x)
    return x + self.conv2(F.silu(self.norm2(self.conv1(F.silu(self.norm1(x))))))


def keypoints(features):
  """`[N, C, H, W]` -> `[N, 2C]`: per channel, the softmax-weighted mean (x, y) in [-1, 1]."""
  n, c, h, w = features.shape
  weights = torch.softmax(features.reshape(n, c, h * w), dim=-1).reshape(n, c, h, w)
  x = (weights.sum(dim=2) * torch.linspace(-1.0, 1.0, w, dtype=weights.dtype)).sum(dim=-1)
  y = (weights.sum(dim=3) * torch.linspace(-1.0, 1.0, h, dtype=weights.dtype)).sum(dim=-1)
  return torch.cat([x, y], dim=-1)


def _build_tower(tower, widths, stem_width):
  """Gives `tower` (the encoder, which reads the face, or a part's tower) its stem, stages and norm."""
  first = 3
  if stem_width:
    tower.stem = SameConv2d(3, stem_width, 3)
    first = stem_width
  tower.stages = nn.ModuleList([Stage(a, b) for a, b in zip([first] + widths[:-1], widths)])
  tower.norm = nn.GroupNorm(8, widths[-1], eps=GROUP_NORM_EPS)


class PartTower(nn.Module):
  """The stem, stages and final norm that read one part's close-up (fp_jax/models/motion.py)."""

  def __init__(self, widths, stem_width=0):
    super().__init__()
    _build_tower(self, widths, stem_width)


def _pooled(tower, pooling, standardise, images):
  """`[N, H, W, 3]` images -> `[N, pooled]` through one tower, as the JAX encoder pools them."""
  x = images.float() / 127.5 - 1.0 if images.dtype == torch.uint8 else images.float()
  x = x.permute(0, 3, 1, 2)
  if standardise:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) / (x.std(dim=(1, 2, 3), keepdim=True, correction=0) + STANDARDISE_EPS)
  if hasattr(tower, "stem"):
    x = F.silu(tower.stem(x))
  for stage in tower.stages:
    x = stage(x)
  x = tower.norm(x)
  if pooling == "grid":  # cells row-major, each cell's channels together, as the JAX encoder
    cells = F.adaptive_avg_pool2d(F.silu(x), GRID).permute(0, 2, 3, 1)
    pooled = cells.reshape(len(cells), -1)
  else:
    pooled = F.silu(x).mean(dim=(2, 3))
  if pooling == "mean_keypoints":
    pooled = torch.cat([pooled, keypoints(x)], dim=-1)
  return pooled


class ImageEncoder(nn.Module):
  """`[..., H, W, 3]` images -> `[..., output_dim]`; with `parts` P, `[..., 1 + P, H, W, 3]` (the
  face, then P close-ups, each read by a tower of its own)."""

  def __init__(self, widths, output_dim, pooling="mean", parts=0, stem_width=0, standardise=False):
    super().__init__()
    widths = list(widths)
    self.pooling, self.parts, self.standardise = pooling, parts, standardise
    _build_tower(self, widths, stem_width)
    if parts:
      self.part_towers = nn.ModuleList([PartTower(widths, stem_width) for _ in range(parts)])
    pooled = widths[-1] * {"mean": 1, "mean_keypoints": 3, "grid": GRID * GRID}[pooling]
    self.head = nn.Linear((1 + parts) * pooled, output_dim)

  def forward(self, images):
    views = 1 + self.parts
    leading = images.shape[:-3] if views == 1 else images.shape[:-4]
    flat = images.reshape(-1, views, *images.shape[-3:])
    towers = [self] + list(self.part_towers if self.parts else ())
    pooled = [_pooled(tower, self.pooling, self.standardise, flat[:, view]) for view, tower in enumerate(towers)]
    return self.head(torch.cat(pooled, dim=-1)).reshape(*leading, -1)


class IdentityEncoder(ImageEncoder):
  """The identity embedding (fp_jax/train/tasks/identity_task.py): compare outputs by cosine."""

  def __init__(self, config):
    super().__init__(config["widths"], config["embedding_dim"], config.get("pooling", "mean"))
    self.config = dict(config)

  @classmethod
  def from_export(cls, directory, dtype=torch.float32):
    return torch_files.load_exported(cls, directory, "identity", dtype)


class MotionEncoders(nn.Module):
  """The expression encoder, the pose encoder and the expression read-out, as trained."""

  def __init__(self, config):
    super().__init__()
    self.config = dict(config)
    widths = self.config["widths"]
    # Exports made before the pooling, stem and standardise fields existed: mean pooling, neither.
    self.expression = ImageEncoder(widths, self.config["expression_dim"],
                                   self.config.get("expression_pooling", "mean"),
                                   len(self.config.get("expression_parts") or ()),
                                   self.config.get("expression_stem_width", 0),
                                   self.config.get("expression_standardise", False))
    # An empty (or, in older exports, absent) pose_widths: the pose encoder is as wide as the other.
    self.pose = ImageEncoder(self.config.get("pose_widths") or widths, POSE_DIM,
                             self.config.get("pose_pooling", "mean"))
    self.readout = nn.Linear(self.config["expression_dim"], self.config["num_controls"])

  @classmethod
  def from_export(cls, directory, dtype=torch.float32):
    return torch_files.load_exported(cls, directory, "motion", dtype)
