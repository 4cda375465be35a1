"""Self-reenactment on held-out identities, with baselines in the same run.

Clips are taken one identity at a time in turn (`clip_order`), so four clips are four people where
the split has them. For each evaluated clip: the portrait is the clip's first frame, the driving clip
is the clip itself (its tracked pose, expression and cameras: ground truth known), and the model
regenerates frames 1..N-1 (`all-moving`, absolute motion, the clip's own cameras). Scores:

- `psnr`, `ssim` (dm-pix) of the generated frames against the real ones;
- `pose_error_deg`: head-rotation angle between the pose encoder's reading of the generated
  frames and of the real ones (both through the same encoder, so its own bias cancels);
- `expression_error`: distance between expression codes of generated and real frames, over one
  spread for the whole evaluation: the mean distance between two different real frames of the
  evaluated clips (1.0: as far as a random other real frame). One spread, not each clip's own: a
  clip that holds one expression (a view sweep) has almost none, which blew its scores up;
- `expression_coefficient_error`: the same codes read out into the expression controls by the
  motion run's read-out: root mean square difference between generated and real frames, in the
  controls' units (both through the same encoder and read-out, so their own error cancels);
- `view_normal_error_deg`, `view_mask_iou`: camera and view consistency. The head as the pose
  encoder reads it in the generated frames (rotation, translation and scale, as the frame's
  camera sees it) is rendered as a normal map through that camera, with the clip's shape and
  expression, and set against the normal map of the tracked head: the mean angle between their
  normals where both show the head, and the overlap of the pixels they cover;
- `identity_similarity` (where `config.frozen.identity` names an identity run): the cosine of the
  identity embedding of each generated frame's face with the portrait's (fp_jax/eval/identity.py).
  Faces are cut where the tracked head is in each frame, as for the pose and expression scores
  (there is no face detector): a face in the wrong place scores low here too, and the repeated
  portrait, whose head stays where it was, scores well below 1. The real clip through the VAE
  scores what the person's own frames score; `identity_impostor_similarity`, each portrait against
  the other evaluated people's portraits, what another person scores.

Baselines: the portrait repeated (`baseline_*`), and the model with one control withheld in
every guidance branch (`without_expression`, `without_pose`, `without_camera`). The real clip
through the VAE and back (`vae_ceiling_*`) bounds what any generation in its latent space can
score. With `model.warped_reference`, the portrait warped onto each frame through the tracked mesh,
through the VAE (`warp_*`), is scored too: the model reads it and measures its frames from it.
"""
import numpy as np

from data_pipeline import head_pose, records, world
from data_pipeline.errors import require
from data_pipeline.template_head import build_template
from fp_jax.eval import identity, lpips, metrics
from fp_jax.sample import inputs, pipeline

ABLATIONS = ("expression", "pose", "camera")


def clip_order(clips):
  """Record indices taking each identity's clips in turn (its first clip, then every other
  identity's first, then the seconds, ...): `max_clips` clips show as many people as they can. The
  split's first clips would be one person's (records are in (identity, clip) order)."""
  by_identity = {}
  for index in range(len(clips)):
    by_identity.setdefault(clips.identity_of(index), []).append(index)
  rounds = max(len(indices) for indices in by_identity.values())
  return [indices[k] for k in range(rounds) for indices in by_identity.values() if k < len(indices)]


class HeadRenders:
  """Normal maps of the clip's head (its shape and tracked expression) through its cameras, posed
  as given or as the pose encoder reads it."""

  def __init__(self, model, tracking, height, width):
    self.model, self.tracking = model, tracking
    self.spec = world.ClipSpec(height, width)

  def render(self, pose, scale, frames):
    tracking = self.tracking
    return world.render_normals(self.model, tracking["shape"], tracking["expression"][frames], pose, scale,
                                tracking["intrinsics"][frames], tracking["extrinsics"][frames], self.spec)

  def tracked(self, frames):
    return self.render(self.tracking["head_pose"][frames], self.tracking["head_scale"][frames], frames)

  def read(self, camera_vectors, frames):
    """The head posed by camera-frame pose vectors `[T, 10]` (the pose encoder's), via the world."""
    vectors = head_pose.from_camera_frame(np.asarray(camera_vectors, np.float64),
                                          self.tracking["extrinsics"][frames])
    pose, scale = head_pose.pose_from_vector(vectors)
    return self.render(pose, np.clip(scale, *pipeline.PLAUSIBLE_SCALE), frames)  # as sampling keeps it


