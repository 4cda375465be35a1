"""The causal video VAE: parity with diffusers' AutoencoderKLWan, chunked = whole clip, errors."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from data_pipeline.errors import InputError
from fp_jax.export import diffusers_vae
from fp_jax.models.vae import VAEConfig, VideoVAE


def diffusers_vae_model(base_dim, z_dim, dim_mult, num_res_blocks, seed=0, temporal=(False, True, True),
                        **wan_2_2):
  """A random diffusers VAE; `wan_2_2`: is_residual, patch_size, decoder_base_dim."""
  from diffusers import AutoencoderKLWan  # pylint: disable=g-import-not-at-top
  torch.manual_seed(seed)
  patch = wan_2_2.get("patch_size") or 1
  model = AutoencoderKLWan(base_dim=base_dim, z_dim=z_dim, dim_mult=list(dim_mult),
                           num_res_blocks=num_res_blocks, temperal_downsample=list(temporal),
                           in_channels=3 * patch * patch, out_channels=3 * patch * patch, **wan_2_2).eval()
  with torch.no_grad():  # diffusers zero-initialises nothing here, but make every weight matter
    for parameter in model.parameters():
      parameter.add_(0.05 * torch.randn_like(parameter))
  return model


def converted(reference):
  config = reference.config
  ours = VideoVAE(VAEConfig(base_dim=config.base_dim, z_dim=config.z_dim, dim_mult=tuple(config.dim_mult),
                            num_res_blocks=config.num_res_blocks,
                            temporal_downsample=tuple(config.temperal_downsample),
                            latents_mean=(0.0,) * config.z_dim, latents_std=(1.0,) * config.z_dim,
                            residual=config.is_residual, patch_size=config.patch_size or 1,
                            decoder_base_dim=config.decoder_base_dim or 0), rngs=nnx.Rngs(0))
  state = nnx.state(ours, nnx.Param)
  params = jax.tree.map(np.asarray, state.to_pure_dict())
  diffusers_vae.from_diffusers({k: v.numpy() for k, v in reference.state_dict().items()}, params)
  nnx.replace_by_pure_dict(state, params)
  nnx.update(ours, state)
  return ours


to_torch = lambda x: torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1)))
to_numpy = lambda x: np.moveaxis(x.numpy(), 1, -1)


def relative_error(got, want):
  return float(np.max(np.abs(np.asarray(got) - want)) / np.max(np.abs(want)))


def assert_encodes_and_decodes_as(reference, ours, frames, height, width):
  """Encode (mean and log-variance) and decode of a random clip within 1e-4 of diffusers'."""
  video = np.random.default_rng(frames).uniform(-1, 1, (2, frames, height, width, 3)).astype(np.float32)
  with torch.no_grad():
    posterior = reference.encode(to_torch(video)).latent_dist
    want_mean, want_logvar = to_numpy(posterior.mean), to_numpy(posterior.logvar)
    want_video = to_numpy(reference.decode(to_torch(want_mean)).sample)
  mean, logvar = nnx.jit(lambda vae, x: vae.encode(x))(ours, jnp.asarray(video))
  stride = ours.config.spatial_stride
  assert mean.shape == (2, 1 + (frames - 1) // 4, height // stride, width // stride, reference.config.z_dim)
  assert relative_error(mean, want_mean) <= 1e-4
  assert relative_error(logvar, want_logvar) <= 1e-4
  assert relative_error(nnx.jit(lambda vae, z: vae.decode(z))(ours, jnp.asarray(want_mean)), want_video) <= 1e-4


@pytest.mark.parametrize("base_dim, dim_mult, blocks, frames, height, width", [
    (8, (1, 2, 4, 4), 2, 9, 32, 48),   # Wan's layout at a small width; non-square
    (8, (1, 2, 2, 2), 1, 1, 16, 16),   # a single frame (an image)
    (4, (1, 2, 2, 2), 1, 5, 24, 16),
])
def test_encode_and_decode_match_diffusers(base_dim, dim_mult, blocks, frames, height, width):
  reference = diffusers_vae_model(base_dim, 16, dim_mult, blocks)
  ours = converted(reference)
  assert ours.config.spatial_stride == 8
  assert_encodes_and_decodes_as(reference, ours, frames, height, width)


WAN_2_2_CASES = {
    # Wan 2.2's layout at a small width: 16x spatial (2x2 pixel patches, three downsamplings), a
    # wider decoder, an odd latent width; non-square.
    "wan_2_2": dict(base_dim=8, z_dim=12, dim_mult=(1, 2, 4, 4), num_res_blocks=2, temporal=(False, True, True),
                    is_residual=True, patch_size=2, decoder_base_dim=12),
    # 8x spatial from patches and two downsamplings, both also in time (a Wan 2.1-sized latent).
    "patch_8x": dict(base_dim=8, z_dim=16, dim_mult=(1, 2, 2), num_res_blocks=1, temporal=(True, True),
                     is_residual=True, patch_size=2),
    # The residual blocks alone, without patches; the first level doubles the width, so its shortcut
    # averages pairs of channels and their order (row, column) matters.
    "residual_only": dict(base_dim=4, z_dim=8, dim_mult=(2, 2, 4, 4), num_res_blocks=1, temporal=(False, True, True),
                          is_residual=True),
}


@pytest.mark.parametrize("case, frames, height, width", [
    ("wan_2_2", 9, 32, 80), ("patch_8x", 5, 24, 16), ("residual_only", 1, 16, 24)])
def test_wan_2_2_layouts_encode_and_decode_as_diffusers(case, frames, height, width):
  reference = diffusers_vae_model(**WAN_2_2_CASES[case])
  ours = converted(reference)
  assert_encodes_and_decodes_as(reference, ours, frames, height, width)
  exported = dict(diffusers_vae.to_diffusers(jax.tree.map(np.asarray, nnx.state(ours, nnx.Param).to_pure_dict()),
                                             {k: v.shape for k, v in reference.state_dict().items()}))
  from diffusers import AutoencoderKLWan  # pylint: disable=g-import-not-at-top
  config = dataclasses.asdict(ours.config)
  assert AutoencoderKLWan(**diffusers_vae.diffusers_config(config)).load_state_dict(
      {k: torch.from_numpy(v) for k, v in exported.items()}, strict=True)


@pytest.mark.parametrize("layout", ["wan_2_1", "wan_2_2"])
def test_chunked_encode_and_decode_equal_the_whole_clip(layout):
  if layout == "wan_2_1":
    ours = converted(diffusers_vae_model(8, 16, (1, 2, 2, 2), 1))
  else:  # the shortcuts' time padding and first-frame cut, chunk by chunk
    ours = converted(diffusers_vae_model(**WAN_2_2_CASES["patch_8x"]))
  video = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (1, 17, 16, 24, 3)), jnp.float32)
  whole = nnx.jit(lambda vae, x: vae.encode(x))(ours, video)
  chunked = nnx.jit(lambda vae, x: vae.encode(x, chunked=True))(ours, video)
  for a, b in zip(whole, chunked):
    assert relative_error(b, a) <= 1e-5
  latents = whole[0]
  decoded = nnx.jit(lambda vae, z: vae.decode(z))(ours, latents)
  decoded_chunked = nnx.jit(lambda vae, z: vae.decode(z, chunked=True))(ours, latents)
  assert decoded.shape == (1, 17, 16, 24, 3)
  assert relative_error(decoded_chunked, decoded) <= 1e-5


