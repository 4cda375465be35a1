"""Motion task: expression and pose encoders, supervised by the synthetic world's ground truth.

The expression latent is read out linearly into the expression controls (so it must carry them);
the pose encoder regresses the `(6D rotation, t, s)` vector of each frame.
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
    return expression_error + pose_error, {"expression_mse": expression_error, "pose_mse": pose_error}
