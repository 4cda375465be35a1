"""VAE task: reconstruct the video (L1) under a small KL pull towards the prior."""
import jax
import jax.numpy as jnp

from fp_jax.train.tasks import common


class VAETask:
  name = "vae"

  def __init__(self, config):
    self.config = config

  def make_model(self, rngs):
    return common.make_vae(self.config, rngs)

  def make_frozen(self, rngs):
    del rngs
    return {}

  def loss(self, vae, frozen, batch, key):
    del frozen
    video = common.unit_range(batch["video"])
    mean, logvar = vae.encode(video)
    z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape)
    recon = vae.decode(z, clip=False)
    l1 = jnp.mean(jnp.abs(recon - video))
    kl = 0.5 * jnp.mean(jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar)
    loss = l1 + self.config.vae_loss.kl_weight * kl
    psnr = -10.0 * jnp.log10(jnp.mean(jnp.square((jnp.clip(recon, -1.0, 1.0) - video) / 2.0)))
    return loss, {"l1": l1, "kl": kl, "psnr": psnr}

  def sample(self, vae, frozen, batch, key, steps):
    """The input clip and its reconstruction from the latent mean, side by side."""
    del frozen, key, steps
    mean, _ = vae.encode(common.unit_range(batch["video"]))
    return {"input": batch["video"], "reconstruction": common.to_uint8(vae.decode(mean))}