def _scores(job, video, real, real_codes, real_poses, tracking, heads, target_normals, lpips_params, portrait_identity):
  """Scores of `video` against the real clip on frames 1..N-1 (frame 0 is the portrait itself)."""
  crops = inputs.face_crops(video, tracking, job.crop_size, job.crop_margin, job.crop_parts)
  psnr, ssim = metrics.image_scores(video[1:], real[1:])
  poses, codes = job.encode_crops("pose", crops)[1:], job.encode_crops("expression", crops)[1:]
  frames = slice(1, len(video))
  normal_error, mask_iou = metrics.normal_agreement(*heads.read(poses, frames), *target_normals)
  scores = dict(psnr=psnr, ssim=ssim,
                pose_error_deg=metrics.pose_error_deg(poses, real_poses[1:]),
                expression_error=metrics.code_distance(codes, real_codes[1:]),  # over the spread, below
                view_normal_error_deg=normal_error, view_mask_iou=mask_iou)
  if job.models.expression_readout is not None:
    scores["expression_coefficient_error"] = metrics.coefficient_error(job.models.read_coefficients(codes),
                                                                       job.models.read_coefficients(real_codes[1:]))
  if lpips_params is not None:
    scores["lpips"] = lpips.video_lpips(lpips_params, video[1:], real[1:])
  if portrait_identity is not None:
    scores["identity_similarity"] = identity.similarity(job.encode_crops("identity", crops)[1:], portrait_identity)
  return scores


def _impostor_similarity(rows, portraits):
  """Each row's portrait against the other evaluated people's portraits (none with one person)."""
  people = np.array([row["identity"] for row in rows])
  if portraits[0] is None or len(set(people)) < 2:
    return
  scores = identity.cosines(np.stack(portraits), np.stack(portraits))
  for k, row in enumerate(rows):
    row["identity_impostor_similarity"] = float(np.mean(scores[k][people != people[k]]))


def _generate(job, conditions, seed, drop=()):
  return job.decode(job.sample(conditions, seed, progress=False, drop=drop), conditions.num_frames)


def evaluate(config, models, mesh, rules, split="test", max_clips=4, seed=0, ablations=ABLATIONS, lpips_params=None):
  clips = records.ClipRecords(config.input.data_dir, config.input.dataset, split)
  require(len(clips) > 0, f"the {split} split is empty")
  height, width = int(config.sample.height), int(config.sample.width)
  require((clips.height, clips.width) == (height, width),
          f"evaluation compares with the stored frames: sample at their size {clips.height}x{clips.width} "
          f"(--config.sample.height/width), not {height}x{width}")
  job = pipeline.Pipeline(config, models, mesh, rules)
  template = build_template()
  rows, portraits, all_real_codes = [], [], []
  for index in clip_order(clips)[:max_clips]:
    request = pipeline.Request(image=f"clip:{split}/{index}@0", driving=f"clip:{split}/{index}",
                               mode="all-moving", camera="driving", motion="absolute", seed=seed)
    clip = clips[index]
    real = np.asarray(clip["frames"])
    tracking = inputs._clip_tracking(clip, slice(None))  # pylint: disable=protected-access
    real_crops = inputs.face_crops(real, tracking, job.crop_size, job.crop_margin, job.crop_parts)
    real_codes, real_poses = job.encode_crops("expression", real_crops), job.encode_crops("pose", real_crops)
    all_real_codes.append(real_codes[1:])
    portrait_identity = job.encode_crops("identity", real_crops[:1])[0] if models.identity is not None else None
    portraits.append(portrait_identity)
    heads = HeadRenders(template, tracking, height, width)
    target_normals = heads.tracked(slice(1, len(real)))
    score = lambda video: _scores(job, video, real, real_codes, real_poses, tracking, heads, target_normals,
                                  lpips_params, portrait_identity)
    row = {"clip": index, "identity": int(clip["identity"])}
    conditions = job.prepare(request)  # once per clip: the model and its ablations share it
    row.update(score(_generate(job, conditions, seed)))
    row.update({f"baseline_{k}": v for k, v in score(np.repeat(real[:1], len(real), axis=0)).items()})
    row.update({f"vae_ceiling_{k}": v for k, v in score(job.reconstruct(real)).items()})
    if conditions.warped is not None:  # what the model starts from: does it beat the warp?
      warp = job.reconstruct(conditions.warped)[1:1 + conditions.num_frames]
      row.update({f"warp_{k}": v for k, v in score(warp).items()})
    for name in ablations:
      row.update({f"without_{name}_{k}": v for k, v in score(_generate(job, conditions, seed, (name,))).items()})
    rows.append(row)
  _impostor_similarity(rows, portraits)
  spread = metrics.code_spread(np.concatenate(all_real_codes))
  for row in rows:
    for key in row:
      if key.endswith("expression_error"):
        row[key] /= spread
  summary = {key: float(np.mean([row[key] for row in rows])) for key in rows[0] if key not in ("clip", "identity")}
  return summary, rows
