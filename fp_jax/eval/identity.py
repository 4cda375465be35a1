"""Scores of an identity embedding: how alike two crops' people are, and how well it tells people apart.

The embedding (fp_jax/train/tasks/identity_task.py) is compared by cosine, as face-recognition
embeddings are (evaluation's identity similarity is the cosine of a generated frame's embedding
with the portrait's, as portrait-animation papers report ArcFace's).
"""
import numpy as np

from data_pipeline.errors import require


def cosines(a, b):
  """`[N, D]`, `[M, D]` -> `[N, M]` cosines between every row of `a` and every row of `b`."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  a = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
  b = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
  return a @ b.T


def similarity(embeddings, reference):
  """Mean cosine of each of `embeddings [N, D]` with one `reference [D]`."""
  return float(np.mean(cosines(embeddings, np.asarray(reference)[None])))


def roc_auc(genuine, impostor):
  """The chance that a genuine pair scores above an impostor pair (ties count half): the area
  under the ROC curve, from the scores' ranks."""
  genuine, impostor = np.asarray(genuine, np.float64), np.asarray(impostor, np.float64)
  require(len(genuine) and len(impostor), "verification needs genuine and impostor pairs")
  scores = np.concatenate([genuine, impostor])
  order = np.argsort(scores, kind="stable")
  ranks = np.empty(len(scores))
  ranks[order] = np.arange(1, len(scores) + 1)
  for value in np.unique(scores):  # tied scores share their mean rank
    tied = scores == value
    ranks[tied] = ranks[tied].mean()
  return float((ranks[:len(genuine)].sum() - len(genuine) * (len(genuine) + 1) / 2) / (len(genuine) * len(impostor)))


def equal_error_rate(genuine, impostor):
  """The error rate at the threshold where genuine pairs rejected and impostor pairs accepted are
  equally many (the mean of the two where they cross between thresholds)."""
  genuine, impostor = np.asarray(genuine, np.float64), np.asarray(impostor, np.float64)
  thresholds = np.unique(np.concatenate([genuine, impostor]))
  rejected = np.array([np.mean(genuine < t) for t in thresholds])
  accepted = np.array([np.mean(impostor >= t) for t in thresholds])
  best = int(np.argmin(np.abs(rejected - accepted)))
  return float((rejected[best] + accepted[best]) / 2)


def verification(embeddings, identity, clip):
  """Pairs of crops from different clips: genuine where one person's, impostor where two people's.
  (Crops of one clip share its light and backdrop, so they are left out.) Returns the ROC AUC, the
  equal error rate, both kinds' mean cosines, and the share of crops whose nearest crop of another
  clip shows their person (`identification`)."""
  identity, clip = np.asarray(identity), np.asarray(clip)
  require(len(np.unique(identity)) >= 2, "verification needs two people or more")
  scores = cosines(embeddings, embeddings)
  other_clip = clip[:, None] != clip[None, :]
  same_person = identity[:, None] == identity[None, :]
  upper = np.triu(np.ones_like(other_clip), k=1)
  genuine = scores[other_clip & same_person & upper]
  impostor = scores[~same_person & upper]
  nearest = np.argmax(np.where(other_clip, scores, -np.inf), axis=1)
  return dict(auc=roc_auc(genuine, impostor), eer=equal_error_rate(genuine, impostor),
              genuine_cosine=float(genuine.mean()), impostor_cosine=float(impostor.mean()),
              identification=float(np.mean(identity[nearest] == identity)))
