"""Close-ups of the eyes and the mouth beside the face crop (face_crop.PARTS), and the towers that read them."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import tiny
from data_pipeline import controls, examples, expression_twins, face_crop, fresh_people, input_pipeline, world
from data_pipeline.errors import InputError
from data_pipeline.records import ClipRecords
from data_pipeline.template_head import build_template
from fp_jax.models import motion
from fp_jax.train.tasks import motion_task
from tests.test_input_pipeline import make_config

PARTS = ("eyes", "mouth")


def _project(clip, points):
  camera = np.einsum("tij,tvj->tvi", clip["extrinsics"][:, :, :3], points) + clip["extrinsics"][:, None, :, 3]
  pixels = np.einsum("tij,tvj->tvi", clip["intrinsics"], camera)
  return pixels[..., :2] / pixels[..., 2:]


def test_part_boxes_hold_their_part_inside_the_face_box():
  model = build_template()
  clip = world.generate_clip(7, 3, 0, "dynamicsweep", world.ClipSpec(height=32, width=32, num_frames=9))
  fields = (model, clip["shape"], clip["head_pose"], clip["head_scale"], clip["intrinsics"], clip["extrinsics"])
  face = face_crop.face_boxes(*fields)
  at_rest = np.zeros((len(face), controls.num_controls(model)))
  size = lambda boxes: boxes[:, 2] - boxes[:, 0]
  centre = lambda boxes: (boxes[:, :2] + boxes[:, 2:]) / 2
  for part, labels in (("eyes", ("eyeball",)), ("mouth", ("lips",)), ("brows", ("brows",))):
    boxes = face_crop.part_boxes(*fields, part)
    points = controls.pose_vertices(model, clip["shape"], at_rest, clip["head_pose"], clip["head_scale"],
                                    subset=face_crop.landmarks(model, labels))
    pixels = _project(clip, points)
    assert np.all(pixels >= boxes[:, None, :2]) and np.all(pixels <= boxes[:, None, 2:]), part
    assert np.all(boxes[:, :2] >= face[:, :2]) and np.all(boxes[:, 2:] <= face[:, 2:]), part
    assert np.all(size(boxes) < size(face) / 1.5), part  # closer than the face crop
    # Centred on its own part: nearer its landmarks' middle than the other part's box is.
    other = face_crop.part_boxes(*fields, "eyes" if part == "mouth" else "mouth")
    middle = (pixels.min(axis=1) + pixels.max(axis=1)) / 2
    assert np.all(np.linalg.norm(centre(boxes) - middle, axis=1) < np.linalg.norm(centre(other) - middle, axis=1))
  with pytest.raises(InputError, match="face_crop.parts: unknown part .nose."):
    face_crop.part_boxes(*fields, "nose")


def _changed_pixels(before, after):
  return np.sum(np.abs(before.astype(int) - after.astype(int)).max(axis=-1) > 8, axis=(-2, -1))


@pytest.mark.parametrize("zoomed", [True, False])
def test_part_crops_show_the_same_face_up_close(zoomed):
  """The face crop is the one rendered without parts; a gaze shows in the eyes' close-up, an open
  jaw in the mouth's, each on more pixels than in the face crop."""
  model = build_template()
  names = controls.control_names(model)
  render = lambda expression, seed, parts=PARTS: expression_twins.twin_crops(
      model, expression, np.random.default_rng(seed), 48, 48, 25, 32, 1.8, zoomed=zoomed, parts=parts)
  neutral = np.zeros((1, len(names)), np.float32)
  looking, open_jaw = neutral.copy(), neutral.copy()
  looking[0, names.index("gaze_yaw")] = 0.8
  open_jaw[0, names.index("jaw_open")] = 0.8
  seen = {"gaze": np.zeros(3), "jaw": np.zeros(3)}
  for seed in range(3):
    crops, pose = render(neutral, seed)
    alone, pose_alone = render(neutral, seed, ())
    assert crops.shape == (1, 3, 32, 32, 3) and crops.dtype == np.uint8
    np.testing.assert_array_equal(crops[:, 0], alone)
    np.testing.assert_array_equal(pose, pose_alone)
    seen["gaze"] += _changed_pixels(crops, render(looking, seed)[0])[0]
    seen["jaw"] += _changed_pixels(crops, render(open_jaw, seed)[0])[0]
  face, eyes, mouth = range(3)
  if zoomed:  # cut from 48x48 frames, the close-ups add no detail: only the zoomed renders do
    assert seen["gaze"][eyes] > 2 * seen["gaze"][face] and seen["gaze"][eyes] > 10
    assert seen["jaw"][mouth] > 2 * seen["jaw"][face]
  assert seen["gaze"][mouth] == 0  # the eyes are not in the mouth's close-up