def test_a_fresh_vae_is_an_image_autoencoder_with_nearest_resampling_in_time():
  """Initialised from scratch, every causal kernel weighs only the newest frame and the time
  resamplers copy it: the latents read frames 0, 4, 8, ... alone and each latent frame decodes to
  repeated frames. Trained weights then learn to mix frames."""
  vae = VideoVAE(VAEConfig(base_dim=4, dim_mult=(1, 2, 2, 2), num_res_blocks=1), rngs=nnx.Rngs(0))
  encode = nnx.jit(lambda vae, x: vae.encode(x)[0])
  video = np.random.default_rng(0).uniform(-1, 1, (1, 9, 16, 16, 3)).astype(np.float32)
  latents = np.asarray(encode(vae, jnp.asarray(video)))
  between = video.copy()
  between[:, [1, 2, 3, 5, 6, 7]] = np.random.default_rng(1).uniform(-1, 1, (1, 6, 16, 16, 3))
  np.testing.assert_allclose(np.asarray(encode(vae, jnp.asarray(between))), latents, atol=1e-6)
  newest = video.copy()
  newest[:, 4] = 0.0
  changed = np.abs(np.asarray(encode(vae, jnp.asarray(newest))) - latents).max(axis=(0, 2, 3, 4))
  assert changed[0] < 1e-6 and changed[1] > 1e-3  # frame 4 is latent frame 1's, not 0's
  decoded = np.asarray(nnx.jit(lambda vae, z: vae.decode(z))(vae, jnp.asarray(latents)))
  for group in (decoded[0, 1:5], decoded[0, 5:9]):
    np.testing.assert_allclose(group, np.broadcast_to(group[:1], group.shape), atol=1e-6)
  assert np.abs(decoded[0, 1] - decoded[0, 5]).max() > 1e-3


