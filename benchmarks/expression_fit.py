"""How fast the expression encoder learns, apart from the trainer: a fixed set of rendered people.

  python benchmarks/expression_fit.py [--people=20000] [--val_people=2000] [--steps=1000]
      [--evals=250,500,1000] [--widths=16,32,64,64] [--pooling=mean] [--learning_rate=3e-3]
      [--stem_width=16] [--standardise=true|false] [--stored_share=0.75]
      [--pair_weight=0] [--neutral [--neutral_weight=0] [--neutral_stage=2]]
      [--jitter=shift=3,brightness=0.1,...] [--data_dir=outputs/bench/data] [--renders=outputs/bench/expression_fit]

The motion task learns on people rendered in its input workers, its steps shared with the pose
encoder; this renders `--people` of the tiny motion config's people once (the training stream's
first ones: mixed crops, as `fp_jax` trains on them) and `--val_people` of the validation
stream's (crops rendered at crop resolution, as a high-resolution driving video gives them), keeps
them under `--renders` (a folder per world version), and trains the expression encoder and its
linear read-out alone, on one device, as the motion task trains them (its loss weight, half the
examples mirrored, its optimizer and schedule over `--steps`). Cheap enough to compare encoders
and schedules by the dozen, on the same pixels. Prints, at each step of `--evals`:
  train_r2_at_S, val_r2_at_S   R^2 of the controls by the trained read-out (pooled over the
                               controls) on 2000 of the training people and on the held-out ones;
and at the end, on the held-out people: val_r2_NAME (each control's R^2),
val_r2_facing_LOW_HIGH (the frames whose face turns LOW to HIGH degrees from the camera,
head_pose.facing_degrees) and step_seconds (the median step).
With --pair_weight=W each training person is rendered twice under one view and lighting with two
expressions (`--people` / 2 people), and the difference of the two read-outs must also equal the
difference of the two controls (weight W): what changed between two pictures that differ in
expression alone, with every nuisance cancelled.
With --neutral each training person is rendered twice under one view and lighting, with its
expression and with the neutral face (every control 0); with --neutral_weight=W a linear map of
each crop's features after stage --neutral_stage (a 1x1 convolution, one per tower) must give the
difference the expression made to that crop, averaged over the map's cells (squared error over the
difference's mean square, weight W): a dense target that says where on the face the expression
changed the pixels, not only by how much. Training only: the encoder reads the expressive crop.
(A pilot that lost: docs/motion_runs.md, "A dense target".)
--shared_eyes reads both eyes' close-ups with one tower, the right eye's flipped left to right.
--stem_width and --standardise set the expression encoder's stem and input standardisation
(default: the config's motion.expression_stem_width and motion.expression_standardise).
--jitter jitters the training crops at every step after mirroring (fp_jax/train/jitter.py).
--stored_share=S trains on a subset of the rendered people in which that share were rendered at crop
resolution and the rest cut from frames (the renders hold a half of each, RENDERED_SHARE): every
person of the scarcer kind and as many of the other as the share allows, so fewer people.
"""
import argparse
import copy
import multiprocessing
import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from fp_jax.host_memory import keep_freed_memory_on_cpu  # pylint: disable=g-import-not-at-top
keep_freed_memory_on_cpu()  # as the fp-* commands do, before any thread takes a malloc arena

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
from flax import nnx  # pylint: disable=g-import-not-at-top

from bench_data import ensure_dataset  # pylint: disable=g-import-not-at-top  # benchmarks/bench_data.py
from expression_scores import by_facing, r_squared  # pylint: disable=g-import-not-at-top  # benchmarks/expression_scores.py
from configs import tiny  # pylint: disable=g-import-not-at-top
from data_pipeline import appearance, controls, expression_twins, fresh_people, tfds_builder  # pylint: disable=g-import-not-at-top
from data_pipeline.errors import InputError  # pylint: disable=g-import-not-at-top
from data_pipeline.records import ClipRecords  # pylint: disable=g-import-not-at-top
from data_pipeline.template_head import build_template  # pylint: disable=g-import-not-at-top
from fp_jax.models.motion import EncoderConfig, ImageEncoder, grid_pool, to_unit_range  # pylint: disable=g-import-not-at-top
from fp_jax.train import jitter  # pylint: disable=g-import-not-at-top
from fp_jax.train.optimizer import make_optimizer  # pylint: disable=g-import-not-at-top
from fp_jax.train.tasks.motion_task import Mirror  # pylint: disable=g-import-not-at-top

