"""DiT task: flow matching on VAE latents with every portrait control, condition dropout honoured.

The frozen VAE and expression encoder turn a batch into latents and codes; the loss is the
velocity error on every latent frame but the first (the reference's place).
"""
import jax
import jax.numpy as jnp

from data_pipeline.errors import require
from fp_jax.diffusion import flow, samplers
from fp_jax.models.dit import DiT
from fp_jax.models.dit_config import DiTConfig
from fp_jax.train.tasks import common


class DiTTask:
  name = "dit"

  def __init__(self, config):
    self.config = config
    self.model_config = DiTConfig.from_config(config.model)
    require(config.input.window.num_frames >= 5,
            "the dit task needs windows of at least 5 frames (2 latent frames): the first is the reference's")
    self.pixel_weighting = float(config.diffusion.get("pixel_weighting", 0.0))
    require(0.0 <= self.pixel_weighting <= 1.0,
            f"diffusion.pixel_weighting must be in [0, 1], got {self.pixel_weighting}")
    require(not self.pixel_weighting or config.vae.get("linear_path"),
            "diffusion.pixel_weighting > 0 needs vae.linear_path (the weights come from its decoder)")
    for field in ("in_channels", "out_channels"):
      channels = getattr(self.model_config, field)
      require(channels == config.vae.z_dim, f"model.{field} ({channels}) must equal vae.z_dim ({config.vae.z_dim}): "
              "the DiT reads and writes the VAE's latents")
    self.max_level = float(config.diffusion.get("max_level", 1.0))
    require(0.0 < self.max_level <= 1.0, f"diffusion.max_level must be in (0, 1], got {self.max_level}")
    flow.check_shift(config.diffusion.shift)
    # Validation samples from sample.start_level: above max_level the first steps are noise levels
    # the model never trains on.
    require(float(config.sample.get("start_level", 1.0)) <= self.max_level,
            f"sample.start_level ({config.sample.get('start_level', 1.0)}) is above the noise levels the DiT "
            f"trains on (diffusion.max_level {self.max_level})")
    self.warped_reference = bool(config.input.get("warped_reference", False))
    require(self.warped_reference == self.model_config.warped_reference,
            f"model.warped_reference={self.model_config.warped_reference} needs input.warped_reference "
            f"to match (the input makes the warped portrait the model reads), got {self.warped_reference}")

  def make_model(self, rngs):
    return DiT(self.model_config, rngs=rngs)

  def make_frozen(self, rngs):
    return {"vae": common.make_vae(self.config, rngs),
            "expression": common.make_expression_encoder(self.config, rngs)}

  def conditions(self, frozen, batch):
    """The DiT's inputs: encoded here by the frozen VAE and expression encoder, or read from a
    cached-latents batch (data_pipeline/latent_cache.py), which holds the same values."""
    keep = {name: 1.0 - batch[f"drop_{name}"].astype(jnp.float32)
            for name in ("reference", "expression", "pose", "camera")}
    common_inputs = dict(rays=batch["rays"], head_pose=batch["head_pose"], keep=keep)
    if "latents" in batch:
      cached = dict(latents=batch["latents"], reference=batch["reference_latent"],
                    normals=batch["normals_latents"], expression=batch["expression_codes"])
      if self.warped_reference:
        cached["warped"] = batch["warped_latents"]
      return dict(common_inputs, **cached)
    encoded = jax.lax.stop_gradient(self.encode(frozen, batch))
    return dict(common_inputs, **encoded)

  def encode(self, frozen, batch):
    """What the frozen models make of a batch of clips (what a latent cache stores)."""
    vae = frozen["vae"]
    encode = lambda video: vae.normalize(vae.encode(common.unit_range(video))[0])
    encoded = dict(latents=encode(batch["video"]),
                   reference=encode(batch["reference"][:, None])[:, 0],
                   normals=encode(batch["normals"]),
                   expression=frozen["expression"](batch["driving"]))
    if "warped" in batch:
      encoded["warped"] = encode(batch["warped"])
    return encoded

  def noise_levels(self, key, batch):
    """`[batch]` training noise levels: the distribution's, shifted, then scaled into
    `(0, diffusion.max_level]`, the range a sampler starting at `sample.start_level` walks
    (fp_jax/sample/pipeline.py compresses its schedule the same way)."""
    diffusion = self.config.diffusion
    return self.max_level * flow.sample_sigma(key, batch, diffusion.timestep_distribution, diffusion.shift)

  def loss(self, model, frozen, batch, key):
    conditions = self.conditions(frozen, batch)
    x0 = conditions.pop("latents")
    sigma_key, noise_key = jax.random.split(key)
    sigma = self.noise_levels(sigma_key, x0.shape[0])
    noisy, velocity = flow.noisy_and_velocity(x0, jax.random.normal(noise_key, x0.shape), sigma)
    predicted = model(noisy, flow.timesteps(sigma), None, **conditions)
    error = jnp.square(predicted - velocity)[:, 1:]
    if self.pixel_weighting:
      vae, share = frozen["vae"], self.pixel_weighting
      error = error * ((1.0 - share) + share * vae.linear_path.pixel_weights(vae.config.latents_std))
    loss = jnp.mean(error)
    return loss, {"sigma_mean": jnp.mean(sigma)}

  def sample(self, model, frozen, batch, key, steps):
    """The clip generated from noise under the batch's conditions (Euler, `steps` steps), beside
    the real one. Its first frame is the reference image, as at inference. Below a
    `sample.start_level` of 1 it starts, as fp-sample does, from what the model measures its frames
    from (`DiT.residual_base`) noised to that level."""
    conditions = self.conditions(frozen, batch)
    target = conditions.pop("latents")
    batch_size = target.shape[0]

    def velocity(x, sigma):
      return model(x, flow.timesteps(jnp.full((batch_size,), sigma)), None, **conditions)

    start = float(self.config.sample.get("start_level", 1.0))
    noise = jax.random.normal(key, target.shape)
    if start < 1.0:
      base = model.residual_base(conditions["reference"], conditions.get("warped"), conditions["keep"])
      noise = flow.noised_start(jnp.broadcast_to(base if base.ndim == target.ndim else base[:, None], target.shape),
                                noise, start)
    sigmas = flow.sampling_sigmas(steps, self.config.diffusion.shift, start)
    latents = samplers.solve(velocity, noise, sigmas, "euler")
    latents = latents.at[:, 0].set(conditions["reference"])
    vae = frozen["vae"]
    decode = lambda latents: common.to_uint8(vae.decode(vae.denormalize(latents)))
    real = batch["video"] if "video" in batch else decode(target)  # a cached batch has no pixels
    return {"real": real, "generated": decode(latents)}
