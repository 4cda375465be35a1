"""Expression twins: the same expressions worn by another person, seen from another view.

The motion trainer makes the expression latent blind to identity, head pose and camera by
asking that a driving crop and its twin give the same latent. Only a synthetic world can make
twins exactly: the expression coefficients are kept, everything else is drawn anew (shape,
albedo, lighting, background, head motion, camera) and rendered in the worker, then cropped
around the face as the driving crops are.

`people="one"` puts all the twinned frames on one new person; `"each"` gives every twinned frame a
person of its own. The frames of one person are nearly the same picture, so the encoders can
learn a person's look instead of reading the expression; a new person on every crop leaves them
nothing to memorise (held-out expression R^2 rose from below zero to 0.2 that way in an
experiment outside the trainer: 8000 people x 2 frames against 700 people x 17).
"""
import numpy as np

from data_pipeline import appearance, cameras, controls, face_crop, head_pose as head_pose_lib, world

TWIN_REGIMES = ("phone", "studio", "viewsweep", "dynamicsweep")
TWIN_PEOPLE = ("one", "each")


def twins(model, expression, rng, height, width, fps, crop_size, margin, people="one", parts=()):
  """`twin_crops` on one new person for all frames, or on a new person for each frame."""
  if people == "one":
    return twin_crops(model, expression, rng, height, width, fps, crop_size, margin, parts=parts)
  crops, poses = zip(*(twin_crops(model, expression[i:i + 1], rng, height, width, fps, crop_size, margin, parts=parts)
                       for i in range(len(expression))))
  return np.concatenate(crops), np.concatenate(poses)


def twin_crops(model, expression, rng, height, width, fps, crop_size, margin, zoomed=False, person=None, parts=()):
  """`expression [T, C]` on a new random person and view: uint8 crops `[T, crop_size, crop_size, 3]`
  and the twin's pose vectors `[T, 10]` as its camera sees it (a new person for the pose encoder).
  The crops are cut from `height x width` frames, or (`zoomed`) rendered by a camera zoomed onto
  each face box, with the detail a crop of a high-resolution video has. A `person`
  (`appearance.Identity`) given is seen instead of a new one, under a new view, lighting and
  backdrop all the same. With `parts` (names in `face_crop.PARTS`) the crops are
  `[T, 1 + len(parts), crop_size, crop_size, 3]`: the face, then each part's crop of the same
  frame (the same generator draws: the face crop is the one rendered without parts)."""
  frames = len(expression)
  spec = world.ClipSpec(height, width, 1 + 4 * -(-(frames - 1) // 4), fps)  # clips are 4k + 1 frames long
  person = person if person is not None else appearance.sample_identity(model, rng)
  rotation, translation, scale = world.sample_head_motion(rng, frames, fps)
  head_pose = np.concatenate([rotation, translation[:, :, None]], axis=2)
  cams, _ = world.sample_cameras(TWIN_REGIMES[int(rng.integers(len(TWIN_REGIMES)))], rng, spec)
  cams = cameras.Cameras(cams.intrinsics[:frames], cams.extrinsics[:frames])
  vertices = controls.pose_vertices(model, person.shape, expression, head_pose, scale)
  boxes = face_crop.view_boxes(model, person.shape, head_pose, scale, cams.intrinsics, cams.extrinsics, margin, parts)
  scene = dict(albedo=person.albedo, lighting=appearance.sample_lighting(rng),
               background=appearance.sample_background(rng))
  if zoomed:  # one render per box, each by a camera that sees only that box
    renderer = world.renderer_for(model.f.tobytes(), crop_size, crop_size, 1)
    crops = [renderer.render_clip(vertices, face_crop.box_intrinsics(cams.intrinsics, b, crop_size), cams.extrinsics,
                                  **scene)["rgb"] for b in boxes]
  else:
    images = world.renderer_for(model.f.tobytes(), height, width, 1).render_clip(
        vertices, cams.intrinsics, cams.extrinsics, **scene)
    crops = [face_crop.crop(images["rgb"], b, crop_size) for b in boxes]
  seen = head_pose_lib.to_camera_frame(head_pose_lib.pose_vector(head_pose, scale), cams.extrinsics)
  return (np.stack(crops, axis=1) if parts else crops[0]), seen.astype(np.float32)