CHUNK = 250  # people a render job draws
# The training people's mixed crops are rendered at crop resolution with these odds, whatever the
# config's (so the renders kept serve every --stored_share): --stored_share picks a subset of them.
RENDERED_SHARE = 0.5


def maker(data_dir, split, source, parts=()):
  config = tiny.get_config("motion").input
  config.split, config.fresh_people_cache, config.face_crop.source = split, 0, source
  config.face_crop.stored_share = RENDERED_SHARE
  config.face_crop.parts = tuple(parts)
  return fresh_people.MakeFreshExample(ClipRecords(data_dir, config.dataset, "train"), config)


def keeping_share(zoomed, share):
  """Indices into people whose crops were (`zoomed`, bool) or were not rendered at crop resolution:
  the most of them of which `share` were, each kind taken in order."""
  rendered, cut = np.flatnonzero(zoomed), np.flatnonzero(~zoomed)
  total = min(len(rendered) / share if share > 0 else np.inf, len(cut) / (1 - share) if share < 1 else np.inf)
  count = min(len(rendered), int(round(total * share)))
  return np.sort(np.concatenate([rendered[:count], cut[:min(len(cut), int(round(total)) - count)]]))


def render_people(job):
  """People `start` to `start + count` of a split: crops `[N, 1 or 2, S, S, 3]`, controls and poses.
  `pairs`: "" (one frame each), "pairs" (two expressions) or "neutral" (the expression, then the
  neutral face; the controls are the expression's alone)."""
  data_dir, split, source, start, count, pairs, parts = job
  make = maker(data_dir, split, source, parts)
  if not pairs:
    examples = [make.random_map(index, None) for index in range(start, start + count)]
    return [np.stack([e[key] for e in examples]) for key in ("driving", "expression", "head_pose")]
  model, rows = build_template(), []
  for index in range(start, start + count):
    rng = np.random.default_rng([make._seed, make._split, index, 2])  # pylint: disable=protected-access
    person = appearance.sample_identity(model, rng)
    expressions = [make._expression(rng, model) for _ in range(2)]  # pylint: disable=protected-access
    if pairs == "neutral":
      expressions[1] = np.zeros_like(expressions[0])
    zoomed = make._zoomed(rng)  # pylint: disable=protected-access
    # The same generator state for both renders: one view, head pose, light and backdrop.
    renders = [expression_twins.twin_crops(model, e, copy.deepcopy(rng), make._height, make._width, make._fps,  # pylint: disable=protected-access
                                           make._crop_size, make._margin, zoomed, person=person,
                                           parts=parts)  # pylint: disable=protected-access
               for e in expressions]
    controls_of = expressions[0] if pairs == "neutral" else np.concatenate(expressions)
    rows.append((np.concatenate([r[0] for r in renders]), controls_of, renders[0][1]))
  return [np.stack(column) for column in zip(*rows)]


def rendered(path, data_dir, split, source, people, pairs, parts):
  """The split's first `people` people, rendered once and kept in `path` (.npz)."""
  if not os.path.exists(path):
    jobs = [(data_dir, split, source, start, min(CHUNK, people - start), pairs, parts)
            for start in range(0, people, CHUNK)]
    started = time.time()
    with multiprocessing.get_context("spawn").Pool(os.cpu_count()) as pool:
      chunks = pool.map(render_people, jobs)
    print(f"rendered {people} {split} people in {time.time() - started:.0f} s", file=sys.stderr)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    partial = path + ".partial.npz"  # np.savez adds no suffix to a name that has one
    np.savez(partial, **{key: np.concatenate([chunk[i] for chunk in chunks])
                         for i, key in enumerate(("crops", "controls", "poses"))})
    os.replace(partial, path)
  with np.load(path) as stored:
    return {key: stored[key] for key in stored}


