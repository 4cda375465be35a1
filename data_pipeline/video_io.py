"""Writing mp4 files whole or not at all."""
import os

import imageio.v3 as iio


def write_video(path, video, fps):
  """`video [T, H, W, 3]` uint8 (even H and W) -> an H.264 mp4, renamed into place when complete."""
  temporary = path + ".partial.mp4"
  iio.imwrite(temporary, video, extension=".mp4", fps=fps, macro_block_size=1)
  os.replace(temporary, path)
