"""The FactorPortrait DiT in PyTorch (no jax): diffusers' Wan transformer plus the controls.

The Wan modules are diffusers' own (`WanRotaryPosEmbed`, `WanTimeTextImageEmbedding`,
`WanTransformerBlock`, its `WanAttention`), held under diffusers' names, so the core of an export
loads into `WanTransformer3DModel` too. The controls follow `fp_jax/models/dit.py` line for line;
tensors are channels-last as there: latents `[B, F, h, w, C]`, rays folded onto the latent grid
`[B, F, h, w, 4*8*8*6]` (`rays_to_latent_grid` below folds `[B, T, H, W, 6]` Plücker maps),
expression `[B, T, E]`, head pose `[B, T, 10]`, `keep` a dict of `[B]` 0/1 per condition.

  model = PortraitTransformer.from_export("exported/")   # model.safetensors + config.json
"""
import math

import torch
from diffusers.models.transformers.transformer_wan import (WanAttention, WanAttnProcessor, WanRotaryPosEmbed,
                                                           WanTimeTextImageEmbedding, WanTransformerBlock)
from diffusers.models.normalization import FP32LayerNorm
from torch import nn
from torch.nn import functional as F

from fp_jax.export import torch_files

POSE_DIM, RAY_DIM = 10, 6


