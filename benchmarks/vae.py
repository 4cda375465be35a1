"""The small video VAE's reconstruction on held-out identities, at the demo resolution.

  python benchmarks/vae.py [--workdir=RUN] [--steps=1500] [--window=17] [--crop=32] [--z_dim=16] [--data_dir=outputs/bench/data]
      [--base_dim=16 --dim_mult=1,2,4,4 --num_res_blocks=1 --temporal_downsample=0,1,1]
      [--residual --patch_size=2 --decoder_base_dim=0] [--linear_path | --no-linear_path]
      [--image_steps=3000 [--image_batch=8 --image_crop=32]] [--init_run=RUN] [--split=test --clips=0]

It first trains the vae task (configs/tiny.py:vae) on the demo dataset to --steps steps (in
--workdir, resuming what is there, or a temporary directory; --steps=0 only measures), on
--window-frame windows (17: the clips' length; a causal VAE trained on shorter windows never sees
its caches filled with real frames, and later latent frames of a longer clip come out worse), cut
to --crop x --crop windows (the config's 32 by default; 0: whole frames). With --image_steps it
first trains the image stage (configs/tiny.py:vae_image: single frames, the linear path held
still) for that many steps in WORKDIR_image, and the clip stage starts from it (config.init.run;
--init_run names another run to start from). It then encodes and decodes every whole clip (17 frames, 64x64)
of the test split (identities never seen in training; --split=train measures the training people,
to see what is learned by heart, --clips=N the split's first N clips) with the EMA weights, from the latent
mean, and prints `vae_psnr_db` (PSNR over all test pixels, images in [0, 255]) and
`vae_psnr_first_frame_db`, with a linear path (the tiny config's) `vae_psnr_linear_path_alone_db`
(that path's own reconstruction, without the nets), PSNR per latent frame, and the per-channel statistics of the
normalised latents (the DiT's inputs; mean 0 and std 1 is what the config declares).
Goal (issue): vae_psnr_db >= 30.
"""
import argparse
import os
import sys
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from fp_jax.host_memory import keep_freed_memory_on_cpu  # pylint: disable=g-import-not-at-top
keep_freed_memory_on_cpu()  # as the fp-* commands do, before any thread takes a malloc arena

import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import ml_collections  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
from flax import nnx  # pylint: disable=g-import-not-at-top

from bench_data import ensure_dataset  # pylint: disable=g-import-not-at-top  # benchmarks/bench_data.py
from configs import tiny  # pylint: disable=g-import-not-at-top
from data_pipeline.records import ClipRecords  # pylint: disable=g-import-not-at-top
from fp_jax.train import checkpoints, trainer  # pylint: disable=g-import-not-at-top
from fp_jax.train.tasks import common  # pylint: disable=g-import-not-at-top


def psnr(mse):
  return float(10.0 * np.log10(255.0 ** 2 / mse))


