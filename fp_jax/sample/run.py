"""One sampling job: load the models, read the inputs, sample, write the outputs."""
import dataclasses
import json
import os
import time

import jax
import numpy as np

from data_pipeline.errors import require
from data_pipeline.video_io import write_video
from data_pipeline import rays as rays_lib
from fp_jax.parallel import mesh as mesh_lib
from fp_jax.parallel.sharding import rules_from_config
from fp_jax.sample import models as models_lib
from fp_jax.sample import outputs, pipeline


def _check_out(out):
  require(out.endswith(".mp4"), f"--out must name an .mp4 file, got {out!r}")
  parent = os.path.dirname(os.path.abspath(out))
  require(os.path.isdir(parent), f"--out: the folder {parent} does not exist")
  require(os.access(parent, os.W_OK), f"--out: {parent} is not writable")


def preview_camera(conditions, out):
  """The template posed by the target signals, seen from the target cameras (normal map | rays):
  a check of the camera path before any sampling."""
  frames = conditions.normals[1:1 + conditions.num_frames]
  ray_maps = rays_lib.visualise(conditions.rays[1:1 + conditions.num_frames])
  path = out[:-len(".mp4")] + ".preview.mp4"
  write_video(path, np.concatenate([frames, ray_maps], axis=2), conditions.fps)
  return path


def sample(config, request, out, workdir=None, checkpoint=None, preview=False, progress=True):
  """Runs a sampling job; returns the paths written (`{name: path}`)."""
  _check_out(out)
  mesh = mesh_lib.make_mesh(config.mesh)
  rules = rules_from_config(config.logical_axis_rules)
  models = models_lib.load(config, mesh, rules, workdir, checkpoint)
  job = pipeline.Pipeline(config, models, mesh, rules)
  conditions = job.prepare(request)
  if preview:
    return {"preview": preview_camera(conditions, out)} if jax.process_index() == 0 else {}
  start = time.time()
  latents = job.sample(conditions, request.seed, progress)
  video = job.decode(latents, conditions.num_frames)
  settings = dict(
      request=dataclasses.asdict(request), checkpoint=dict(workdir=os.path.abspath(models.workdir), step=models.step),
      frozen=dict(vae=config.frozen.vae, motion=config.frozen.motion),
      sample=json.loads(config.sample.to_json()), guidance=job.guidance.settings(),
      camera=conditions.camera, frames=conditions.num_frames, fps=conditions.fps, resolution=[job.height, job.width],
      portrait_box=[float(v) for v in conditions.portrait.box], seconds=round(time.time() - start, 2),
      devices=jax.device_count(), processes=jax.process_count())
  if jax.process_index() != 0:
    return {}
  return outputs.write_all(out, conditions, video, settings)
