"""The VAE's linear path: the pixel layout of a latent position, the closed-form start from the
training clips' principal components, and the trainer's use of it on fresh runs only."""
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fp_jax.models.vae import VAEConfig, VideoVAE
from fp_jax.models.vae_linear import fit_principal_patches, group_patches, initialise, ungroup_patches

CONFIG = VAEConfig(base_dim=4, z_dim=4, dim_mult=(1, 2, 2, 2), num_res_blocks=1,
                   latents_mean=(0.5, -1.0, 0.0, 2.0), latents_std=(2.0, 1.0, 0.5, 3.0), linear_path=True)


def test_a_latent_position_gathers_its_frames_pixels_and_scatters_them_back():
  video = np.random.default_rng(0).uniform(-1, 1, (2, 9, 16, 24, 3)).astype(np.float32)
  groups = np.asarray(group_patches(jnp.asarray(video), 4, 8))
  assert groups.shape == (2, 3, 2, 3, 4 * 8 * 8 * 3)
  # Latent frame 1, row 1, column 2 of clip 1: frames 1-4, pixels [8:16, 16:24].
  np.testing.assert_array_equal(groups[1, 1, 1, 2].reshape(4, 8, 8, 3), video[1, 1:5, 8:16, 16:24])
  # Latent frame 0 is frame 0 four times.
  np.testing.assert_array_equal(groups[0, 0, 0, 1].reshape(4, 8, 8, 3),
                                np.broadcast_to(video[0, :1, :8, 8:16], (4, 8, 8, 3)))
  np.testing.assert_allclose(np.asarray(ungroup_patches(jnp.asarray(groups), 4, 8)), video, atol=1e-7)


def clips_on_a_plane(count, rank, seed=0):
  """Clips (17 frames, 32x32, in [-1, 1]) whose every latent position's 768 pixels lie on one
  `rank`-dimensional affine plane: still 8x8 patterns (so frame 0's group of copies lies on it
  too), drawn from `rank` fixed ones, each weighed half as much as the one before, plus an offset."""
  rng = np.random.default_rng(seed)
  patterns = np.tile(rng.uniform(-0.15, 0.15, (rank + 1, 1, 192)), (1, 4, 1)).reshape(rank + 1, 768)
  weights = rng.uniform(-1, 1, (count, 5, 4, 4, rank)) * 0.5 ** np.arange(rank)  # unequal components
  groups = weights @ patterns[1:] + patterns[0]
  return np.asarray(ungroup_patches(jnp.asarray(groups, jnp.float32), 4, 8))


def fitted_vae(clips, config=CONFIG):
  vae = VideoVAE(config, rngs=nnx.Rngs(0))
  params = nnx.state(vae, nnx.Param)
  initialise(params, fit_principal_patches(iter(clips), config))
  nnx.update(vae, params)
  return vae


def test_a_fitted_vae_starts_as_the_whitened_principal_code_of_its_clips():
  """Clips on a plane of the latent's dimension: the fitted VAE reconstructs them exactly, whole
  and chunked, through its convolutional nets (zeroed) and its linear path, and their normalised
  latents are white: mean 0, identity covariance."""
  clips = clips_on_a_plane(6, CONFIG.z_dim)
  vae = fitted_vae(clips)
  video = jnp.asarray(clips)
  for chunked in (False, True):
    mean = nnx.jit(lambda vae, x, c=chunked: vae.encode(x, chunked=c)[0])(vae, video)
    decoded = nnx.jit(lambda vae, z, c=chunked: vae.decode(z, chunked=c))(vae, mean)
    np.testing.assert_allclose(np.asarray(decoded), clips, atol=2e-5)
  normalised = np.asarray(vae.normalize(mean), np.float64).reshape(-1, CONFIG.z_dim)
  np.testing.assert_allclose(normalised.mean(axis=0), 0.0, atol=1e-4)
  np.testing.assert_allclose(np.cov(normalised.T, bias=True), np.eye(CONFIG.z_dim), atol=1e-3)
  # One dimension short: the code keeps the plane's strongest directions and misses the rest.
  short = fitted_vae(clips, VAEConfig(**{**CONFIG.__dict__, "z_dim": 3, "latents_mean": (0.0,) * 3,
                                         "latents_std": (1.0,) * 3}))
  missed = np.abs(np.asarray(nnx.jit(lambda vae, x: vae.decode(vae.encode(x)[0]))(short, video)) - clips).max()
  assert missed > 1e-2


def projected_by_svd(train_clips, clip, rank):
  """An independent answer: `clip` through the best rank-`rank` affine projection of the training
  clips' latent positions (numpy SVD of the centred samples), frame 0 the mean of its group."""
  def groups(video):
    return np.asarray(group_patches(jnp.asarray(video, jnp.float32), 4, 8), np.float64)
  samples = np.concatenate([groups(c[None]).reshape(-1, 768) for c in train_clips])
  centre = samples.mean(axis=0)
  basis = np.linalg.svd(samples - centre, full_matrices=False)[2][:rank]
  projected = (groups(clip[None]) - centre) @ basis.T @ basis + centre
  return np.asarray(ungroup_patches(jnp.asarray(projected, jnp.float32), 4, 8))[0]