def rays_to_latent_grid(rays, stride=(4, 8, 8)):
  """Plücker maps `[B, T, H, W, 6]` (T = 1 + 4k) -> the model's camera input `[B, 1 + k, H/8, W/8,
  4*8*8*6]`, ordered (frame in group, row, column, channel) per latent cell."""
  st, sh, sw = stride
  batch, _, height, width, channels = rays.shape
  grouped = torch.cat([rays[:, :1].repeat_interleave(st, dim=1), rays[:, 1:]], dim=1)
  cells = grouped.reshape(batch, -1, st, height // sh, sh, width // sw, sw, channels)
  cells = cells.permute(0, 1, 3, 5, 2, 4, 6, 7)
  return cells.reshape(batch, cells.shape[1], height // sh, width // sw, -1)


def group_frames(x, latent_frames):
  """`[B, T, ...]`, T = 1 + 4(F - 1) -> `[B, F, 4, ...]`; the first frame fills its group."""
  first = x[:, :1].repeat_interleave(4, dim=1)
  rest = x[:, 1:].reshape(x.shape[0], latent_frames - 1, 4, *x.shape[2:])
  return torch.cat([first[:, None], rest], dim=1)


def _per_frame(reference):
  """The residual's base at every latent frame: one latent `[B, h, w, C]` or one per frame."""
  return reference[:, None] if reference.dim() == 4 else reference


class PortraitTransformer(nn.Module):

  def __init__(self, config):
    super().__init__()
    self.config = dict(config)
    c = self.config
    dim, heads, patch = c["dim"], c["heads"], tuple(c["patch"])
    self.rope = WanRotaryPosEmbed(dim // heads, patch, max_seq_len=1024, theta=c["rope_theta"])
    self.patch_embedding = nn.Conv3d(c["in_channels"], dim, kernel_size=patch, stride=patch)
    self.condition_embedder = WanTimeTextImageEmbedding(dim, c["freq_dim"], 6 * dim, c["text_dim"])
    self.blocks = nn.ModuleList([WanTransformerBlock(dim, c["ffn_dim"], heads, "rms_norm_across_heads", True, c["eps"])
                                 for _ in range(c["layers"])])
    self.norm_out = FP32LayerNorm(dim, c["eps"], elementwise_affine=False)
    self.proj_out = nn.Linear(dim, c["out_channels"] * math.prod(patch))
    self.scale_shift_table = nn.Parameter(torch.zeros(1, 2, dim))
    volume = math.prod(patch)
    condition_channels = c["in_channels"] * (int(c["reference"]) + int(c["normals"])
                                             + int(c.get("warped_reference", False)))
    if condition_channels:
      self.condition_embedding = nn.Conv3d(condition_channels, dim, kernel_size=patch, stride=patch, bias=False)
    if c["rays"]:
      t, sh, sw = c["vae_stride"]
      self.ray_embedding = nn.Linear(volume * t * sh * sw * RAY_DIM, dim)
    if self.expression_adaln:
      self.expression_adaln_1 = nn.Linear(c["expression_dim"], dim)
      self.expression_adaln_2 = nn.Linear(dim, dim)
    if self.expression_cross_attention:
      self.expression_tokens_1 = nn.Linear(c["expression_token_dim"], dim)
      self.expression_tokens_2 = nn.Linear(dim, dim)
      for block in self.blocks:
        block.expression_attn = WanAttention(dim, heads, dim // heads, c["eps"], cross_attention_dim_head=dim // heads,
                                             processor=WanAttnProcessor())
    if c["pose"]:
      self.pose_embedding_1 = nn.Linear(POSE_DIM, dim)
      self.pose_embedding_2 = nn.Linear(dim, dim)

  @property
  def expression_adaln(self):
    return self.config["expression"] in ("adaln", "both")

  @property
  def expression_cross_attention(self):
    return self.config["expression"] in ("cross_attention", "both")

  @classmethod
  def from_export(cls, directory, dtype=torch.float32):
    return torch_files.load_exported(cls, directory, "model", dtype)

  # -- shapes (channels-last, as the JAX model) --------------------------------------------------

  def _patchify(self, x):
    batch, frames, height, width, channels = x.shape
    pt, ph, pw = self.config["patch"]
    x = x.reshape(batch, frames // pt, pt, height // ph, ph, width // pw, pw, channels)
    return x.permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(batch, -1, pt * ph * pw * channels)

  def _embed(self, conv, x):
    """A patch-embedding Conv3d on channels-last input -> tokens `[B, L, D]`."""
    return conv(x.permute(0, 4, 1, 2, 3)).flatten(2).transpose(1, 2)

  @staticmethod
  def _keep(keep, name, batch):
    if keep is None or name not in keep:
      return torch.ones(batch)
    return torch.as_tensor(keep[name], dtype=torch.float32).reshape(batch)

  # -- conditions ----------------------------------------------------------------------------

  def _warp_keep(self, keep, batch):
    return self._keep(keep, "reference", batch) * self._keep(keep, "pose", batch)

  def _fused_conditions(self, latents, reference, normals, warped, keep):
    parts, batch = [], latents.shape[0]
    per_example = lambda keep_value: keep_value[:, None, None, None, None]
    if self.config["reference"]:
      reference = reference.to(latents.dtype)
      if self.config.get("reference_frames", "first") == "all":
        slot = reference[:, None].expand_as(latents)
      else:
        slot = torch.zeros_like(latents)
        slot[:, 0] = reference
      parts.append(slot * per_example(self._keep(keep, "reference", batch)))
    for name, frames, kept in (("normals", normals, lambda: self._keep(keep, "pose", batch)),
                               ("warped_reference", warped, lambda: self._warp_keep(keep, batch))):
      if self.config.get(name, False):
        frames = frames.to(latents.dtype).clone()
        frames[:, 0] = 0
        parts.append(frames * per_example(kept()))
    return self._embed(self.condition_embedding, torch.cat(parts, dim=-1))

  def _residual_base(self, reference, warped, keep):
    if not self.config.get("warped_reference", False) or warped is None:
      return reference
    reference = reference.float()
    kept = self._warp_keep(keep, reference.shape[0])[:, None, None, None, None]
    base = kept * warped.float() + (1.0 - kept) * reference[:, None]
    base[:, 0] = reference
    return base

  def _ray_tokens(self, rays, latents, keep):
    return self.ray_embedding(self._patchify(rays.to(latents.dtype))) * self._keep(keep, "camera", latents.shape[0])[:, None, None]

  def _frame_embedding(self, expression, head_pose, keep, batch, frames):
    total = torch.zeros(batch, frames, self.config["dim"])
    if self.expression_adaln and expression is not None:
      codes = group_frames(expression.float(), frames).mean(dim=2)
      embedded = self.expression_adaln_2(F.silu(self.expression_adaln_1(codes)))
      total = total + embedded * self._keep(keep, "expression", batch)[:, None, None]
    if self.config["pose"] and head_pose is not None:
      pose = group_frames(head_pose.float(), frames).mean(dim=2)
      embedded = self.pose_embedding_2(F.silu(self.pose_embedding_1(pose)))
      total = total + embedded * self._keep(keep, "pose", batch)[:, None, None]
    return total

  def _expression_tokens(self, expression, frames):
    codes = group_frames(expression.float(), frames)
    tokens = codes.reshape(codes.shape[0], frames, -1, self.config["expression_token_dim"])
    return self.expression_tokens_2(F.gelu(self.expression_tokens_1(tokens), approximate="tanh"))

  # -- forward -------------------------------------------------------------------------------

  def forward(self, latents, timestep, context=None, *, reference=None, normals=None, rays=None,
              expression=None, head_pose=None, keep=None, warped=None):
    c = self.config
    batch, frames, height, width, _ = latents.shape
    controls = reference is not None
    base = self._residual_base(reference, warped, keep) if controls else None
    noisy = self._network_input(latents, timestep, base)
    if controls:
      noisy[:, 0] = 0
    tokens = self._embed(self.patch_embedding, noisy)
    if controls and (c["reference"] or c["normals"] or c.get("warped_reference", False)):
      tokens = tokens + self._fused_conditions(latents, reference, normals, warped, keep)
    if controls and c["rays"] and rays is not None:
      tokens = tokens + self._ray_tokens(rays, latents, keep)

    embedder = self.condition_embedder
    timestep = torch.as_tensor(timestep).reshape(batch, -1)
    features = embedder.timesteps_proj(timestep.flatten()).reshape(batch, timestep.shape[1], -1)
    temb = embedder.time_embedder(features.float()).float()
    if controls and (self.expression_adaln or c["pose"]):
      temb = temb + self._frame_embedding(expression, head_pose, keep, batch, frames)
    modulation = embedder.time_proj(F.silu(temb)).float().reshape(batch, temb.shape[1], 6, c["dim"])

    text = embedder.text_embedder(context) if context is not None else None
    expression_tokens = expression_keep = None
    if controls and self.expression_cross_attention and expression is not None:
      expression_tokens = self._expression_tokens(expression, frames // c["patch"][0])
      expression_keep = self._keep(keep, "expression", batch)

    rotary = self.rope(latents.permute(0, 4, 1, 2, 3))
    for block in self.blocks:
      tokens = self._block(block, tokens, modulation, rotary, text, expression_tokens, expression_keep)

    head = self.scale_shift_table[:, None] + temb[:, :, None]  # [B, F or 1, 2, D]
    shift, scale = head[:, :, 0, None], head[:, :, 1, None]
    per_frame = tokens.reshape(batch, temb.shape[1], -1, c["dim"])
    out = self.norm_out(per_frame.float()) * (1 + scale) + shift
    out = self.proj_out(out.reshape(batch, -1, c["dim"]))
    pt, ph, pw = c["patch"]
    out = out.reshape(batch, frames // pt, height // ph, width // pw, pt, ph, pw, -1)
    out = out.permute(0, 1, 4, 2, 5, 3, 6, 7).reshape(batch, frames, height, width, -1).float()
    return self._velocity(out, latents, timestep, base)

  # -- preconditioning (fp_jax/models/preconditioning.py) ------------------------------------

  def _relative(self, latents, timestep, reference):
    """(sigma broadcast over the latents, the latents relative to the reference where asked)."""
    sigma = torch.as_tensor(timestep, dtype=torch.float32) / 1000.0
    sigma = sigma.reshape(sigma.shape + (1,) * (latents.ndim - sigma.ndim))
    if self.config.get("reference_residual", False) and reference is not None:
      latents = latents - (1.0 - sigma) * _per_frame(reference).to(latents.dtype)
    return sigma, latents

  def _network_input(self, latents, timestep, reference):
    sigma, x = self._relative(latents, timestep, reference)
    d = self.config.get("sigma_data", 0.0)
    return (x * torch.rsqrt(((1.0 - sigma) * d) ** 2 + sigma ** 2) if d else x).clone()

  def _velocity(self, out, latents, timestep, reference):
    d = self.config.get("sigma_data", 0.0)
    if d:
      sigma, x = self._relative(latents, timestep, reference)
      c_in = torch.rsqrt(((1.0 - sigma) * d) ** 2 + sigma ** 2)
      out = (sigma - (1.0 - sigma) * d * d) * c_in ** 2 * x + d * c_in * out
    if self.config.get("reference_residual", False) and reference is not None:
      out = out - _per_frame(reference).to(out.dtype)
    return out

  def _block(self, block, x, modulation, rotary, text, expression_tokens, expression_keep):
    """diffusers' `WanTransformerBlock.forward` with per-latent-frame modulation and the
    frame-aligned expression attention between the text attention and the feed-forward."""
    batch, length, dim = x.shape
    frames = modulation.shape[1]
    mod = block.scale_shift_table[:, None] + modulation  # [B, F, 6, D]
    shift, scale, gate, c_shift, c_scale, c_gate = (mod[:, :, i, None, :] for i in range(6))
    per_frame = lambda t: t.reshape(batch, frames, length // frames, dim)
    flat = lambda t: t.reshape(batch, length, dim)

    h = flat(block.norm1(per_frame(x).float()) * (1 + scale) + shift)
    x = flat(per_frame(x).float() + per_frame(block.attn1(h, None, None, rotary)) * gate)
    h = block.norm2(x.float())
    if text is not None:
      x = x + block.attn2(h, text, None, None)
    if expression_tokens is not None:
      queries = h.reshape(batch * frames, length // frames, dim)
      out = block.expression_attn(queries, expression_tokens.reshape(batch * frames, -1, dim), None, None)
      x = x + out.reshape(batch, length, dim) * expression_keep[:, None, None]
    h = flat(block.norm3(per_frame(x).float()) * (1 + c_scale) + c_shift)
    return flat(per_frame(x).float() + per_frame(block.ffn(h)).float() * c_gate)
