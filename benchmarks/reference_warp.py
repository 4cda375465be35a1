"""What the portrait carried onto the driving frames by the tracked mesh scores, on fp-eval's clips.

  python benchmarks/reference_warp.py [--data_dir=outputs/demo/data] [--clips=4] [--vae=RUN]

fp-eval's self-reenactment: the portrait is a held-out clip's first frame and the clip is
regenerated from its own motion and cameras; PSNR (dm-pix, fp-eval's metric) on frames 1..N-1 of
--clips test clips taken as fp-eval takes them (one of each person in turn). Prints, side by side:
- `repeated_portrait_psnr_db`: the portrait repeated (fp-eval's baseline);
- `warped_portrait_psnr_db`: the portrait warped onto every frame through the clip's own mesh
  (data_pipeline/reference_warp.py), and `warped_template_psnr_db` through the template head
  (shape 0: what tracking without a fitted shape gives), with the share of pixels carried;
  `warped_portrait_no_background_fill_psnr_db`: the first with the background its head covered
  left as the portrait's head, as warp version 2 left it; `warped_portrait_unfilled_psnr_db`:
  its mesh pixels the portrait cannot show left as the portrait's own too, as version 1 left them;
- with --vae=RUN (a trained vae run, e.g. outputs/demo/vae), each of them and the real clip
  through that VAE (encode, decode): what a generator in its latent space would score if it
  reproduced them exactly (`*_through_vae_psnr_db`; the real clip's is fp-eval's ceiling row);
- with --motion=RUN (a trained motion run, e.g. outputs/demo/motion), fp-eval's pose error of each
  video (`*_pose_error_deg`: the pose encoder's reading of its face crops against its reading of
  the real frames' crops, in degrees).
"""
import argparse
import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # pylint: disable=g-import-not-at-top

from bench_data import ensure_dataset  # pylint: disable=g-import-not-at-top  # benchmarks/bench_data.py
from data_pipeline import controls, reference_warp  # pylint: disable=g-import-not-at-top
from data_pipeline.records import ClipRecords  # pylint: disable=g-import-not-at-top
from data_pipeline.template_head import build_template  # pylint: disable=g-import-not-at-top
from fp_jax.eval import evaluate, metrics  # pylint: disable=g-import-not-at-top


def warped_clip(model, clip, shape, **fill):
  vertices = controls.pose_vertices(model, shape, clip["expression"], clip["head_pose"], clip["head_scale"])
  frames = np.asarray(clip["frames"])
  return reference_warp.warp_reference(model.f, frames[0], vertices[0], clip["intrinsics"][0],
                                       clip["extrinsics"][0], vertices, clip["intrinsics"], clip["extrinsics"],
                                       **fill)


def vae_round_trip(workdir):
  """`video uint8 [T,H,W,3] -> the same through the run's VAE (EMA weights, posterior mean)`."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from fp_jax.train import checkpoints  # pylint: disable=g-import-not-at-top
  from fp_jax.train.tasks import common  # pylint: disable=g-import-not-at-top
  params, _, saved = checkpoints.read_run(workdir, None, "ema")
  vae = checkpoints.load_into(common.make_vae(ml_collections.ConfigDict(saved), nnx.Rngs(0)), params)
  round_trip = nnx.jit(lambda vae, video: common.to_uint8(vae.decode(vae.encode(video, chunked=True)[0], chunked=True)))
  return lambda video: np.asarray(round_trip(vae, common.unit_range(jnp.asarray(video))[None]))[0]


def pose_reader(workdir, data_dir):
  """`(video, clip) -> [T, 10]` pose vectors of the video's face crops, cut by the clip's tracking
  as fp-eval cuts them."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from fp_jax.sample import inputs  # pylint: disable=g-import-not-at-top
  from fp_jax.train import checkpoints  # pylint: disable=g-import-not-at-top
  from fp_jax.train.tasks import motion_task  # pylint: disable=g-import-not-at-top
  params, _, saved = checkpoints.read_run(workdir, None, "ema")
  saved = ml_collections.ConfigDict(saved)
  models = checkpoints.load_into(motion_task.MotionModels(saved, saved.motion.num_controls, nnx.Rngs(0)), params)
  size, margin = int(saved.input.face_crop.size), float(saved.input.face_crop.margin)
  read = nnx.jit(lambda models, crops: models.pose(crops))

  def poses(video, clip):
    tracking = inputs._clip_tracking(clip, slice(None))  # pylint: disable=protected-access
    return np.asarray(read(models, jnp.asarray(inputs.face_crops(video, tracking, size, margin))))
  return poses


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--data_dir", default="outputs/demo/data")
  parser.add_argument("--clips", type=int, default=8, help="test clips, as fp-eval's --clips (make demo's: 8)")
  parser.add_argument("--vae", default="", help="a trained vae run: also score everything through it")
  parser.add_argument("--motion", default="", help="a trained motion run: also score the pose error")
  args = parser.parse_args()
  ensure_dataset("demo", args.data_dir)
  records = ClipRecords(args.data_dir, "demo", "test")
  model = build_template()
  through_vae = vae_round_trip(args.vae) if args.vae else None
  read_poses = pose_reader(args.motion, args.data_dir) if args.motion else None
  scores, pose_errors, carried, seconds = {}, {}, {"warped_portrait": [], "warped_template": []}, []
  for index in evaluate.clip_order(records)[:args.clips]:
    clip = records[index]
    real = np.asarray(clip["frames"])
    videos = {"repeated_portrait": np.repeat(real[:1], len(real), axis=0)}
    for name, shape in (("warped_portrait", clip["shape"]), ("warped_template", np.zeros_like(clip["shape"]))):
      start = time.perf_counter()
      videos[name], valid = warped_clip(model, clip, shape)
      seconds.append(time.perf_counter() - start)
      carried[name].append(valid[1:].mean())
    videos["warped_portrait_no_background_fill"] = warped_clip(model, clip, clip["shape"], fill_background=False)[0]
    videos["warped_portrait_unfilled"] = warped_clip(model, clip, clip["shape"], fill_holes=False,
                                                     fill_background=False)[0]
    if through_vae:
      videos.update({f"{name}_through_vae": through_vae(video) for name, video in list(videos.items())})
      videos["real_through_vae"] = through_vae(real)
    for name, video in videos.items():
      scores.setdefault(name, []).append(metrics.image_scores(video[1:], real[1:])[0])
      if read_poses:
        error = metrics.pose_error_deg(read_poses(video, clip)[1:], read_poses(real, clip)[1:])
        pose_errors.setdefault(name, []).append(error)
  print(f"test_clips: {len(scores['repeated_portrait'])}")
  for name, values in scores.items():
    print(f"{name}_psnr_db: {np.mean(values):.2f}")
  for name, values in pose_errors.items():
    print(f"{name}_pose_error_deg: {np.mean(values):.2f}")
  for name, values in carried.items():
    print(f"{name}_pixels_carried: {np.mean(values):.2f}")
  print(f"warp_ms_per_clip: {1000 * np.median(seconds):.0f}")


if __name__ == "__main__":
  main()
