"""The image encoders' options for fine detail: a stride-1 stem and per-crop input standardisation;
the stage maps a training term can read."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import tiny
from fp_jax.models import motion
from fp_jax.train.tasks import common


def test_standardise_centres_each_crop_and_scales_it_by_its_spread():
  images = np.random.default_rng(0).uniform(-1, 1, (3, 6, 5, 3)) * np.array([0.1, 0.5, 1.0])[:, None, None, None]
  got = np.asarray(motion.standardise(jnp.asarray(images, jnp.float32)))
  spread = images.reshape(3, -1).std(axis=1)  # numpy's population deviation, as the analytic answer
  np.testing.assert_allclose(got.reshape(3, -1).mean(axis=1), 0.0, atol=1e-6)
  np.testing.assert_allclose(got.reshape(3, -1).std(axis=1), spread / (spread + motion.STANDARDISE_EPS), rtol=1e-5)


def test_a_standardising_encoder_does_not_see_a_change_of_brightness():
  config = motion.EncoderConfig((8, 16), 5, stem_width=8, standardise=True)
  encoder = motion.ImageEncoder(config, rngs=nnx.Rngs(0))
  crops = jnp.asarray(np.random.default_rng(1).uniform(-0.6, 0.6, (2, 16, 16, 3)), jnp.float32)
  np.testing.assert_allclose(np.asarray(encoder(crops + 0.3)), np.asarray(encoder(crops)), atol=1e-5)
  plain = motion.ImageEncoder(motion.EncoderConfig((8, 16), 5, stem_width=8), rngs=nnx.Rngs(0))
  assert np.abs(np.asarray(plain(crops + 0.3)) - np.asarray(plain(crops))).max() > 1e-3


def test_the_stem_reads_the_crop_at_full_resolution_in_every_tower():
  encoder = motion.ImageEncoder(motion.EncoderConfig((8, 16), 5, parts=2, stem_width=4), rngs=nnx.Rngs(0))
  for tower in [encoder, *encoder.part_towers]:
    assert tower.stem.kernel.shape == (3, 3, 3, 4) and tower.stem.strides == 1
    assert tower.stages[0].down.kernel.shape == (3, 3, 4, 8)
  assert not hasattr(motion.ImageEncoder(motion.EncoderConfig((8, 16), 5), rngs=nnx.Rngs(0)), "stem")
  with pytest.raises(Exception, match="stem_width must be >= 0"):
    motion.ImageEncoder(motion.EncoderConfig((8, 16), 5, stem_width=-1), rngs=nnx.Rngs(0))


def test_the_stage_maps_given_are_those_the_latent_is_read_from():
  config = motion.EncoderConfig((8, 16), 5, parts=2)
  encoder = motion.ImageEncoder(config, rngs=nnx.Rngs(0))
  crops = jnp.asarray(np.random.default_rng(2).uniform(-1, 1, (2, 3, 3, 16, 16, 3)), jnp.float32)  # [B, T, views]
  latent, first_maps = encoder(crops, maps_of_stage=0)
  np.testing.assert_array_equal(np.asarray(latent), np.asarray(encoder(crops)))
  assert [m.shape for m in first_maps] == [(6, 8, 8, 8)] * 3  # B x T flattened, half the crop, the first width
  _, last_maps = encoder(crops, maps_of_stage=-1)
  # The last maps through each tower's norm, the mean pooling and the head give the latent back.
  pooled = [jnp.mean(jax.nn.silu(tower.norm(m)), axis=(1, 2)) for tower, m in zip([encoder, *encoder.part_towers],
                                                                                   last_maps)]
  again = encoder.head(jnp.concatenate(pooled, axis=-1)).reshape(2, 3, 5)
  np.testing.assert_allclose(np.asarray(again), np.asarray(latent), atol=1e-5)


def test_the_config_gives_the_expression_encoder_alone_its_stem_and_standardisation():
  config = tiny.get_config("motion")
  config.motion.update(widths=(8, 16), pose_widths=(), expression_stem_width=4, expression_standardise=True)
  expression = common.make_expression_encoder(config, nnx.Rngs(0))
  assert expression.config.stem_width == 4 and expression.config.standardise
  pose = common.make_pose_encoder(config, nnx.Rngs(0))
  assert pose.config.stem_width == 0 and not pose.config.standardise
  older = tiny.get_config("motion")  # a run saved before the fields existed
  del older.motion["expression_stem_width"], older.motion["expression_standardise"]
  assert common.make_expression_encoder(older, nnx.Rngs(0)).config.stem_width == 0


def test_the_pytorch_mirror_has_the_stem_and_the_standardisation():
  import torch  # pylint: disable=g-import-not-at-top
  from fp_jax.export import motion_names, torch_motion  # pylint: disable=g-import-not-at-top
  ours = motion.ImageEncoder(motion.EncoderConfig((8, 16), 5, "mean", parts=2, stem_width=4, standardise=True),
                             rngs=nnx.Rngs(1))
  state = {name: torch.from_numpy(np.array(value))
           for name, value in motion_names.to_state_dict(nnx.state(ours, nnx.Param).to_pure_dict())}
  mirror = torch_motion.ImageEncoder((8, 16), 5, "mean", parts=2, stem_width=4, standardise=True)
  mirror.load_state_dict(state, strict=True)
  crops = np.random.default_rng(2).integers(0, 256, (2, 3, 16, 16, 3), dtype=np.uint8)
  want = np.asarray(ours(jnp.asarray(crops)))
  with torch.no_grad():
    got = mirror(torch.from_numpy(crops)).numpy()
  np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max())
  encoders = torch_motion.MotionEncoders(dict(widths=[8, 16], expression_dim=5, num_controls=3,
                                              expression_parts=["eye_l", "mouth"], expression_stem_width=4,
                                              expression_standardise=True))
  assert encoders.expression.standardise and encoders.expression.stem.out_channels == 4
  assert not hasattr(encoders.pose, "stem")