def test_bad_inputs_and_checkpoints():
  reference = diffusers_vae_model(4, 16, (1, 2, 2, 2), 1)
  ours = converted(reference)
  with pytest.raises(InputError, match="1 \\+ 4k"):
    ours.encode(jnp.zeros((1, 4, 16, 16, 3)))
  with pytest.raises(InputError, match="must be \\[B, T, H, W, 3\\]"):
    ours.encode(jnp.zeros((1, 5, 16, 16)))
  with pytest.raises(InputError, match="multiples of 8"):
    ours.encode(jnp.zeros((1, 5, 12, 16, 3)))
  with pytest.raises(InputError, match=r"temporal_downsample needs one entry per downsampling \(2 for dim_mult"):
    VideoVAE(VAEConfig(base_dim=4, dim_mult=(1, 2, 2), temporal_downsample=(False, True, True)), rngs=nnx.Rngs(0))
  with pytest.raises(InputError, match="need z_dim = 8 entries, got 16 and 16"):
    VideoVAE(VAEConfig(base_dim=4, z_dim=8), rngs=nnx.Rngs(0))
  with pytest.raises(InputError, match="cannot average 16 folded channels down to 32"):
    VideoVAE(VAEConfig(base_dim=4, dim_mult=(1, 2, 4, 8), residual=True), rngs=nnx.Rngs(0))
  with pytest.raises(InputError, match="cannot share 16 unfolded channels among 32"):  # the encoder fits
    VideoVAE(VAEConfig(base_dim=4, dim_mult=(1, 1, 8, 8), residual=True), rngs=nnx.Rngs(0))
  patched = VideoVAE(VAEConfig(base_dim=4, residual=True, patch_size=2), rngs=nnx.Rngs(0))
  with pytest.raises(InputError, match="multiples of 16, got 24x32"):
    patched.encode(jnp.zeros((1, 5, 24, 32, 3)))
  state_dict = {k: v.numpy() for k, v in reference.state_dict().items()}
  params = jax.tree.map(np.asarray, nnx.state(ours, nnx.Param).to_pure_dict())
  broken = dict(state_dict)
  del broken["encoder.conv_in.weight"]
  broken["encoder.extra.weight"] = np.zeros(3)
  broken["decoder.conv_out.bias"] = np.zeros(4)
  with pytest.raises(InputError, match=r"1 missing: encoder.conv_in.weight; 1 unexpected: "
                                       r"encoder.extra.weight; 1 shape mismatch"):
    diffusers_vae.from_diffusers(broken, params, source="vae.safetensors")
  back = dict(diffusers_vae.to_diffusers(params, {k: v.shape for k, v in state_dict.items()}))
  assert back.keys() == state_dict.keys()
  for key, value in state_dict.items():
    np.testing.assert_array_equal(back[key], value, err_msg=key)


