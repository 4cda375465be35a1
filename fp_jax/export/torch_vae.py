"""An exported VAE in PyTorch (no jax): diffusers' `AutoencoderKLWan`, plus the linear path
(`fp_jax/models/vae_linear.py`) when the run has one. Videos and latents are channels-first, as
diffusers has them: `[B, 3, T, H, W]` in [-1, 1] and `[B, z, F, h, w]`.

  vae = ExportedVAE.from_export("exported/vae")   # model.safetensors (+ linear_path.safetensors)
  mean, logvar = vae.encode(video)
  video = vae.decode(mean)
"""
import json
import os

import torch
from torch import nn


def group_patches(video, time_stride, space_stride):
  """`[B, C, 1 + tk, H, W]` -> `[B, 1 + k, H/s, W/s, t*s*s*C]` in the JAX path's order."""
  x = video.permute(0, 2, 3, 4, 1)
  x = torch.cat([x[:, :1].expand(-1, time_stride, -1, -1, -1), x[:, 1:]], dim=1)
  batch, frames, height, width, channels = x.shape
  t, s = time_stride, space_stride
  x = x.reshape(batch, frames // t, t, height // s, s, width // s, s, channels)
  return x.permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(batch, frames // t, height // s, width // s, -1)


def ungroup_patches(x, time_stride, space_stride):
  """The inverse, channels-first, frame 0 the mean of its group."""
  batch, groups, rows, columns, width = x.shape
  t, s = time_stride, space_stride
  x = x.reshape(batch, groups, rows, columns, t, s, s, width // (t * s * s)).permute(0, 1, 4, 2, 5, 3, 6, 7)
  x = x.reshape(batch, groups * t, rows * s, columns * s, -1)
  x = torch.cat([x[:, :t].mean(dim=1, keepdim=True), x[:, t:]], dim=1)
  return x.permute(0, 4, 1, 2, 3)


class ExportedVAE(nn.Module):

  def __init__(self, vae, strides, linear_path=None):
    super().__init__()
    self.vae, self.strides = vae, strides
    self.linear_path = None if linear_path is None else nn.ParameterDict(
        {name: nn.Parameter(value, requires_grad=False) for name, value in linear_path.items()})

  @classmethod
  def from_export(cls, directory, dtype=torch.float32):
    from diffusers import AutoencoderKLWan  # pylint: disable=g-import-not-at-top
    from safetensors.torch import load_file  # pylint: disable=g-import-not-at-top
    with open(os.path.join(directory, "config.json")) as f:
      config = json.load(f)
    vae = AutoencoderKLWan(**config["diffusers"])
    vae.load_state_dict(load_file(os.path.join(directory, "model.safetensors")), strict=True)
    ours = config["vae"]
    strides = (2 ** sum(bool(t) for t in ours["temporal_downsample"]),
               ours["patch_size"] * 2 ** (len(ours["dim_mult"]) - 1))
    linear = load_file(os.path.join(directory, "linear_path.safetensors")) if ours.get("linear_path") else None
    return cls(vae, strides, linear).to(dtype).eval()

  def encode(self, video):
    """-> (mean, logvar), the posterior's."""
    posterior = self.vae.encode(video).latent_dist
    if self.linear_path is None:
      return posterior.mean, posterior.logvar
    linear = group_patches(video, *self.strides) @ self.linear_path["encode_kernel"] + self.linear_path["encode_bias"]
    return posterior.mean + linear.permute(0, 4, 1, 2, 3), posterior.logvar

  def decode(self, latents):
    """-> video in [-1, 1]. The linear path joins the nets' output before diffusers' clamp, so
    that output is caught from the decoder's calls (one a latent frame) instead."""
    if self.linear_path is None:
      return self.vae.decode(latents).sample
    from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify  # pylint: disable=g-import-not-at-top
    outputs = []
    hook = self.vae.decoder.register_forward_hook(lambda module, args, output: outputs.append(output))
    try:
      self.vae.decode(latents)
    finally:
      hook.remove()
    nets = torch.cat(outputs, dim=2)
    if self.vae.config.patch_size is not None:
      nets = unpatchify(nets, patch_size=self.vae.config.patch_size)
    grouped = latents.permute(0, 2, 3, 4, 1)
    linear = grouped @ self.linear_path["decode_kernel"] + self.linear_path["decode_bias"]
    return torch.clamp(nets + ungroup_patches(linear, *self.strides), -1.0, 1.0)
