r"""Tiny FactorPortrait training on CPU: tests and `make demo`. One file, three tasks.

  fp-data --config=configs/data/synthetic.py:demo --data_dir=outputs/demo/data
  fp-train --config=configs/tiny.py:vae --workdir=outputs/demo/vae
  fp-train --config=configs/tiny.py:motion --workdir=outputs/demo/motion
  fp-cache-latents --config=configs/tiny.py:dit --out=outputs/demo/latents \
      --config.frozen.vae=outputs/demo/vae --config.frozen.motion=outputs/demo/motion
  fp-train --config=configs/tiny.py:dit --workdir=outputs/demo/dit \
      --config.frozen.vae=outputs/demo/vae --config.frozen.motion=outputs/demo/motion \
      --config.input.cached_latents=outputs/demo/latents
  fp-sample --config=configs/tiny.py --workdir=outputs/demo/dit --image=clip:test/0@0 \
      --driving=clip:test/5 --mode=all-moving --out=outputs/demo/all-moving.mp4 \
      --config.frozen.vae=outputs/demo/vae --config.frozen.motion=outputs/demo/motion
  fp-eval --config=configs/tiny.py --workdir=outputs/demo/dit --out=outputs/demo/report.json \
      --config.frozen.vae=outputs/demo/vae --config.frozen.motion=outputs/demo/motion
`make demo` runs exactly these (fp-sample with all six modes at once), in about 24 minutes on a
2-core machine (23 min 5 s from empty outputs with the environment set up; 22 min 53 s from an
empty checkout before the DiT's every-frame reference), minutes per stage: set-up 1.5, dataset and
previews 1 (clips rendered by 2 processes), VAE 2.5, motion 7.2, latent cache 1.1, DiT, sampling
and evaluation 10. Any field can be overridden: `--config.optim.learning_rate=3e-4
--config.total_steps=200`. Every field and its meaning: configs/common.py.
"""
from configs import common


def get_config(arg="dit"):
  config = common.training_config(arg, input_variant="demo", model_variant="tiny")
  # Every task's VAE (the vae run's, the frozen one of the others): the VAE starts as the training
  # clips' principal components (fp_jax/models/vae_linear.py). Held-out PSNR after 150 steps
  # 26.15 dB against 20.45 without (benchmarks/vae.py); the nets add little at the demo's budget,
  # so its minutes go to the DiT instead.
  config.vae.linear_path = True
  # The DiT's loss: half the latents' error, half the pixels' (the demo's DiT as below, fp-eval:
  # 20.40 dB and 9.94 degrees; unweighted 19.47 and 11.50).
  config.diffusion.pixel_weighting = 0.5
  if arg == "vae":
    # Whole 17-frame clips, as the DiT and evaluation use them: a causal VAE trained on shorter
    # windows reconstructs the later latent frames of a clip ~7 dB worse (benchmarks/vae.py).
    # 32x32 windows of them cost a quarter of whole frames, at batch 8 (one clip a device).
    config.vae_loss.crop = 32
    # Without the linear path, 150 steps from inflated kernels (benchmarks/vae.py, held-out PSNR):
    # 20.45 dB at 1e-3 against 20.19 at 2e-3; from He-normal kernels 18.88 against 18.14.
    config.optim.learning_rate = 1e-3
    config.total_steps = 50  # ~2 s a step on 8 simulated devices
  elif arg == "motion":
    # ~0.6 s a step, the twins' rendering included: 7.5 minutes. Held-out pose error (benchmarks/
    # motion.py): 11.51 degrees after 250 steps, 8.10 after 400.
    config.total_steps = 400
    # Half the crops rendered at crop resolution, half cut from the 64x64 frames: the encoders
    # learn expression detail and still read the small generated frames evaluation gives them.
    config.input.face_crop.source = "mixed"
    # Four frames a window worn again by new people: without them the encoders learn the training
    # identities (held-out pose error 16.8 against 9.8 degrees, benchmarks/motion.py).
    config.input.expression_twins = 4
  elif arg == "dit":
    # The reference on every latent frame (fp_jax/models/dit_config.py): at 2000 steps the held-out
    # validation loss 0.32 against 0.57 with it on the first frame only, and fp-eval (4 held-out
    # clips, guidance off) PSNR 20.59 dB and pose error 10.53 degrees against 19.42 and 13.41.
    # A wider and deeper DiT (dim 128, 4 layers) in the same minutes (800 steps): 20.23, 12.18.
    config.model.reference_frames = "all"
    # Guidance on the motion controls only: a reference scale above 1 pushes a model that reads
    # the portrait this well off its data (the default hybrid schedule: 17.84 dB, 11.13 degrees;
    # motion scale 1 (guidance off): 20.59 dB, 10.53 degrees; 1.5: 20.57, 10.10; 2: 20.40, 9.94;
    # 3: 19.82, 9.16).
    config.sample.guidance.mode = "motion"
    config.sample.guidance.motion = dict(start=2.0, end=2.0, shape="constant")
    # ~0.2 s a step from the latent cache.
    config.total_steps = 2000
    config.eval.every = 1000
  return config
