"""Motion task: expression and pose encoders, supervised by the synthetic world's ground truth.

The expression latent is read out linearly into the expression controls (so it must carry them);
the pose encoder regresses the `(6D rotation, t, s)` vector of each frame. With expression twins
in the batch (`input.expression_twins`), an invariance term asks a crop and its twin (the same
expressions, another person and view) for the same latent.
"""
import jax.numpy as jnp
from flax import nnx

from fp_jax.train.tasks import common


class MotionModels(nnx.Module):

  def __init__(self, config, num_controls, rngs):
    self.expression = common.make_expression_encoder(config, rngs)
    self.pose = common.make_pose_encoder(config, rngs)
    self.readout = nnx.Linear(config.motion.expression_dim, num_controls, rngs=rngs)


class MotionTask:
  name = "motion"

  def __init__(self, config):
    self.config = config

  def make_model(self, rngs):
    return MotionModels(self.config, self.config.motion.num_controls, rngs)

  def make_frozen(self, rngs):
    del rngs
    return {}

  def loss(self, models, frozen, batch, key):
    del frozen, key
    latent = models.expression(batch["driving"])
    expression_error = jnp.mean(jnp.square(models.readout(latent) - batch["expression"]))
    pose_error = jnp.mean(jnp.square(models.pose(batch["driving"]) - batch["head_pose"]))
    loss = expression_error + pose_error
    metrics = {"expression_mse": expression_error, "pose_mse": pose_error}
    if "driving_twin" in batch:
      # The same expressions on another person from another view must give the same latent;
      # measured against the latents' spread so that shrinking them all does not pay.
      twin = models.expression(batch["driving_twin"])
      spread = jnp.mean(jnp.var(latent.reshape(-1, latent.shape[-1]), axis=0)) + 1e-6
      invariance = jnp.mean(jnp.square(latent - twin)) / spread
      loss = loss + self.config.motion.invariance_weight * invariance
      metrics["invariance"] = invariance
    return loss, metrics