def test_fresh_people_come_with_their_parts(data_dir):
  records = ClipRecords(data_dir, "tiny", "train")
  make = lambda **overrides: fresh_people.MakeFreshExample(
      records, make_config(data_dir, fresh_people=8, expression_twins=1, **{"face_crop.source": "stored"}, **overrides))
  with_parts = make(**{"face_crop.parts": PARTS}).random_map(2, None)
  alone = make().random_map(2, None)
  assert with_parts["driving"].shape == with_parts["driving_twin"].shape == (1, 3, 16, 16, 3)
  np.testing.assert_array_equal(with_parts["driving"][:, 0], alone["driving"])
  np.testing.assert_array_equal(with_parts["driving_twin"][:, 0], alone["driving_twin"])
  with pytest.raises(InputError, match="face_crop.parts: unknown part 'ears'"):
    make(**{"face_crop.parts": ("ears",)})


@pytest.mark.parametrize("source", ["stored", "frames"])
def test_clip_windows_come_with_their_parts(data_dir, source):
  """Stored close-ups (rendered at crop size with the dataset) or close-ups cut from the frames,
  the face crop first, as the window's face crops are without parts."""
  records = ClipRecords(data_dir, "tiny", "train")
  stored_parts = ("eye_l", "eye_r", "mouth")  # the data config's face.parts
  assert set(records.face_parts) == set(stored_parts)
  make = lambda **overrides: examples.MakeExample(records, make_config(data_dir, **{"face_crop.source": source},
                                                                      **overrides))
  with_parts = make(**{"face_crop.parts": stored_parts}).example(1, 0, np.random.default_rng(0))
  alone = make().example(1, 0, np.random.default_rng(0))
  frames = len(alone["driving"])
  assert with_parts["driving"].shape == (frames, 4) + alone["driving"].shape[1:]
  np.testing.assert_array_equal(with_parts["driving"][:, 0], alone["driving"])
  if source == "stored":
    clip = records[1]
    for view, part in enumerate(stored_parts, start=1):
      np.testing.assert_array_equal(with_parts["driving"][:, view], clip[f"face_{part}"][:frames], err_msg=part)
  for key in alone:
    if key != "driving":
      np.testing.assert_array_equal(with_parts[key], alone[key], err_msg=key)


def test_an_encoder_with_parts_reads_each_close_up_with_a_tower_of_its_own():
  encoder = motion.ImageEncoder(motion.EncoderConfig((8, 16), 5, parts=2), rngs=nnx.Rngs(0))
  images = np.random.default_rng(0).integers(0, 256, (2, 3, 3, 16, 16, 3), dtype=np.uint8)
  out = encoder(jnp.asarray(images))
  assert out.shape == (2, 3, 5)
  for view in range(3):  # each view alone moves the output
    changed = images.copy()
    changed[:, :, view] = 255 - changed[:, :, view]
    assert not np.allclose(encoder(jnp.asarray(changed)), out, atol=1e-4), view
  # The towers are separate weights, not one tower applied three times.
  towers = [encoder.stages[0].down.kernel[...]] + [t.stages[0].down.kernel[...] for t in encoder.part_towers]
  assert not np.allclose(towers[0], towers[1]) and not np.allclose(towers[1], towers[2])
  with pytest.raises(InputError, match=r"must hold 3 crops a frame \(the face, then 2 parts\), got 2"):
    encoder(jnp.asarray(images[:, :, :2]))
  with pytest.raises(InputError, match=r"images must be \[\.\.\., 3, H, W, 3\]"):
    encoder(jnp.zeros((16, 16, 3), jnp.uint8))


def test_mirrored_examples_flip_every_close_up_and_swap_the_eyes():
  names = controls.control_names(build_template())
  images = np.random.default_rng(0).integers(0, 256, (2, 1, 4, 8, 8, 3), dtype=np.uint8)
  chosen = jnp.asarray([True, False])
  flipped = np.asarray(motion_task.Mirror(1.0, names, PARTS).crops(chosen, jnp.asarray(images[:, :, :3])))
  np.testing.assert_array_equal(flipped[0], images[0, :, :3, :, ::-1])
  np.testing.assert_array_equal(flipped[1], images[1, :, :3])
  # One eye's close-up, flipped, is the other eye's in the mirror image.
  flipped = np.asarray(motion_task.Mirror(1.0, names, ("eye_l", "eye_r", "mouth")).crops(chosen, jnp.asarray(images)))
  np.testing.assert_array_equal(flipped[0], images[0, :, [0, 2, 1, 3], :, ::-1].swapaxes(0, 1))
  np.testing.assert_array_equal(flipped[1], images[1])


