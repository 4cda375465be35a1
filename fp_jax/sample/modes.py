"""The sampling modes: which signals follow the driving clip, and which camera they default to.

FactorPortrait's four combinations and DeX's two edits. A held signal keeps the source
portrait's own value (estimated by the encoders, or known for a stored clip).
"""
import dataclasses

import numpy as np

from data_pipeline.errors import require


@dataclasses.dataclass(frozen=True)
class Mode:
  drive_pose: bool
  drive_expression: bool
  camera: str  # the default camera preset
  still_camera: bool  # the camera must not move

  @property
  def needs_driving(self):
    return self.drive_pose or self.drive_expression


MODES = {
    "static-frontal": Mode(True, True, "frontal", still_camera=True),
    "static-novel": Mode(True, True, "novel:30,0", still_camera=True),
    "camera-sweep": Mode(False, False, "turntable", still_camera=False),
    "all-moving": Mode(True, True, "spiral", still_camera=False),
    "expression-only": Mode(False, True, "frontal", still_camera=False),
    "pose-only": Mode(True, False, "frontal", still_camera=False),
}


def get(name):
  require(name in MODES, f"unknown mode {name!r}; choose from {', '.join(MODES)}")
  return MODES[name]


def check_camera(name, mode, camera_name, cameras):
  if mode.still_camera:
    moving = not (np.allclose(cameras.extrinsics, cameras.extrinsics[:1], atol=1e-6) and
                  np.allclose(cameras.intrinsics, cameras.intrinsics[:1], atol=1e-6))
    require(not moving, f"mode {name} keeps the camera still, but camera {camera_name!r} moves; "
                        "use all-moving or camera-sweep")
  if name == "static-frontal":
    require(camera_name == "frontal", f"mode static-frontal uses the frontal camera, not {camera_name!r}; "
                                      "use static-novel for another view")
