"""The motion encoders on held-out identities: expression R^2, pose error, identity leakage.

  python benchmarks/motion.py [--workdir=RUN] [--steps=1000] [--data_dir=outputs/bench/data] [--invariance_weight=W]
      [--expression_twins=K] [--twin_people=one|each] [--fresh_people=N --batch=B [--fresh_people_cache=M]]
      [--blur_share=P] [--expression_pooling=mean|mean_keypoints|grid] [--pose_pooling=mean|mean_keypoints|grid] [--vae=VAE_RUN]
      [--people=1000] [--renders=outputs/bench/expression_fit]

Without --workdir it first trains the motion task as configs/tiny.py:motion does (mixed crops, one
each of 30000 people drawn anew, 128 a step, the pose encoder wider than the expression encoder)
in the demo dataset's world for --steps steps (default: the config's);
--fresh_people=0 trains on the dataset's clips instead (the demo's earlier run: --fresh_people=0
--batch=8 --expression_twins=4, windows of 17 frames). It then encodes every frame of every clip (windows
starting at frame 0) of the train and test splits (disjoint identities) with the EMA weights, from
the dataset's stored face crops (as a high-resolution driving video gives them) and again from
crops cut from the 64x64 frames (the `_frames` lines: what evaluation reads off generated videos),
and prints:
  expression_r2          R^2 of the expression controls from the latent, by a ridge read-out
                         fitted on the train split (its strength chosen by cross-validation over
                         the train split's identities, printed as expression_ridge_strength),
                         measured on the test split (expression_r2_fixed_ridge: at strength 1e-3,
                         as this benchmark read it out before);
  expression_r2_p05, _p95  a 90% interval of expression_r2 over the test clips drawn with
                         replacement (the basic bootstrap interval): a clip's 17 frames (0.7 s)
                         mostly hold one expression, so the test split's 16 clips are 16 draws
                         of the controls, from 4 people (the interval is conditional on them),
                         and differences within this interval are not measured;
  expression_r2_mean_control  the controls' own R^2 averaged with equal weights (the pooled
                         figure weights each by its variance: the jaw and brows count most);
  expression_within_clip_share  the share of the test controls' variance within clips;
  expression_r2_own_readout  the same by the linear read-out trained with the encoder (on every
                         person the run drew, not only the train split's);
  pose_error_deg         mean angle between the pose encoder's rotation and the truth, both as
                         each frame's camera sees the head (test);
  identity_probe_acc     a linear identity classifier on the expression latent, fitted on half
                         the clips of each test identity and scored on the other half;
  identity_probe_chance  1 / number of test identities;
  identity_probe_null_p95  the 95th percentile of the probe's accuracy with the people's names
                         shuffled between clips: what a latent holding no identity scores on
                         these few clips by chance (the probe is inside it: not measured);
  expression_r2_NAME     the R^2 of each control alone (test, stored crops): which controls the
                         latent carries;
  expression_r2_facing_LOW_HIGH  the R^2 on the test frames whose face turns LOW to HIGH
                         degrees away from the camera (head_pose.facing_degrees), with the share of the
                         frames that do as facing_share_LOW_HIGH: a face seen side-on or from
                         behind hides much of its expression (the sweeping and studio cameras
                         see heads up to ~105 degrees off), which no encoder can read (each
                         bin's error against the whole test set's variance, so bins compare);
With --people=N (default 1000; 0: none) it also reads N held-out people of the validation split's
fresh-people stream, one frame each at crop resolution, each a new person wearing a new expression
(rendered once and kept under --renders, as benchmarks/expression_fit.py keeps them):
  expression_r2_people   R^2 by the same ridge read-out (fitted on the train split's clips): a
                         figure from N independent draws, not 16, with its 90% interval over
                         the people drawn with replacement (_p05, _p95) and its equal-weights
                         mean over the controls (_mean_control);
  expression_r2_people_own_readout  the same by the run's own read-out;
  expression_r2_people_NAME  each control's, by the ridge read-out.
With --vae (a VAE run on the same data), each test clip also goes through that VAE and back, as
evaluation's `vae_ceiling` row does, and the pose encoder reads crops cut from both:
  pose_shift_deg_vae     mean angle between its readings of the reconstructed and the real frames
                         (evaluation's vae_ceiling_pose_error_deg, over the whole test split);
  pose_motion_deg        the same between the first real frame and each later one: how far the
                         heads turn (evaluation's baseline_pose_error_deg).
Goals (issue): R^2 >= 0.9, pose error <= 3 degrees, probe within 1.5x chance.
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
from expression_fit import fail, held_out_people  # pylint: disable=g-import-not-at-top  # benchmarks/expression_fit.py
# benchmarks/expression_scores.py
from expression_scores import (bootstrap_interval, by_facing, identity_probe,  # pylint: disable=g-import-not-at-top
                               identity_probe_null, mean_control_r_squared, r_squared, ridge)
from configs import tiny  # pylint: disable=g-import-not-at-top
from data_pipeline import controls, examples, expression_twins, head_pose  # pylint: disable=g-import-not-at-top
from data_pipeline.records import ClipRecords  # pylint: disable=g-import-not-at-top
from data_pipeline.template_head import build_template  # pylint: disable=g-import-not-at-top
from fp_jax.eval import metrics  # pylint: disable=g-import-not-at-top
from fp_jax.sample import inputs  # pylint: disable=g-import-not-at-top
from fp_jax.train import checkpoints  # pylint: disable=g-import-not-at-top
from fp_jax.train.tasks import common, motion_task  # pylint: disable=g-import-not-at-top


def encode_split(models, config, split):
  """Latents, predicted poses, true expression, true poses and identity/clip of every frame."""
  records = ClipRecords(config.input.data_dir, config.input.dataset, split)
  maker = examples.MakeExample(records, config.input)
  encode = nnx.jit(lambda m, crops: (m.expression(crops), m.pose(common.face_view(config, crops))))
  rows = {name: [] for name in ("latent", "pose", "expression", "true_pose", "identity", "clip")}
  for index in range(len(records)):
    example = maker.example(index, 0, np.random.default_rng(index))
    latent, pose = encode(models, jnp.asarray(example["driving"]))
    rows["latent"].append(np.asarray(latent))
    rows["pose"].append(np.asarray(pose))
    rows["expression"].append(example["expression"])
    rows["true_pose"].append(head_pose.to_camera_frame(example["head_pose"], example["extrinsics"]))
    count = len(example["expression"])
    rows["identity"].append(np.full(count, int(example["identity"])))
    rows["clip"].append(np.full(count, index % records.clips_per_identity))
  return {name: np.concatenate(values) for name, values in rows.items()}


RIDGE_STRENGTHS = (1e-3, 1e-2, 1e-1, 1.0, 10.0)


def cross_validated_ridge(features, targets, groups, folds=4):
  """`ridge` at the strength that predicts held-out groups (identities) best, chosen by `folds`-fold
  cross-validation within the fitting data alone, then fitted on all of it. A 512-d latent read out
  from a few dozen people's clips overfits at a fixed small strength: the read-out, not the
  latent, would decide the figure. Returns the read-out and the strength chosen."""
  fold = np.unique(groups, return_inverse=True)[1] % folds
  def error(strength):
    return sum(np.sum(np.square(ridge(features[fold != k], targets[fold != k], strength)(features[fold == k])
                                - targets[fold == k])) for k in range(folds))
  best = min(RIDGE_STRENGTHS, key=error)
  return ridge(features, targets, best), best


def within_clip_share(truth, clips):
  """The share of the controls' variance (pooled) that lies within clips, not between them."""
  within = 0.0
  for key in np.unique(clips):
    clip = truth[clips == key]
    within += np.sum(np.square(clip - clip.mean(0)))
  return within / np.sum(np.square(truth - truth.mean(0)))


