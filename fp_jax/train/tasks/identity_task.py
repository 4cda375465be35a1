"""Identity task: an embedding of who is in a face crop, for evaluation's identity preservation.

Each example is one person drawn anew, seen `input.identity_views` times, each view with its own
expression, head motion, camera, lighting and backdrop (data_pipeline/fresh_people.py). The
embedding is trained contrastively (supervised contrastive loss, SimCLR's NT-Xent when K = 2):
every crop's unit-length embedding must lie nearer, in cosine, to the other views of its person
than to any crop of the batch's other people, so what it keeps is what the views share, the
person, and what it drops is what they do not, expression, pose, view and light. The batch's other
people are the negatives: with `optim.accumulation > 1` each micro-batch has only its own.

With `identity_loss.blur_share` > 0 that share of the crops is blurred first (as the motion task
does): generated frames are softer than rendered ones, and a blurred face is still the same person.
"""
import jax
import jax.numpy as jnp

from fp_jax.train.tasks import common
from fp_jax.train.tasks.motion_task import blur_crops


def normalised(embeddings):
  """Unit-length embeddings (the cosine between two is their dot product)."""
  return embeddings / jnp.sqrt(jnp.sum(jnp.square(embeddings), axis=-1, keepdims=True) + 1e-12)


def contrastive_loss(embeddings, temperature):
  """Supervised contrastive loss of `[B, K, D]` embeddings, the K views of each of B people.

  Each of the B*K crops scores every other crop by cosine / temperature; its loss is the mean,
  over its K - 1 other views, of minus the log of that view's softmax share. Returns the loss and
  metrics: the mean cosine of positive pairs and of negative pairs, and the share of crops whose
  nearest other crop is of their person (`retrieval`)."""
  people, views, _ = embeddings.shape
  flat = normalised(embeddings.reshape(people * views, -1).astype(jnp.float32))
  cosine = flat @ flat.T
  person = jnp.repeat(jnp.arange(people), views)
  itself = jnp.eye(people * views, dtype=bool)
  positive = (person[:, None] == person[None, :]) & ~itself
  negative = person[:, None] != person[None, :]
  log_share = jax.nn.log_softmax(jnp.where(itself, -jnp.inf, cosine / temperature), axis=-1)
  loss = -jnp.mean(jnp.sum(jnp.where(positive, log_share, 0.0), axis=-1) / (views - 1))
  nearest = jnp.argmax(jnp.where(itself, -jnp.inf, cosine), axis=-1)
  metrics = {"positive_cosine": jnp.sum(jnp.where(positive, cosine, 0.0)) / jnp.sum(positive),
             "negative_cosine": jnp.sum(jnp.where(negative, cosine, 0.0)) / jnp.maximum(jnp.sum(negative), 1),
             "retrieval": jnp.mean(person[nearest] == person)}
  return loss, metrics


class IdentityTask:
  name = "identity"
  augments_with_key = True  # its loss reads the key only to blur: validated without

  def __init__(self, config):
    self.config = config

  def make_model(self, rngs):
    return common.make_identity_encoder(self.config, rngs)

  def make_frozen(self, rngs):
    del rngs
    return {}

  def loss(self, model, frozen, batch, key):
    """Without a `key`, the crops as they are (none blurred)."""
    del frozen
    settings = self.config.identity_loss
    share = settings.blur_share if key is not None else 0.0
    crops = blur_crops(batch["views"], key, share, tuple(settings.blur_sigma))
    return contrastive_loss(model(crops), settings.temperature)