def test_each_eye_s_box_is_the_other_s_in_the_mirrored_scene():
  """The subject's left eye boxed in a scene is, reflected in x, the right eye boxed in the scene's
  mirror image (cameras whose principal point is the image centre, as the world's are)."""
  from data_pipeline import cameras, lbs  # pylint: disable=g-import-not-at-top
  model = build_template()
  reflect = np.diag([-1.0, 1.0, 1.0])
  rotation = lbs.axis_angle_to_matrix(np.array([[0.15, 0.45, -0.2]]))
  head = np.concatenate([rotation, np.array([[[0.02], [0.01], [-0.03]]])], axis=-1)
  views = cameras.turntable(1, 64, 64, yaw_start=25.0, yaw_end=25.0, pitch=10.0)
  mirrored_head = np.concatenate([reflect @ head[:, :, :3] @ reflect, reflect @ head[:, :, 3:]], axis=-1)
  mirrored_view = np.concatenate([reflect @ views.extrinsics[:, :, :3] @ reflect,
                                  reflect @ views.extrinsics[:, :, 3:]], axis=-1)
  shape = np.zeros(model.num_shape)
  box = lambda pose, view, part: face_crop.part_boxes(model, shape, pose, np.ones(1), views.intrinsics, view, part)[0]
  left, right = box(head, views.extrinsics, "eye_l"), box(head, views.extrinsics, "eye_r")
  assert np.linalg.norm(left[:2] - right[:2]) > 3  # two boxes, one on each eye
  assert left[2] - left[0] < 0.75 * (box(head, views.extrinsics, "eyes")[2] - box(head, views.extrinsics, "eyes")[0])
  for part, other in (("eye_l", "eye_r"), ("eye_r", "eye_l")):
    x0, y0, x1, y1 = box(head, views.extrinsics, part)
    np.testing.assert_allclose(box(mirrored_head, mirrored_view, other), [64 - x1, y0, 64 - x0, y1], atol=0.3)


def test_the_pytorch_mirror_reads_the_parts_as_the_encoder_does():
  import torch  # pylint: disable=g-import-not-at-top
  from fp_jax.export import motion_names, torch_motion  # pylint: disable=g-import-not-at-top
  for pooling in ("mean", "mean_keypoints", "grid"):
    ours = motion.ImageEncoder(motion.EncoderConfig((8, 16), 5, pooling, parts=2), rngs=nnx.Rngs(1))
    state = {name: torch.from_numpy(np.array(value))
             for name, value in motion_names.to_state_dict(nnx.state(ours, nnx.Param).to_pure_dict())}
    mirror = torch_motion.ImageEncoder((8, 16), 5, pooling, parts=2)
    mirror.load_state_dict(state, strict=True)
    crops = np.random.default_rng(2).integers(0, 256, (2, 4, 3, 16, 16, 3), dtype=np.uint8)
    want = np.asarray(ours(jnp.asarray(crops)))
    with torch.no_grad():
      got = mirror(torch.from_numpy(crops)).numpy()
    assert got.shape == want.shape == (2, 4, 5)
    np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max(), err_msg=pooling)


def test_the_motion_task_trains_every_tower_and_reads_pose_from_the_face(data_dir):
  config = tiny.get_config("motion")
  config.input.update(data_dir=data_dir, dataset="tiny", global_batch_size=2, fresh_people=8, fresh_people_cache=0)
  config.input.face_crop.update(size=16, source="stored")
  config.motion.update(widths=(8, 16), pose_widths=(), expression_parts=PARTS)
  assert tuple(config.input.face_crop.parts) == PARTS  # the input cuts what the encoder reads
  batch = jax.tree.map(jnp.asarray, next(input_pipeline.make_iterator(config.input)))
  assert batch["driving"].shape == (2, 1, 3, 16, 16, 3)
  task = motion_task.MotionTask(config)
  models = task.make_model(nnx.Rngs(0))
  grads = nnx.grad(lambda m: task.loss(m, {}, batch, jax.random.key(0))[0])(models)
  for tower in range(2):
    assert float(jnp.abs(grads.expression.part_towers[tower].stages[0].down.kernel[...]).sum()) > 0
  # The pose encoder reads the face crop alone: close-ups changed, its loss stays.
  changed = dict(batch, driving=batch["driving"].at[:, :, 1:].set(0))
  pose_loss = lambda b: float(task.loss(models, {}, b, None)[1]["pose_mse"])
  expression_loss = lambda b: float(task.loss(models, {}, b, None)[1]["expression_mse"])
  assert pose_loss(changed) == pose_loss(batch) and expression_loss(changed) != expression_loss(batch)
