r"""Tiny FactorPortrait training on CPU: tests and `make demo`. One file, four tasks.

  fp-data --config=configs/data/synthetic.py:demo --data_dir=outputs/demo/data
  fp-train --config=configs/tiny.py:vae_image --workdir=outputs/demo/vae_image   # on one device
  fp-train --config=configs/tiny.py:vae --workdir=outputs/demo/vae --config.init.run=outputs/demo/vae_image
  fp-train --config=configs/tiny.py:motion --workdir=outputs/demo/motion   # on one device
  fp-train --config=configs/tiny.py:identity --workdir=outputs/demo/identity
  fp-cache-latents --config=configs/tiny.py:dit --out=outputs/demo/latents \
      --config.frozen.vae=outputs/demo/vae --config.frozen.motion=outputs/demo/motion
  fp-train --config=configs/tiny.py:dit --workdir=outputs/demo/dit \
      --config.frozen.vae=outputs/demo/vae --config.frozen.motion=outputs/demo/motion \
      --config.input.cached_latents=outputs/demo/latents
  fp-sample --config=configs/tiny.py --workdir=outputs/demo/dit --image=clip:test/0@0 \
      --driving=clip:test/5 --mode=all-moving --out=outputs/demo/all-moving.mp4 \
      --config.frozen.vae=outputs/demo/vae --config.frozen.motion=outputs/demo/motion
  fp-eval --config=configs/tiny.py --workdir=outputs/demo/dit --clips=8 --out=outputs/demo/report.json \
      --config.frozen.vae=outputs/demo/vae --config.frozen.motion=outputs/demo/motion \
      --config.frozen.identity=outputs/demo/identity
`make demo` runs exactly these (fp-sample with all six modes at once; the VAE's image stage, the
motion run, fp-sample and fp-eval on one device), in 50 to about 85 minutes on a 2-core machine,
as fast as its cores are that hour. Its report as this config stands (7 December 2026, 8 test
clips of 4 people): PSNR 27.481 dB against the repeated portrait's 22.671, pose error 3.239
degrees against 12.921, identity similarity 0.921.

Each setting below says why in a line or two; what it was measured against, and every make demo
run's stage minutes and report, are in docs/tiny_runs.md under the setting's name. Any field can
be overridden: `--config.optim.learning_rate=3e-4 --config.total_steps=200`. Every field and its
meaning: configs/common.py.
"""
from configs import common