def world_renders(renders):
  """The folder of `renders` for this code's world: another world's people are not reused."""
  return os.path.join(renders, f"world_{tfds_builder.WORLD_VERSION}")


def held_out_people(renders, data_dir, count, parts):
  """The validation split's first `count` fresh people, one frame each at crop resolution (as a
  high-resolution driving video gives them), rendered once and kept: each a new person wearing
  a new expression (benchmarks/motion.py scores a motion run on them too)."""
  named = "".join(f"_{p}" for p in parts)
  return rendered(os.path.join(world_renders(renders), f"validation_{count}{named}.npz"), data_dir, "validation",
                  "stored", count, "", parts)


def neutral_error(models, maps, crops):
  """The neutral term: each tower's stage map (`maps`, one a view) through its head against the expression's
  change to that crop (`crops [B, 2, V, H, W, 3]`: expressive, neutral), over its mean square."""
  change = to_unit_range(crops[:, 0]) - to_unit_range(crops[:, 1])  # [B, V, H, W, 3]
  errors = []
  for view, (head, features) in enumerate(zip(models.neutral_heads, maps)):
    size = features.shape[1]  # the crop's change averaged over the map's cells, as grid pooling averages
    target = grid_pool(change[:, view], size).reshape(-1, size, size, change.shape[-1])
    errors.append(jnp.mean(jnp.square(head(features) - target)) / (jnp.mean(jnp.square(target)) + 1e-8))
  return sum(errors) / len(errors)


def fail(message):
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