def test_a_fresh_vae_run_starts_from_its_training_clips_and_its_ema_too(data_dir, tmp_path):
  from data_pipeline.records import ClipRecords  # pylint: disable=g-import-not-at-top
  from fp_jax.train import trainer  # pylint: disable=g-import-not-at-top
  from fp_jax.train.tasks import common  # pylint: disable=g-import-not-at-top
  from tests.run_helpers import train_config  # pylint: disable=g-import-not-at-top
  config = train_config(data_dir, "vae", **{"vae.linear_path": True})
  run = trainer.Trainer(config, str(tmp_path / "vae"))
  try:
    train = ClipRecords(data_dir, "tiny", "train")
    train_clips = [common.unit_range(train[i]["frames"]) for i in range(len(train))]
    clip = common.unit_range(ClipRecords(data_dir, "tiny", "test")[0]["frames"])
    want = projected_by_svd(train_clips, clip, config.vae.z_dim)
    round_trip = nnx.jit(lambda vae, x: vae.decode(vae.encode(x)[0], clip=False))
    for part in ("params", "ema"):
      vae = nnx.merge(run.graphdef, jax.device_get(run.state[part]))
      got = np.asarray(round_trip(vae, jnp.asarray(clip)[None]))[0]
      np.testing.assert_allclose(got, want, atol=2e-4, err_msg=part)
  finally:
    run.close()


def test_pixel_weights_are_how_far_each_latent_channel_moves_the_decoded_pixels():
  """Measured through the fitted VAE's decode (nets zeroed): a unit step of one normalised latent
  channel in latent frame 1 moves frames 1-4 by the squared distance its weight says."""
  clips = clips_on_a_plane(6, CONFIG.z_dim, seed=3)
  vae = fitted_vae(clips)
  normalised = nnx.jit(lambda vae, x: vae.normalize(vae.encode(x)[0]))(vae, jnp.asarray(clips[:1]))
  decode = nnx.jit(lambda vae, z: vae.decode(vae.denormalize(z), clip=False))
  base = np.asarray(decode(vae, normalised), np.float64)
  moved = []
  for channel in range(CONFIG.z_dim):
    stepped = normalised.at[0, 1, 0, 0, channel].add(1.0)
    decoded = np.asarray(decode(vae, stepped), np.float64)
    moved.append(np.sum(np.square(decoded - base)[0, 1:5]))
  moved = np.asarray(moved)
  np.testing.assert_allclose(np.asarray(vae.linear_path.pixel_weights(CONFIG.latents_std)),
                             moved / moved.mean(), rtol=1e-3)
  assert moved.max() / moved.min() > 2.0  # the components differ, so the weights do


def test_the_dit_loss_weighs_latent_channels_by_their_pixels_only_with_a_linear_path(data_dir):
  """A model predicting zero velocity for latents that are 1e5 in one channel and 0 elsewhere:
  the loss is 1e10 times that channel's weight over the channel count (the noise adds a few
  millionths of it)."""
  import pytest  # pylint: disable=g-import-not-at-top
  from data_pipeline.errors import InputError  # pylint: disable=g-import-not-at-top
  from fp_jax.train.tasks.dit_task import DiTTask  # pylint: disable=g-import-not-at-top
  from tests.run_helpers import train_config  # pylint: disable=g-import-not-at-top
  with pytest.raises(InputError, match="diffusion.pixel_weighting > 0 needs vae.linear_path"):
    DiTTask(train_config(data_dir, "dit", **{"vae.linear_path": False, "diffusion.pixel_weighting": 0.5}))
  with pytest.raises(InputError, match=r"diffusion.pixel_weighting must be in \[0, 1\], got 1.5"):
    DiTTask(train_config(data_dir, "dit", **{"diffusion.pixel_weighting": 1.5}))
  vae = fitted_vae(clips_on_a_plane(6, CONFIG.z_dim, seed=3))
  pixels = np.asarray(vae.linear_path.pixel_weights(CONFIG.latents_std))
  assert pixels[0] > 2 * pixels[3]
  zero_model = lambda noisy, *args, **kwargs: jnp.zeros_like(noisy)
  batch = {f"drop_{name}": jnp.zeros((2,), bool) for name in ("reference", "expression", "pose", "camera")}
  batch.update(reference_latent=jnp.zeros((2, 2, 2, 4)), normals_latents=jnp.zeros((2, 3, 2, 2, 4)),
               warped_latents=jnp.zeros((2, 3, 2, 2, 4)),
               expression_codes=jnp.zeros((2, 9, 8)), rays=jnp.zeros((2, 3, 2, 2, 8)), head_pose=jnp.zeros((2, 9, 10)))
  for share in (0.0, 0.5, 1.0):
    task = DiTTask(train_config(data_dir, "dit", **{"diffusion.pixel_weighting": share}))
    for channel in (0, 3):
      latents = jnp.zeros((2, 3, 2, 2, 4)).at[..., channel].set(1e5)
      loss, _ = task.loss(zero_model, {"vae": vae}, dict(batch, latents=latents), jax.random.key(0))
      expected = (1.0 - share) + share * pixels[channel]
      np.testing.assert_allclose(float(loss) / 1e10, expected / 4, rtol=1e-4, err_msg=f"{share}, {channel}")
