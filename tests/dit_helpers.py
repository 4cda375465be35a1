"""Shared by the DiT tests: a small random diffusers Wan model and our converted twin."""
import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

from fp_jax.export import diffusers_wan
from fp_jax.models.build import create_dit
from fp_jax.models.dit_config import DiTConfig
from fp_jax.parallel import mesh as mesh_lib

NO_CONTROLS = dict(reference=False, normals=False, warped_reference=False, rays=False, expression="none",
                   pose=False, reference_residual=False)


def diffusers_wan_model(dim, heads, layers, ffn_dim, text_dim=32, seed=0):
  from diffusers import WanTransformer3DModel  # pylint: disable=g-import-not-at-top
  torch.manual_seed(seed)
  return WanTransformer3DModel(
      patch_size=(1, 2, 2), num_attention_heads=heads, attention_head_dim=dim // heads, in_channels=16,
      out_channels=16, text_dim=text_dim, freq_dim=256, ffn_dim=ffn_dim, num_layers=layers,
      cross_attn_norm=True, eps=1e-6, rope_max_seq_len=64).eval()


def single_device_mesh():
  return mesh_lib.make_mesh({"data": -1}, jax.devices()[:1])


def converted(reference_model, mesh=None, **overrides):
  """Our DiT with the diffusers model's weights (controls per `overrides`, zero-initialised)."""
  config = reference_model.config
  fields = dict(dim=config.num_attention_heads * config.attention_head_dim, heads=config.num_attention_heads,
                layers=config.num_layers, ffn_dim=config.ffn_dim, text_dim=config.text_dim)
  fields.update(NO_CONTROLS)
  fields.update(overrides)
  model = create_dit(DiTConfig(**fields), mesh or single_device_mesh())
  load_state_dict(model, {k: v.detach().numpy() for k, v in reference_model.state_dict().items()})
  return model


def load_state_dict(model, state_dict):
  state = nnx.state(model, nnx.Param)
  params = jax.tree.map(np.asarray, state.to_pure_dict())
  diffusers_wan.from_diffusers(state_dict, params, model.config.layers)
  shardings = jax.tree.map(lambda x: x.sharding, state.to_pure_dict())
  params = jax.tree.map(jax.device_put, params, shardings)
  nnx.replace_by_pure_dict(state, params)
  nnx.update(model, state)


def diffusers_forward(reference_model, latents, timestep, context):
  """Channels-last numpy in, channels-last numpy out, through the PyTorch model."""
  with torch.no_grad():
    out = reference_model(torch.from_numpy(np.ascontiguousarray(latents.transpose(0, 4, 1, 2, 3))),
                          torch.from_numpy(timestep), torch.from_numpy(context), return_dict=False)[0]
  return out.numpy().transpose(0, 2, 3, 4, 1)


def relative_error(got, want):
  return float(np.max(np.abs(np.asarray(got) - want)) / np.max(np.abs(want)))


def control_inputs(rng, batch, frames, height, width, expression_dim=512, channels=16):
  video_frames = 1 + 4 * (frames - 1)
  return dict(
      reference=jnp.asarray(rng.standard_normal((batch, height, width, channels)), jnp.float32),
      normals=jnp.asarray(rng.standard_normal((batch, frames, height, width, channels)), jnp.float32),
      warped=jnp.asarray(rng.standard_normal((batch, frames, height, width, channels)), jnp.float32),
      rays=jnp.asarray(rng.standard_normal((batch, frames, height, width, 4 * 8 * 8 * 6)), jnp.float32),
      expression=jnp.asarray(rng.standard_normal((batch, video_frames, expression_dim)), jnp.float32),
      head_pose=jnp.asarray(rng.standard_normal((batch, video_frames, 10)), jnp.float32))