def stage_config(args, variant, window, batch, crop, steps, init_run):
  """configs/tiny.py's `variant` (vae or vae_image) as the flags change it, on `window`-frame windows."""
  config = tiny.get_config(variant)
  config.input.data_dir = args.data_dir
  config.input.window.num_frames = window
  config.input.global_batch_size = batch
  if args.learning_rate:
    config.optim.learning_rate = args.learning_rate
  if crop >= 0:
    config.vae_loss.crop = crop
  if args.z_dim:  # the DiT's channels follow, as the config requires of every task
    config.vae.z_dim = config.model.in_channels = config.model.out_channels = args.z_dim
  if args.base_dim:
    config.vae.base_dim = args.base_dim
  if args.dim_mult:
    config.vae.dim_mult = tuple(int(m) for m in args.dim_mult.split(","))
  if args.num_res_blocks:
    config.vae.num_res_blocks = args.num_res_blocks
  if args.temporal_downsample:
    config.vae.temporal_downsample = tuple(bool(int(t)) for t in args.temporal_downsample.split(","))
  if args.residual:
    config.vae.residual = True
  if args.patch_size:
    config.vae.patch_size = args.patch_size
  if args.decoder_base_dim >= 0:
    config.vae.decoder_base_dim = args.decoder_base_dim
  if args.linear_path is not None:
    config.vae.linear_path = args.linear_path
  config.init.run = init_run
  config.total_steps = steps
  config.log_every = args.log_every
  config.eval.every = 0
  config.checkpoint_every = steps
  return config


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--data_dir", default="outputs/bench/data")
  parser.add_argument("--workdir", default="")
  parser.add_argument("--steps", type=int, default=1500)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--crop", type=int, default=-1, help="training crop size (0: whole frames; -1: the config's)")
  parser.add_argument("--learning_rate", type=float, default=0.0, help="0: the config's")
  parser.add_argument("--log_every", type=int, default=100, help="training metrics every N steps")
  parser.add_argument("--window", type=int, default=17, help="training window: 1 + 4k frames")
  parser.add_argument("--z_dim", type=int, default=0, help="latent channels (0: the config's)")
  parser.add_argument("--base_dim", type=int, default=0, help="VAE width (0: the config's)")
  parser.add_argument("--dim_mult", default="", help="per-level width multipliers, e.g. 1,2,4,8 (empty: the config's)")
  parser.add_argument("--num_res_blocks", type=int, default=0, help="residual blocks a level (0: the config's)")
  parser.add_argument("--temporal_downsample", default="", help="per downsampling, 1 halves time, e.g. 1,1")
  parser.add_argument("--residual", action="store_true", help="Wan 2.2's blocks with parameter-free shortcuts")
  parser.add_argument("--patch_size", type=int, default=0, help="pixel patches folded into channels (0: the config's)")
  parser.add_argument("--decoder_base_dim", type=int, default=-1, help="decoder width (-1: the config's)")
  parser.add_argument("--linear_path", action=argparse.BooleanOptionalAction, default=None,
                      help="a linear code beside the nets, fitted to the training clips (default: the config's)")
  parser.add_argument("--init_run", default="", help="start from this vae run's EMA weights (config.init.run)")
  parser.add_argument("--image_steps", type=int, default=0,
                      help="first train this many steps on single frames (in WORKDIR_image), then --steps from there")
  parser.add_argument("--image_batch", type=int, default=0, help="the image stage's frames a step (0: --batch)")
  parser.add_argument("--image_crop", type=int, default=-1, help="the image stage's crop (-1: --crop)")
  parser.add_argument("--split", default="test", choices=("test", "validation", "train"),
                      help="the clips measured (train: the training people, to see what is learned by heart)")
  parser.add_argument("--clips", type=int, default=0, help="measure the split's first N clips (0: all)")
  args = parser.parse_args()
  ensure_dataset("demo", args.data_dir)
  workdir = args.workdir or tempfile.mkdtemp(prefix="vae_bench_")
  if args.steps:  # trains (or resumes) to --steps; --steps=0 only measures --workdir
    init_run = args.init_run
    if args.image_steps:  # the image stage first, in a folder of its own beside --workdir
      init_run = workdir.rstrip("/") + "_image"
      image_batch, image_crop = args.image_batch or args.batch, args.crop if args.image_crop < 0 else args.image_crop
      trainer.train(stage_config(args, "vae_image", 1, image_batch, image_crop, args.image_steps, args.init_run), init_run)
    trainer.train(stage_config(args, "vae", args.window, args.batch, args.crop, args.steps, init_run), workdir)
  params, step, saved = checkpoints.read_run(workdir, None, "ema")
  vae = checkpoints.load_into(common.make_vae(ml_collections.ConfigDict(saved), nnx.Rngs(0)), params)
  # One encode per clip: the decoder and the latent statistics read the same posterior mean.
  encode = nnx.jit(lambda vae, video: vae.encode(video, chunked=True)[0])
  decode = nnx.jit(lambda vae, mean: common.to_uint8(vae.decode(mean, chunked=True)))
  has_linear_path = vae.linear_path is not None  # what the nets add over the linear code beside them
  through_linear_path = nnx.jit(lambda path, video: common.to_uint8(path.decode(path.encode(video))))
  records = ClipRecords(args.data_dir, "demo", args.split)
  errors, first, per_frame, latents, linear_errors = [], [], [], [], []
  clips = min(args.clips or len(records), len(records))
  for index in range(clips):
    video = records[index]["frames"]
    clip = common.unit_range(jnp.asarray(video))[None]
    mean = encode(vae, clip)
    recon = np.asarray(decode(vae, mean))[0].astype(np.float64)
    latents.append(np.asarray(vae.normalize(mean)))
    if has_linear_path:
      linear = np.asarray(through_linear_path(vae.linear_path, clip))[0].astype(np.float64)
      linear_errors.append(np.mean(np.square(linear - video)))
    squared = np.square(recon - video.astype(np.float64))
    errors.append(np.mean(squared))
    first.append(np.mean(squared[0]))
    per_frame.append(np.mean(squared, axis=(1, 2, 3)))
  print(f"trained_steps: {step}")
  print(f"{args.split}_clips: {clips}")
  print(f"vae_psnr_db: {psnr(np.mean(errors)):.2f}")
  print(f"vae_psnr_first_frame_db: {psnr(np.mean(first)):.2f}")
  if has_linear_path:
    print(f"vae_psnr_linear_path_alone_db: {psnr(np.mean(linear_errors)):.2f}")
  # One figure per latent frame's group (the first frame, then 4 at a time): a VAE that has not
  # learned its causal cache shows it as a fall after the groups it was trained on.
  frame_errors = np.mean(per_frame, axis=0)
  groups = [frame_errors[:1]] + [frame_errors[i:i + 4] for i in range(1, len(frame_errors), 4)]
  # What the DiT sees: latents normalised by the config's statistics should be ~N(0, 1) per channel.
  channels = np.concatenate([z.reshape(-1, z.shape[-1]) for z in latents])
  print(f"latent_channel_mean_abs_max: {np.abs(channels.mean(axis=0)).max():.3f}")
  print(f"latent_channel_std_min: {channels.std(axis=0).min():.3f}")
  print(f"latent_channel_std_max: {channels.std(axis=0).max():.3f}")
  print("vae_psnr_by_latent_frame_db: " + " ".join(f"{psnr(np.mean(g)):.2f}" for g in groups))


if __name__ == "__main__":
  main()
