"""The identity embedding on held-out identities: does it tell people apart across clips?

  python benchmarks/identity.py [--workdir=RUN] [--steps=300] [--data_dir=outputs/bench/data]
      [--splits=validation,test] [--every=4] [--people=N] [--temperature=T] [--blur_share=P]

Without --workdir it first trains the identity task as configs/tiny.py:identity does (fresh people
seen twice each, 64 a step) for --steps steps. It then cuts face crops from every --every-th
frame of every clip of the held-out splits (as evaluation cuts them from generated frames),
embeds them, and scores pairs of crops of different clips (each clip has its own light, backdrop,
camera and motion; fp_jax/eval/identity.py):
  identity_auc               ROC AUC of same-person against other-person pairs by cosine;
  identity_eer               the equal error rate;
  identity_identification    share of crops whose nearest crop of another clip is their person;
  identity_genuine_cosine, identity_impostor_cosine   the two kinds' mean cosines;
  identity_same_clip_cosine  each clip's frames against its first frame (what fp-eval's
                             identity_similarity gives the real clip: its ceiling);
  train_identity_auc         the same AUC on the train split's people (the gap: memorised people).
Peers in the same run, scored alike: `pixels_*`, the crops' standardised pixels as the
embedding, and `untrained_*`, the same encoder at its initialisation.
"""
import argparse
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from fp_jax.host_memory import keep_freed_memory_on_cpu  # pylint: disable=g-import-not-at-top
keep_freed_memory_on_cpu()  # as the fp-* commands do, before any thread takes a malloc arena

import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
from flax import nnx  # pylint: disable=g-import-not-at-top

from bench_data import ensure_dataset  # pylint: disable=g-import-not-at-top  # benchmarks/bench_data.py
from bench_runs import trained_run  # pylint: disable=g-import-not-at-top  # benchmarks/bench_runs.py
from configs import tiny  # pylint: disable=g-import-not-at-top
from data_pipeline.records import ClipRecords  # pylint: disable=g-import-not-at-top
from fp_jax.eval import identity  # pylint: disable=g-import-not-at-top
from fp_jax.sample import inputs  # pylint: disable=g-import-not-at-top
from fp_jax.train import checkpoints  # pylint: disable=g-import-not-at-top
from fp_jax.train.tasks import common  # pylint: disable=g-import-not-at-top


def split_crops(config, split, every):
  """Face crops `[N, S, S, 3]` cut from every `every`-th frame of every clip, with each crop's
  identity, clip (`split/index`, unique across splits) and whether it is its clip's first frame."""
  records = ClipRecords(config.input.data_dir, config.input.dataset, split)
  size, margin = int(config.input.face_crop.size), float(config.input.face_crop.margin)
  crops, people, clips, first = [], [], [], []
  for index in range(len(records)):
    clip = records[index]
    frames = slice(0, None, every)
    cut = inputs.face_crops(np.asarray(clip["frames"][frames]), inputs._clip_tracking(clip, frames), size, margin)  # pylint: disable=protected-access
    crops.append(cut)
    people.append(np.full(len(cut), int(clip["identity"])))
    clips.append(np.full(len(cut), f"{split}/{index}"))
    first.append(np.arange(len(cut)) == 0)
  return np.concatenate(crops), np.concatenate(people), np.concatenate(clips), np.concatenate(first)


def embed(encoder, crops):
  run = nnx.jit(lambda model, x: model(x))
  return np.concatenate([np.asarray(run(encoder, jnp.asarray(crops[i:i + 64]))) for i in range(0, len(crops), 64)])


def pixel_embedding(crops):
  flat = crops.reshape(len(crops), -1).astype(np.float64)
  return (flat - flat.mean(axis=1, keepdims=True)) / (flat.std(axis=1, keepdims=True) + 1e-6)


def same_clip_cosine(embeddings, clips, first):
  """Each clip's later crops against its first crop, averaged over clips."""
  return float(np.mean([identity.similarity(embeddings[(clips == c) & ~first], embeddings[(clips == c) & first][0])
                        for c in np.unique(clips)]))


def report(prefix, embeddings, people, clips, first):
  scores = identity.verification(embeddings, people, clips)
  for key in ("auc", "eer", "identification", "genuine_cosine", "impostor_cosine"):
    print(f"{prefix}_{key}: {scores[key]:.3f}")
  print(f"{prefix}_same_clip_cosine: {same_clip_cosine(embeddings, clips, first):.3f}")


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--data_dir", default="outputs/bench/data")
  parser.add_argument("--workdir", default="")
  parser.add_argument("--steps", type=int, default=300)
  parser.add_argument("--splits", default="validation,test", help="held-out splits, pooled")
  parser.add_argument("--every", type=int, default=4, help="crop every N-th frame of each clip")
  parser.add_argument("--people", type=int, default=None, help="input.fresh_people (default: the config's)")
  parser.add_argument("--temperature", type=float, default=None, help="identity_loss.temperature (default: the config's)")
  parser.add_argument("--blur_share", type=float, default=None, help="identity_loss.blur_share (default: the config's)")
  args = parser.parse_args()
  ensure_dataset("demo", args.data_dir)
  config = tiny.get_config("identity")
  config.input.data_dir = args.data_dir
  if args.people is not None:
    config.input.fresh_people = config.input.fresh_people_cache = args.people
  for field in ("temperature", "blur_share"):
    if getattr(args, field) is not None:
      config.identity_loss[field] = getattr(args, field)
  params, step, saved = trained_run(config, args.workdir, args.steps, "identity", args.data_dir)
  encoder = common.make_identity_encoder(saved, nnx.Rngs(0))
  untrained = common.make_identity_encoder(saved, nnx.Rngs(0))
  checkpoints.load_into(encoder, params)
  print(f"trained_steps: {step}")
  held_out = [split_crops(saved, split, args.every) for split in args.splits.split(",")]
  crops, people, clips, first = (np.concatenate(parts) for parts in zip(*held_out))
  print(f"people: {len(np.unique(people))}")
  print(f"clips: {len(np.unique(clips))}")
  print(f"crops: {len(crops)}")
  report("identity", embed(encoder, crops), people, clips, first)
  report("pixels", pixel_embedding(crops), people, clips, first)
  report("untrained", embed(untrained, crops), people, clips, first)
  train_crops, train_people, train_clips, _ = split_crops(saved, "train", args.every)
  train_scores = identity.verification(embed(encoder, train_crops), train_people, train_clips)
  print(f"train_identity_auc: {train_scores['auc']:.3f}")


if __name__ == "__main__":
  main()