def score_people(models, readout, config, args):
  """Expression R^2 on `args.people` held-out fresh people (expression_fit.held_out_people)."""
  crop = tiny.get_config("motion").input.face_crop  # the renders' crops
  saved = config.input.face_crop
  if (saved.size, saved.margin, tuple(saved.parts)) != (crop.size, crop.margin, tuple(crop.parts)):
    print(f"no expression_r2_people: the run's crops ({saved.size}, margin {saved.margin}, parts "
          f"{tuple(saved.parts)}) are not the renders' ({crop.size}, {crop.margin}, {tuple(crop.parts)})",
          file=sys.stderr)
    return
  people = held_out_people(args.renders, args.data_dir, args.people, tuple(crop.parts))
  crops = people["crops"].reshape(-1, *people["crops"].shape[2:])
  truth = people["controls"].reshape(-1, people["controls"].shape[-1])
  encode = nnx.jit(lambda m, batch: m.expression(batch))
  latent = np.concatenate([np.asarray(encode(models, jnp.asarray(crops[i:i + 250])))
                           for i in range(0, len(crops), 250)])
  predicted = readout(latent)
  print(f"expression_r2_people: {r_squared(predicted, truth):.3f}")
  low, high = bootstrap_interval(predicted, truth, np.arange(len(truth)))  # each person one draw
  print(f"expression_r2_people_p05: {low:.3f}")
  print(f"expression_r2_people_p95: {high:.3f}")
  print(f"expression_r2_people_mean_control: {mean_control_r_squared(predicted, truth):.3f}")
  print(f"expression_r2_people_own_readout: {r_squared(np.asarray(models.readout(jnp.asarray(latent))), truth):.3f}")
  for name, value in zip(controls.control_names(build_template()), r_squared(predicted, truth, axis=0)):
    print(f"expression_r2_people_{name}: {value:.3f}")
  print(f"expression_r2_people_count: {len(truth)}")


