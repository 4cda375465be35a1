"""Expression twins: the same expressions worn by another person, seen from another view.

The motion trainer makes the expression latent blind to identity, head pose and camera by
asking that a driving crop and its twin give the same latent. Only a synthetic world can make
twins exactly: the expression coefficients are kept, everything else is drawn anew (shape,
albedo, lighting, background, head motion, camera) and rendered in the worker, then cropped
around the face as the driving crops are.
"""
import numpy as np

from data_pipeline import appearance, cameras, controls, face_crop, head_pose as head_pose_lib, world

TWIN_REGIMES = ("phone", "studio", "viewsweep", "dynamicsweep")


def twin_crops(model, expression, rng, height, width, fps, crop_size, margin):
  """`expression [T, C]` on a new random person and view: uint8 crops `[T, crop_size, crop_size, 3]`
  and the twin's pose vectors `[T, 10]` as its camera sees it (a new person for the pose encoder)."""
  frames = len(expression)
  spec = world.ClipSpec(height, width, 1 + 4 * -(-(frames - 1) // 4), fps)  # clips are 4k + 1 frames long
  person = appearance.sample_identity(model, rng)
  rotation, translation, scale = world.sample_head_motion(rng, frames, fps)
  head_pose = np.concatenate([rotation, translation[:, :, None]], axis=2)
  cams, _ = world.sample_cameras(TWIN_REGIMES[int(rng.integers(len(TWIN_REGIMES)))], rng, spec)
  cams = cameras.Cameras(cams.intrinsics[:frames], cams.extrinsics[:frames])
  vertices = controls.pose_vertices(model, person.shape, expression, head_pose, scale)
  images = world.renderer_for(model.f.tobytes(), height, width, 1).render_clip(
      vertices, cams.intrinsics, cams.extrinsics, albedo=person.albedo,
      lighting=appearance.sample_lighting(rng), background=appearance.sample_background(rng))
  boxes = face_crop.face_boxes(model, person.shape, expression, head_pose, scale, cams.intrinsics,
                               cams.extrinsics, margin)
  seen = head_pose_lib.to_camera_frame(head_pose_lib.pose_vector(head_pose, scale), cams.extrinsics)
  return face_crop.crop(images["rgb"], boxes, crop_size), seen.astype(np.float32)