def get_config(arg="dit"):
  # vae_image: the VAE's image stage, a vae run on single frames that the vae run starts from.
  config = common.training_config("vae" if arg == "vae_image" else arg, input_variant="demo", model_variant="tiny")
  # The VAE starts as the training clips' principal components (fp_jax/models/vae_linear.py):
  # held-out PSNR after 150 steps 26.15 dB against 20.45 without (benchmarks/vae.py).
  config.vae.linear_path = True
  # 64 latent channels, not Wan's 16 (a departure for the demo): a 16-channel linear code of a
  # latent cell's 768 pixels tops out near 26 dB; with 64 the validation clips through the VAE
  # score 31.5 dB against 27.1 with 16, and the DiT follows.
  config.vae.z_dim = 64
  config.model.in_channels = config.model.out_channels = 64
  # The DiT's loss: half the latents' error, half the pixels' (fp-eval 27.926 dB against 26.073
  # on latents alone).
  config.diffusion.pixel_weighting = 0.5
  # The motion encoders every task builds (the motion run's, the frozen one of the others). Width
  # buys pose, not expression, so only the pose encoder is twice as wide.
  config.motion.pose_widths = (32, 64, 128, 128)
  # The expression encoder reads a close-up of each eye and of the mouth beside the face crop,
  # each with a tower of its own: held-out R^2 0.564 against 0.334 from the face crop alone
  # (benchmarks/expression_fit.py, 1500 steps).
  config.motion.expression_parts = ("eye_l", "eye_r", "mouth")
  if arg in ("vae", "vae_image"):
    # Whole 17-frame clips, as the DiT and evaluation use them: a causal VAE trained on shorter
    # windows reconstructs the later latent frames of a clip ~7 dB worse (benchmarks/vae.py).
    # 32x32 windows of them cost a quarter of whole frames, at batch 8 (one clip a device).
    config.vae_loss.crop = 32
    # Without the linear path, 150 steps from inflated kernels (benchmarks/vae.py, held-out PSNR):
    # 20.45 dB at 1e-3 against 20.19 at 2e-3; from He-normal kernels 18.88 against 18.14.
    config.optim.learning_rate = 1e-3
    # make demo's VAE: 300 steps on clips (~1.7 s a step on 8 simulated devices) from the image
    # stage's run (`--config.init.run`): 30.67 dB on held-out clips.
    config.total_steps = 300
    if arg == "vae_image":
      # The image stage, as Wan's VAE was first trained as an image VAE of the same layout: single
      # frames (a step costs about a tenth of a clip's), the linear path held still (on one frame
      # it sees each latent frame's four copies of it, and moving it there spoils a clip's later
      # frames). With the clip stage after it: 30.67 dB against 29.73 after 1000 steps of clips.
      config.input.window.num_frames = 1
      config.optim.frozen = (r"linear_path/.*",)
      config.total_steps = 3000
  elif arg == "motion":
    # Peak learning rate 3e-3: expression R^2 0.367 against 0.331 at the common 1e-3.
    config.optim.learning_rate = 3e-3
    # Muon on the encoders' convolution kernels, AdamW on the rest: expression R^2 0.687 against
    # 0.639, pose error 1.96 against 2.89 degrees (benchmarks/motion.py).
    config.optim.muon = (r".*/(stem|down|conv1|conv2)/kernel",)
    # The latent held to what its true controls predict: identity probe 0.228 against 0.449
    # (chance 0.25).
    config.motion_loss.nuisance_weight = 0.1
    # 1000 steps, 31 minutes on one device; 3000 steps reach R^2 0.775 against 0.726 in 87.
    config.total_steps = 1000
    # One crop each of many people drawn anew (data_pipeline/fresh_people.py), kept by the input
    # workers after their first render: the dataset's 32 training people are memorised where these
    # are not. Under Muon 10000 are learned by heart within the 1000 steps; 30000: R^2 0.726
    # against 0.687. Until every person has been rendered once, the steps wait for renders.
    config.input.fresh_people = 30000
    config.input.fresh_people_cache = 30000
    # Half the examples reach the encoders mirrored (the pose encoder's poses mirrored with them):
    # a mirrored person is one more person to learn from (R^2 0.157 against 0.025 on 5000 people).
    config.motion_loss.mirror_share = 0.5
    config.motion_loss.mirror_pose = True
    # Jitter of the expression encoder's crops (motion_loss.jitter) is left off: it keeps people
    # from being learned by heart but slows the learning more than that repays, here (unexplained
    # share 0.518 at step 700 against 0.405) and over 3000 steps (R^2 0.736 against 0.775).
    config.input.global_batch_size = 128
    # Three in four crops rendered at crop resolution, the rest cut from the 64x64 frames: the
    # encoders learn expression detail and still read the small frames evaluation gives them
    # (R^2 0.629 against 0.607 with one in two).
    config.input.face_crop.source = "mixed"
    config.input.face_crop.stored_share = 0.75
  elif arg == "identity":
    # fp-eval's identity embedding: 64 people a step, each seen twice (fp_jax/train/tasks/identity_task.py),
    # half the crops cut from frames as evaluation cuts them. Kept by the input workers after their
    # first render, as the motion task's people are. 3.7 minutes; on the held-out people of the
    # validation and test splits, pairs of crops of different clips (benchmarks/identity.py): ROC
    # AUC 0.971, equal error rate 0.082, identification 0.838 (raw pixels: 0.600, 0.437, 0.113; the
    # untrained encoder 0.549, 0.462, 0.175); the train split's people 0.949.
    config.input.fresh_people = 4000
    config.input.fresh_people_cache = 4000
    config.input.identity_views = 2
    config.input.global_batch_size = 64
    config.input.face_crop.source = "mixed"
    config.total_steps = 300
  elif arg == "dit":
    # The reference on every latent frame (fp_jax/models/dit_config.py): held-out validation loss
    # 0.32 against 0.57 with it on the first frame only.
    config.model.reference_frames = "all"
    # The flow on each frame's difference from the reference (fp_jax/models/preconditioning.py):
    # fp-eval PSNR 21.65 dB against 20.62 with the plain velocity.
    config.model.reference_residual = True
    # The portrait warped onto every frame through the mesh, read beside the normal maps and the
    # base the residual starts from: PSNR 22.65 dB against 21.64, pose error 10.78 against 16.90
    # degrees.
    config.model.warped_reference = True
    config.input.warped_reference = True
    # Guidance on the motion controls only: a reference scale above 1 pushes a model that reads
    # the portrait this well off its data. A motion scale of 1.5 is the better of 1.5 and 2 on
    # both fp-eval's PSNR and its pose error.
    config.sample.guidance.mode = "motion"
    config.sample.guidance.motion = dict(start=1.5, end=1.5, shape="constant")
    # A refiner of the warp: trained on noise levels up to 0.5 only, sampled from the warped
    # portrait noised to 0.3 (SDEdit; fp_jax/sample/pipeline.py). The lower the start, the more of
    # the warp is kept; 0.5 leaves the model half the noise range.
    config.diffusion.max_level = 0.5
    config.sample.start_level = 0.3
    # The flow's timestep shift stays at 3 (diffusion.shift, sample.shift): lower shifts trade PSNR
    # for pose, and none comes near the bar.
    # Rays go to the devices in float16 (as on pods): the batch's folded rays are most of its bytes,
    # and the steps waited on them (300 steps: 87 and 85 s against 96 and 109 with float32; the
    # same fp-eval).
    config.input.rays_dtype = "float16"
    # ~0.2 s a step from the latent cache.
    config.total_steps = 2000
    config.eval.every = 1000
  return config
