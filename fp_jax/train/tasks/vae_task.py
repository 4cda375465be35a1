"""VAE task: reconstruct the video (L1 and squared error, weighted by `vae_loss`) under a small KL
pull towards the prior, with the latents held to the per-channel statistics the config declares.

The squared error learns faster early on than L1 alone, whose gradient is the error's sign
whatever its size (figures in configs/common.py).

The DiT sees latents normalised by `config.vae.latents_mean/std` (Wan's by default). A VAE
trained here would otherwise settle on scales of its own (measured: per-channel std 1.4-4.9 where
Wan declares 1.1-3.3), and the DiT's noise levels would mean something else per channel. The
standardisation term pulls each channel of the normalised latent means towards mean 0 and std 1
over the batch, so the declared statistics are true of the trained VAE and nothing downstream
changes.
"""
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from data_pipeline.errors import require
from data_pipeline.records import ClipRecords
from fp_jax.models import vae_linear
from fp_jax.train.tasks import common

# Clips the linear path's principal components are fitted from, spread over the training split.
LINEAR_PATH_CLIPS = 64


def standardisation(normalised):
  """Mean over channels of `mean_c^2 + (std_c - 1)^2`, statistics over everything but the channel
  axis of `[..., C]` latents: zero when each channel has mean 0 and std 1."""
  axes = tuple(range(normalised.ndim - 1))
  channel_mean = jnp.mean(normalised, axis=axes)
  channel_std = jnp.sqrt(jnp.mean(jnp.square(normalised - channel_mean), axis=axes) + 1e-8)
  return jnp.mean(jnp.square(channel_mean) + jnp.square(channel_std - 1.0))


def random_crops(video, size, key, grid=8):
  """A `size` x `size` window of each `[B, T, H, W, C]` clip (every frame the same window), at
  offsets on the `grid`-pixel latent grid, so the strided layers see the phase whole frames give them."""
  batch, frames, height, width, channels = video.shape
  keys = jax.random.split(key, 2)
  rows = jax.random.randint(keys[0], (batch,), 0, (height - size) // grid + 1) * grid
  columns = jax.random.randint(keys[1], (batch,), 0, (width - size) // grid + 1) * grid
  cut = lambda clip, row, column: jax.lax.dynamic_slice(clip, (0, row, column, 0), (frames, size, size, channels))
  return jax.vmap(cut)(video, rows, columns)


class VAETask:
  name = "vae"

  def __init__(self, config):
    crop, self.grid = int(config.vae_loss.crop), common.vae_config(config).spatial_stride
    require(crop >= 0 and crop % self.grid == 0,
            f"vae_loss.crop must be 0 or a positive multiple of {self.grid} (the VAE's stride), got {crop}")
    self.config = config

  def make_model(self, rngs):
    return common.make_vae(self.config, rngs)

  def make_frozen(self, rngs):
    del rngs
    return {}

  def initialise_from_data(self, params):
    """With `vae.linear_path`, a fresh run starts as the principal components of its training
    clips (fp_jax/models/vae_linear.py). Every process reads the same clips, so all agree."""
    if not self.config.vae.get("linear_path"):
      return
    source = self.config.input
    records = ClipRecords(source.data_dir, source.dataset, source.split)
    picks = np.unique(np.linspace(0, len(records) - 1, min(LINEAR_PATH_CLIPS, len(records))).astype(int))
    clips = (np.asarray(common.unit_range(records[i]["frames"])) for i in picks)
    weights = vae_linear.fit_principal_patches(clips, common.vae_config(self.config), seed=self.config.seed)
    vae_linear.initialise(params, weights)
    logging.info("VAE linear path: principal components of %d training clips", len(picks))

  def loss(self, vae, frozen, batch, key):
    del frozen
    video = common.unit_range(batch["video"])
    crop_key, key = jax.random.split(key)
    crop = int(self.config.vae_loss.crop)
    if crop and crop < min(video.shape[2:4]):
      video = random_crops(video, crop, crop_key, self.grid)
    mean, logvar = vae.encode(video)
    z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape)
    recon = vae.decode(z, clip=False)
    l1 = jnp.mean(jnp.abs(recon - video))
    mse = jnp.mean(jnp.square(recon - video))
    kl = 0.5 * jnp.mean(jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar)
    standardise = standardisation(vae.normalize(mean))
    weights = self.config.vae_loss
    loss = (weights.l1_weight * l1 + weights.mse_weight * mse + weights.kl_weight * kl
            + weights.standardise_weight * standardise)
    psnr = -10.0 * jnp.log10(jnp.mean(jnp.square((jnp.clip(recon, -1.0, 1.0) - video) / 2.0)))
    return loss, {"l1": l1, "mse": mse, "kl": kl, "standardise": standardise, "psnr": psnr}

  def sample(self, vae, frozen, batch, key, steps):
    """The input clip and its reconstruction from the latent mean, side by side."""
    del frozen, key, steps
    mean, _ = vae.encode(common.unit_range(batch["video"]))
    return {"input": batch["video"], "reconstruction": common.to_uint8(vae.decode(mean))}