def test_the_standardisation_term_measures_each_channels_distance_from_mean_0_std_1():
  from fp_jax.train.tasks.vae_task import standardisation  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(7)
  unit = rng.standard_normal((4, 3, 5, 5, 2))
  unit = (unit - unit.mean(axis=(0, 1, 2, 3))) / unit.std(axis=(0, 1, 2, 3))  # exactly mean 0, std 1
  assert float(standardisation(jnp.asarray(unit))) < 1e-6
  # Channel 0 shifted by 0.5, channel 1 scaled by 3: ((0.5^2 + 0) + (0 + 2^2)) / 2.
  moved = unit * np.array([1.0, 3.0]) + np.array([0.5, 0.0])
  np.testing.assert_allclose(float(standardisation(jnp.asarray(moved))), (0.25 + 4.0) / 2, rtol=1e-5)


def test_training_crops_cut_one_latent_aligned_window_through_every_frame():
  from fp_jax.train.tasks.vae_task import random_crops  # pylint: disable=g-import-not-at-top
  # Each pixel encodes its own position, so a crop shows where it was cut from.
  rows, columns = np.meshgrid(np.arange(40), np.arange(48), indexing="ij")
  frame = np.stack([rows, columns, np.zeros_like(rows)], axis=-1).astype(np.float32)
  video = np.broadcast_to(frame, (6, 5, 40, 48, 3)) + np.arange(5, dtype=np.float32)[None, :, None, None, None] * 100
  crops = np.asarray(random_crops(jnp.asarray(video), 16, jax.random.key(3)))
  assert crops.shape == (6, 5, 16, 16, 3)
  origins = set()
  for clip in crops:
    top, left = clip[0, 0, 0, :2]
    assert top % 8 == 0 and left % 8 == 0 and top + 16 <= 40 and left + 16 <= 48
    np.testing.assert_array_equal(clip, video[0, :, int(top):int(top) + 16, int(left):int(left) + 16])
    origins.add((int(top), int(left)))
  assert len(origins) > 1  # clips get their own windows
  from configs import tiny  # pylint: disable=g-import-not-at-top
  from fp_jax.train.tasks.vae_task import VAETask  # pylint: disable=g-import-not-at-top
  config = tiny.get_config("vae")
  config.vae_loss.crop = 20  # not on the latent grid
  with pytest.raises(InputError, match=r"vae_loss.crop must be 0 or a positive multiple of 8 \(the VAE's stride\), got 20"):
    VAETask(config)
  config.vae.update(patch_size=2, residual=True)  # 16x: Wan 2.2's stride
  config.vae_loss.crop = 24
  with pytest.raises(InputError, match=r"multiple of 16 \(the VAE's stride\), got 24"):
    VAETask(config)


def test_a_vae_with_other_than_wans_16_channels_normalises_to_mean_0_std_1():
  import ml_collections  # pylint: disable=g-import-not-at-top
  from fp_jax.models.vae import WAN_LATENTS_MEAN, WAN_LATENTS_STD  # pylint: disable=g-import-not-at-top
  from fp_jax.train.tasks.common import vae_config  # pylint: disable=g-import-not-at-top
  config = lambda **vae: ml_collections.ConfigDict(dict(vae=dict(base_dim=8, **vae)))
  wan = vae_config(config(z_dim=16))
  assert (wan.latents_mean, wan.latents_std) == (WAN_LATENTS_MEAN, WAN_LATENTS_STD)
  wide = vae_config(config(z_dim=32))
  assert wide.latents_mean == (0.0,) * 32 and wide.latents_std == (1.0,) * 32
  given = vae_config(config(z_dim=4, latents_mean=(1.0, 2.0, 3.0, 4.0), latents_std=(2.0,) * 4))
  assert given.latents_mean == (1.0, 2.0, 3.0, 4.0) and given.latents_std == (2.0,) * 4
