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
  """An .mp4 path whose folder exists, or is one new folder inside an existing one (several modes
  write into a folder the run creates only once it has something to put there)."""
  require(out.endswith(".mp4"), f"--out must name an .mp4 file, got {out!r}")
  parent = os.path.dirname(os.path.abspath(out))
  existing = parent if os.path.isdir(parent) else os.path.dirname(parent)
  require(os.path.isdir(existing), f"--out: the folder {parent} does not exist")
  require(os.access(existing, os.W_OK), f"--out: {existing} is not writable")


def outputs_for_modes(names, out):
  """`--mode=a,b,...` -> [(mode, .mp4 path)]: one mode writes `out` itself; several write
  `out/<mode>.mp4`, `out` being a folder."""
  require(names and all(names), f"--mode: empty mode name in {','.join(names)!r}")
  require(len(set(names)) == len(names), f"--mode names a mode twice: {','.join(names)}")
  if len(names) == 1:
    return [(names[0], out)]
  require(not out.endswith(".mp4"), f"--out must name a folder when several modes are sampled, got {out!r}")
  return [(name, os.path.join(out, f"{name}.mp4")) for name in names]


def preview_camera(conditions, out):
  """The template posed by the target signals, seen from the target cameras (normal map | rays):
  a check of the camera path before any sampling."""
  frames = conditions.normals[1:1 + conditions.num_frames]
  ray_maps = rays_lib.visualise(conditions.rays[1:1 + conditions.num_frames])
  path = out[:-len(".mp4")] + ".preview.mp4"
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  write_video(path, np.concatenate([frames, ray_maps], axis=2), conditions.fps)
  return path


def sample(config, request, out, workdir=None, checkpoint=None, preview=False, progress=True):
  """Runs a sampling job; returns the paths written (`{name: path}`)."""
  return sample_all(config, [(request, out)], workdir, checkpoint, preview, progress)[0]


def sample_all(config, jobs, workdir=None, checkpoint=None, preview=False, progress=True):
  """Runs `(request, out)` jobs on one loaded model, so they share its compiled steps; every
  job's inputs are read and checked before any model is loaded, so bad input fails in seconds
  and writes nothing. Returns each job's `{name: path}`."""
  for _, out in jobs:
    _check_out(out)
  read = [pipeline.read_inputs(config, request) for request, _ in jobs]
  mesh = mesh_lib.make_mesh(config.mesh)
  rules = rules_from_config(config.logical_axis_rules)
  models = models_lib.load(config, mesh, rules, workdir, checkpoint)
  job = pipeline.Pipeline(config, models, mesh, rules)
  prepared = [(request, job.prepare(request, inputs), out) for (request, out), inputs in zip(jobs, read)]
  if preview:
    return [{"preview": preview_camera(conditions, out)} if jax.process_index() == 0 else {}
            for _, conditions, out in prepared]
  return [_sample_one(config, job, models, request, conditions, out, progress)
          for request, conditions, out in prepared]


def _sample_one(config, job, models, request, conditions, out, progress):
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