class ExpressionModels(nnx.Module):

  def __init__(self, encoder, num_controls, rngs, neutral_stage=0):
    self.expression = ImageEncoder(encoder, rngs=rngs)
    self.readout = nnx.Linear(encoder.output_dim, num_controls, rngs=rngs)
    if neutral_stage:  # a 1x1 convolution per tower: that stage's features -> the expression's change
      width = encoder.widths[neutral_stage - 1]
      self.neutral_heads = nnx.List([nnx.Linear(width, 3, rngs=rngs) for _ in range(1 + encoder.parts)])

  def __call__(self, crops):
    return self.readout(self.expression(crops))


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--data_dir", default="outputs/bench/data")
  parser.add_argument("--renders", default="outputs/bench/expression_fit")
  parser.add_argument("--people", type=int, default=20000)
  parser.add_argument("--val_people", type=int, default=2000)
  parser.add_argument("--steps", type=int, default=1000)
  parser.add_argument("--evals", default="", help="steps to score at (default: a quarter, a half and the end)")
  parser.add_argument("--batch", type=int, default=0, help="crops a step (default: the config's)")
  parser.add_argument("--widths", default="", help="default: the config's motion.widths")
  parser.add_argument("--pooling", default="", help="default: the config's motion.expression_pooling")
  parser.add_argument("--learning_rate", type=float, default=0.0, help="default: the config's")
  parser.add_argument("--pair_weight", type=float, default=0.0)
  parser.add_argument("--neutral", action="store_true", help="render each training person's neutral face too")
  parser.add_argument("--neutral_weight", type=float, default=0.0)
  parser.add_argument("--neutral_stage", type=int, default=2, help="the stage (1 = the first) whose map predicts "
                      "the expression's difference to the neutral face, with --neutral_weight")
  parser.add_argument("--parts", default="", help="close-ups rendered beside each face crop, from "
                      "data_pipeline/face_crop.py PARTS (eyes,mouth); the encoder reads them too")
  parser.add_argument("--stem_width", type=int, default=None, help="default: the config's motion.expression_stem_width")
  parser.add_argument("--standardise", default="", choices=("", "true", "false"),
                      help="default: the config's motion.expression_standardise")
  parser.add_argument("--stored_share", type=float, default=None,
                      help="train on people of whom this share were rendered at crop resolution (default: all)")
  parser.add_argument("--jitter", default="", help="jitter the training crops at every step, as "
                      "fp_jax/train/jitter.py does: comma-separated NAME=VALUE of its FIELDS (default: none)")
  parser.add_argument("--shared_eyes", action="store_true",
                      help="with --parts holding eye_l and eye_r: one tower reads both eyes, the right eye's "
                      "close-up flipped left to right")
  parser.add_argument("--face_only", action="store_true",
                      help="render --parts, but let the encoder read the face crops alone (the baseline on those people)")
  args = parser.parse_args()
  try:
    jitter_settings = jitter.parse_settings(args.jitter)
  except InputError as error:
    fail(f"--jitter: {error}")
  config = tiny.get_config("motion")
  ensure_dataset("demo", args.data_dir)
  parts = tuple(p for p in args.parts.split(",") if p)
  if args.pair_weight > 0 and args.neutral:
    fail("--pair_weight and --neutral do not go together")
  if args.neutral_weight and not args.neutral:
    fail("--neutral_weight needs --neutral")
  pairs = "pairs" if args.pair_weight > 0 else "neutral" if args.neutral else ""
  if pairs == "neutral" and (jitter.is_active(jitter_settings) or args.face_only):
    fail("--neutral does not go with --jitter or --face_only")
  if pairs == "pairs" and parts:
    fail("--pair_weight and --parts do not go together")
  if args.stored_share is not None and (pairs or not 0 <= args.stored_share <= 1):
    fail("--stored_share takes a share in [0, 1], without --pair_weight or --neutral")
  named = "".join(f"_{p}" for p in parts)
  train_renders = f"train_{args.people}{f'_{pairs}' if pairs else ''}{named}.npz"
  train = rendered(os.path.join(world_renders(args.renders), train_renders), args.data_dir, "train",
                   config.input.face_crop.source, args.people // 2 if pairs == "pairs" else args.people, pairs,
                   parts)
  val = held_out_people(args.renders, args.data_dir, args.val_people, parts)
  if args.stored_share is not None:
    make = maker(args.data_dir, "train", config.input.face_crop.source, parts)
    kept = keeping_share(np.array([make.rendered_at_crop_resolution(i) for i in range(args.people)]), args.stored_share)
    train = {key: value[kept] for key, value in train.items()}
    print(f"training on {len(kept)} people, {args.stored_share:g} of them rendered at crop resolution", file=sys.stderr)
  if args.face_only and parts:  # the face crop comes first
    train["crops"], val["crops"], parts = train["crops"][:, :, 0], val["crops"][:, :, 0], ()
  widths = tuple(int(w) for w in args.widths.split(",")) if args.widths else tuple(config.motion.widths)
  if pairs == "neutral" and not 1 <= args.neutral_stage <= len(widths):
    fail(f"--neutral_stage must name a stage of the encoder, got {args.neutral_stage}")
  names = controls.control_names(build_template())
  stem_width = config.motion.expression_stem_width if args.stem_width is None else args.stem_width
  standardise = config.motion.expression_standardise if not args.standardise else args.standardise == "true"
  encoder = EncoderConfig(widths, config.motion.expression_dim, args.pooling or config.motion.expression_pooling,
                          len(parts), stem_width, standardise)
  neutral_stage = args.neutral_stage if args.neutral_weight else 0
  models = ExpressionModels(encoder, len(names), nnx.Rngs(config.seed), neutral_stage)
  as_read = lambda crops: crops
  if args.shared_eyes:
    if not {"eye_l", "eye_r"} <= set(parts):
      fail("--shared_eyes needs --parts with eye_l and eye_r")
    left, right = 1 + parts.index("eye_l"), 1 + parts.index("eye_r")  # view 0 is the face
    # One tower object in both slots: its weights learn from both eyes. The right eye's close-up,
    # flipped, looks like a left eye's; a mirrored example's eye views are swapped and flipped
    # first (Mirror), so the tower always reads left-eye pictures.
    models.expression.part_towers[right - 1] = models.expression.part_towers[left - 1]
    as_read = lambda crops: crops.at[..., right, :, :, :].set(crops[..., right, :, ::-1, :])
  if args.learning_rate:
    config.optim.learning_rate = args.learning_rate
  optimizer = nnx.Optimizer(models, make_optimizer(config.optim, args.steps)[0], wrt=nnx.Param)
  mirror = Mirror(config.motion_loss.mirror_share, names, parts)
  weight = config.motion.expression_weight

  @nnx.jit
  def step(models, optimizer, crops, target, key):
    chosen = mirror.choose(key, crops.shape[0])  # one choice for both crops of a pair
    crops, target = as_read(mirror.crops(chosen, crops)), mirror.controls(chosen, target)
    if jitter.is_active(jitter_settings):
      crops = jitter.jitter_crops(to_unit_range(crops), jax.random.fold_in(key, 1), jitter_settings)

    def loss(models):
      if neutral_stage:  # the encoder reads the expressive crop; the neutral one is the term's
        latent, maps = models.expression(crops[:, :1], maps_of_stage=neutral_stage - 1)
        error = jnp.mean(jnp.square(models.readout(latent) - target))
        return weight * error + args.neutral_weight * neutral_error(models, maps, crops)
      predicted = models(crops[:, :1] if pairs == "neutral" else crops)
      error = jnp.mean(jnp.square(predicted - target))
      if pairs == "pairs":
        change = lambda values: values[:, 1] - values[:, 0]
        error += args.pair_weight * jnp.mean(jnp.square(change(predicted) - change(target)))
      return weight * error

    value, grads = nnx.value_and_grad(loss)(models)
    optimizer.update(models, grads)
    return value

  predict = nnx.jit(lambda models, crops: models(as_read(crops)))

  def read(crops):
    return np.concatenate([np.asarray(predict(models, jnp.asarray(crops[i:i + 500]))) for i in range(0, len(crops), 500)])

  flat = lambda values: values.reshape(-1, *values.shape[2:])
  read_crops = train["crops"][:, :1] if pairs == "neutral" else train["crops"]  # not the neutral faces
  seen_crops, seen_controls = flat(read_crops)[:2000], flat(train["controls"])[:2000]
  val_crops, val_controls = flat(val["crops"]), flat(val["controls"])
  batch = args.batch or config.input.global_batch_size
  per_step = batch // read_crops.shape[1]
  evals = {int(s) for s in args.evals.split(",")} if args.evals else {args.steps // 4, args.steps // 2, args.steps}
  rng, key, times = np.random.default_rng(config.seed), jax.random.key(config.seed), []
  for number in range(1, args.steps + 1):
    chosen = rng.integers(len(train["crops"]), size=per_step)
    key, step_key = jax.random.split(key)
    started = time.perf_counter()
    jax.block_until_ready(step(models, optimizer, jnp.asarray(train["crops"][chosen]),
                               jnp.asarray(train["controls"][chosen]), step_key))
    times.append(time.perf_counter() - started)
    if number in evals:
      print(f"train_r2_at_{number}: {r_squared(read(seen_crops), seen_controls):.3f}")
      print(f"val_r2_at_{number}: {r_squared(read(val_crops), val_controls):.3f}", flush=True)
  predicted = read(val_crops)
  for name, value in zip(names, r_squared(predicted, val_controls, axis=0)):
    print(f"val_r2_{name}: {value:.3f}")
  for low, high, _, r2 in by_facing(predicted, val_controls, flat(val["poses"])):
    if r2 is not None:
      print(f"val_r2_facing_{low}_{high}: {r2:.3f}")
  print(f"step_seconds: {np.median(times[1:]):.3f}")


if __name__ == "__main__":
  main()