def vae_round_trip(vae_workdir):
  """uint8 frames `[1 + 4k, H, W, 3]` -> the same through the VAE run's EMA weights and back."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  params, _, saved = checkpoints.read_run(vae_workdir, None, "ema")
  vae = checkpoints.load_into(common.make_vae(ml_collections.ConfigDict(saved), nnx.Rngs(0)), params)

  @nnx.jit
  def round_trip(vae, frames):
    mean, _ = vae.encode(common.unit_range(frames)[None])
    return common.to_uint8(vae.decode(mean))[0]

  return lambda frames: np.asarray(round_trip(vae, jnp.asarray(frames)))


def pose_readings_through_vae(models, config, round_trip, split="test"):
  """The pose encoder's readings of every clip's real frames, of the same through the VAE, and of
  the first real frame repeated, all from crops cut from the frames as evaluation cuts them."""
  records = ClipRecords(config.input.data_dir, config.input.dataset, split)
  size, margin = int(config.input.face_crop.size), float(config.input.face_crop.margin)
  read = nnx.jit(lambda m, crops: m.pose(crops))
  real, through_vae, first = [], [], []
  for index in range(len(records)):
    clip = records[index]
    frames = np.asarray(clip["frames"])
    frames = frames[:1 + 4 * ((len(frames) - 1) // 4)]
    tracking = inputs._clip_tracking(clip, slice(0, len(frames)))  # pylint: disable=protected-access
    poses = [np.asarray(read(models, jnp.asarray(inputs.face_crops(video, tracking, size, margin))))
             for video in (frames, round_trip(frames))]
    real.append(poses[0][1:])
    through_vae.append(poses[1][1:])
    first.append(np.repeat(poses[0][:1], len(frames) - 1, axis=0))
  return np.concatenate(real), np.concatenate(through_vae), np.concatenate(first)


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--data_dir", default="outputs/bench/data")
  parser.add_argument("--workdir", default="")
  parser.add_argument("--steps", type=int, default=0, help="default: the config's total_steps")
  parser.add_argument("--invariance_weight", type=float, default=None, help="default: the config's")
  parser.add_argument("--expression_twins", type=int, default=None, help="default: the config's")
  parser.add_argument("--twin_people", default=None, choices=expression_twins.TWIN_PEOPLE, help="default: the config's")
  parser.add_argument("--fresh_people", type=int, default=None,
                      help="train on this many new people an epoch (0: the clips; default: the config's)")
  parser.add_argument("--fresh_people_cache", type=int, default=None,
                      help="fresh people each input worker keeps rendered (0: none; default: the config's)")
  parser.add_argument("--batch", type=int, default=0, help="global batch (default: the config's)")
  parser.add_argument("--blur_share", type=float, default=None, help="motion_loss.blur_share (default: the config's)")
  parser.add_argument("--expression_pooling", default=None, help="motion.expression_pooling (default: the config's)")
  parser.add_argument("--pose_pooling", default=None, help="motion.pose_pooling (default: the config's)")
  parser.add_argument("--crop_source", default=None, choices=examples.CROP_SOURCES,
                      help="input.face_crop.source for training (default: the config's)")
  parser.add_argument("--crop_margin", type=float, default=None,
                      help="input.face_crop.margin (default: the config's); one other than the stored "
                           "faces' needs --crop_source=frames and is read from the frames only")
  parser.add_argument("--vae", default="", help="a VAE run: also read the test clips through it")
  parser.add_argument("--people", type=int, default=1000,
                      help="held-out fresh people to score the expression encoder on too (0: none)")
  parser.add_argument("--renders", default="outputs/bench/expression_fit",
                      help="where those people's renders are kept (shared with benchmarks/expression_fit.py)")
  args = parser.parse_args()
  if args.people < 0:
    fail("--people must be >= 0")
  ensure_dataset("demo", args.data_dir)
  config = tiny.get_config("motion")
  config.input.data_dir = args.data_dir
  if args.invariance_weight is not None:
    config.motion.invariance_weight = args.invariance_weight
  if args.expression_twins is not None:
    config.input.expression_twins = args.expression_twins
  if args.twin_people is not None:
    config.input.twin_people = args.twin_people
  for field in ("fresh_people", "fresh_people_cache"):
    if getattr(args, field) is not None:
      config.input[field] = getattr(args, field)
  if args.blur_share is not None:
    config.motion_loss.blur_share = args.blur_share
  for field in ("expression_pooling", "pose_pooling"):
    if getattr(args, field) is not None:
      config.motion[field] = getattr(args, field)
  if args.batch:
    config.input.global_batch_size = args.batch
  if args.crop_source is not None:
    config.input.face_crop.source = args.crop_source
  if args.crop_margin is not None:
    config.input.face_crop.margin = args.crop_margin
  params, step, saved = trained_run(config, args.workdir, args.steps or config.total_steps, "motion", args.data_dir)
  models = motion_task.MotionModels(saved, saved.motion.num_controls, nnx.Rngs(0))
  checkpoints.load_into(models, params)
  print(f"trained_steps: {step}")
  # Crops as a high-resolution driving video gives them (the dataset's stored faces), then cut from
  # the 64x64 frames (what evaluation reads from generated videos): `_frames` lines.
  records = ClipRecords(args.data_dir, "demo", "train")
  stored = records.face_size and abs(records.face_margin - saved.input.face_crop.margin) < 1e-6
  sources = ("stored", "frames") if stored else ("frames",)
  for source in sources:
    saved.input.face_crop.source = source
    suffix = "" if source == sources[0] else "_frames"
    train, test = encode_split(models, saved, "train"), encode_split(models, saved, "test")
    readout, strength = cross_validated_ridge(train["latent"], train["expression"], train["identity"])
    accuracy, chance = identity_probe(test["latent"], test["identity"], test["clip"])
    predicted = readout(test["latent"])
    print(f"expression_r2{suffix}: {r_squared(predicted, test['expression']):.3f}")
    print(f"expression_ridge_strength{suffix}: {strength:g}")
    fixed = ridge(train["latent"], train["expression"])  # the figure before the strength was chosen
    print(f"expression_r2_fixed_ridge{suffix}: {r_squared(fixed(test['latent']), test['expression']):.3f}")
    own = np.asarray(models.readout(jnp.asarray(test["latent"])))
    print(f"expression_r2_own_readout{suffix}: {r_squared(own, test['expression']):.3f}")
    print(f"pose_error_deg{suffix}: {metrics.pose_error_deg(test['pose'], test['true_pose']):.2f}")
    # The same on the identities it trained on: the gap is what does not generalise.
    print(f"train_expression_r2{suffix}: {r_squared(readout(train['latent']), train['expression']):.3f}")
    print(f"train_pose_error_deg{suffix}: {metrics.pose_error_deg(train['pose'], train['true_pose']):.2f}")
    print(f"identity_probe_acc{suffix}: {accuracy:.3f}")
    print(f"identity_probe_null_p95{suffix}: {identity_probe_null(test['latent'], test['identity'], test['clip']):.3f}")
    if not suffix:
      clips = test["identity"] * 1000 + test["clip"]
      low, high = bootstrap_interval(predicted, test["expression"], clips)
      print(f"expression_r2_p05: {low:.3f}")
      print(f"expression_r2_p95: {high:.3f}")
      print(f"expression_r2_mean_control: {mean_control_r_squared(predicted, test['expression']):.3f}")
      print(f"expression_within_clip_share: {within_clip_share(test['expression'], clips):.3f}")
      stored_readout = readout
      by_control = r_squared(predicted, test["expression"], axis=0)
      for name, value in zip(controls.control_names(build_template()), by_control):
        print(f"expression_r2_{name}: {value:.3f}")
      for low, high, share, r2 in by_facing(predicted, test["expression"], test["true_pose"]):
        print(f"facing_share_{low}_{high}: {share:.3f}")
        if r2 is not None:
          print(f"expression_r2_facing_{low}_{high}: {r2:.3f}")
  print(f"identity_probe_chance: {chance:.3f}")
  if args.people and stored:
    score_people(models, stored_readout, saved, args)
  if args.vae:
    saved.input.face_crop.source = "frames"
    real, through_vae, first = pose_readings_through_vae(models, saved, vae_round_trip(args.vae))
    print(f"pose_shift_deg_vae: {metrics.pose_error_deg(through_vae, real):.2f}")
    print(f"pose_motion_deg: {metrics.pose_error_deg(first, real):.2f}")

if __name__ == "__main__":
  main()
