"""What a sampling run leaves: the video, a side-by-side panel, the pasted-back video and the
settings, each written whole or not at all (temporary names, renamed when complete).

- `OUT.mp4`: the generated video, with the driving video's audio when it has some.
- `OUT.panel.mp4`: reference | driving | normal map | ray map | result.
- `OUT.pasted.mp4`: the result pasted into the original portrait at its own resolution (only when
  the portrait was cropped or resized).
- `OUT.json`: every setting used, the inputs and the checkpoint.
"""
import json
import os
import subprocess

import imageio_ffmpeg
import numpy as np
from PIL import Image

from data_pipeline import rays as rays_lib
from data_pipeline.video_io import write_video


def related_paths(out):
  stem = out[:-len(".mp4")] if out.endswith(".mp4") else out
  return {"video": out, "panel": f"{stem}.panel.mp4", "pasted": f"{stem}.pasted.mp4", "settings": f"{stem}.json"}


def _resize_frames(frames, height, width):
  if frames.shape[1:3] == (height, width):
    return frames
  return np.stack([np.asarray(Image.fromarray(f).resize((width, height), Image.Resampling.BILINEAR)) for f in frames])


def panel(conditions, result):
  """`[N, H, 5W, 3]`: reference | driving | normal map | ray map | result."""
  count, height, width = result.shape[:3]
  reference = np.repeat(conditions.portrait.image[None], count, axis=0)
  if conditions.driving is not None:
    driving = _resize_frames(conditions.driving.frames[:count], height, width)
  else:
    driving = np.zeros_like(result)
  normals = conditions.normals[1:1 + count]
  ray_maps = rays_lib.visualise(conditions.rays[1:1 + count])
  return np.concatenate([reference, driving, normals, ray_maps, result], axis=2)


def paste_back(portrait, result):
  """The result resized into the portrait's crop box, in the original image, frame by frame."""
  x0, y0, x1, y1 = (int(round(v)) for v in portrait.box)
  frames = []
  for frame in result:
    canvas = Image.fromarray(portrait.original.copy())
    canvas.paste(Image.fromarray(frame).resize((x1 - x0, y1 - y0), Image.Resampling.LANCZOS), (x0, y0))
    frames.append(np.asarray(canvas))
  video = np.stack(frames)
  height, width = video.shape[1:3]
  return video[:, :height - height % 2, :width - width % 2]  # H.264 needs even sizes


def _with_audio(video_path, audio_source, out, seconds):
  """`video_path` with the audio of `audio_source` muxed in (cut to `seconds`), written to `out`."""
  temporary = out + ".partial.mp4"
  command = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-i", video_path, "-i", audio_source,
             "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy", "-c:a", "aac", "-t", f"{seconds:.6f}", temporary]
  subprocess.run(command, check=True, capture_output=True)
  os.replace(temporary, out)


def write_all(out, conditions, result, settings):
  """Writes every output; returns their paths."""
  paths = related_paths(out)
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  fps = conditions.fps
  driving = conditions.driving
  if driving is not None and driving.has_audio:
    silent = paths["video"] + ".silent.mp4"
    write_video(silent, result, fps)
    try:
      _with_audio(silent, driving.source, paths["video"], len(result) / fps)
    finally:
      os.remove(silent)
  else:
    write_video(paths["video"], result, fps)
  write_video(paths["panel"], panel(conditions, result), fps)
  written = ["video", "panel"]
  portrait = conditions.portrait
  if tuple(portrait.original.shape[:2]) != tuple(result.shape[1:3]) or portrait.box != (0, 0, result.shape[2], result.shape[1]):
    write_video(paths["pasted"], paste_back(portrait, result), fps)
    written.append("pasted")
  temporary = paths["settings"] + ".partial"
  with open(temporary, "w") as handle:
    json.dump(settings, handle, indent=1, sort_keys=True)
  os.replace(temporary, paths["settings"])
  written.append("settings")
  return {name: paths[name] for name in written}
