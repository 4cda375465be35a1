"""The fields every training config has, with CPU-sized defaults; `tiny`, `wan_1_3b` and
`wan_14b` start from here and change what differs. Unknown fields are refused at the command
line (`--config.a.b=...` naming no field is an error), so every knob lives in this one place."""
import ml_collections

from configs.data import input as input_config
from configs.models import dit as dit_config


def training_config(task, input_variant="demo", model_variant="tiny"):
  config = ml_collections.ConfigDict()
  config.task = task  # vae | motion | identity | dit
  config.seed = 0
  config.input = input_config.get_config(input_variant)
  config.model = dit_config.get_config(model_variant)
  # residual, patch_size, decoder_base_dim: Wan 2.2's VAE layout (fp_jax/models/vae.py); Wan 2.1's
  # is residual=False, patch_size=1, decoder_base_dim=0 (the encoder's width). linear_path: a
  # linear code of each latent frame's pixels beside the nets, which a fresh vae run fits from its
  # training clips (fp_jax/models/vae_linear.py); Wan has none, so diffusers cannot load such a VAE.
  config.vae = ml_collections.ConfigDict(dict(base_dim=16, z_dim=16, dim_mult=(1, 2, 4, 4),
                                              num_res_blocks=1, temporal_downsample=(False, True, True),
                                              residual=False, patch_size=1, decoder_base_dim=0,
                                              linear_path=False))
  # mse_weight / l1_weight: the squared error learns faster than L1 (64x64 frames, 200 steps of 8:
  # held-out 21.4 dB against 19.7 with L1 alone). standardise_weight: pull the
  # normalised latents to per-channel mean 0, std 1 (vae_task.py), so `vae.latents_mean/std`
  # describe the VAE trained here as they describe Wan's.
  # crop: train on random crop x crop windows of whole clips (0: whole frames): the convolutions
  # see the clip's full causal length at a fraction of the cost.
  config.vae_loss = ml_collections.ConfigDict(dict(l1_weight=0.0, mse_weight=1.0, kl_weight=1e-6,
                                                   standardise_weight=0.01, crop=0))
  # expression_weight: ~1 / the controls' variance (0.05 in the synthetic world), so the readout's
  # error counts as much as the pose's. invariance_weight: at 1.0 the twin-invariance term kept the
  # expression encoder from learning (training R^2 0.20 against 0.44 at 0.1 after 600 steps,
  # benchmarks/motion.py).
  # expression_pooling, pose_pooling: "mean" (global average) or "mean_keypoints" (plus each
  # channel's expected position, fp_jax/models/motion.py). 250 steps of the tiny motion task
  # (benchmarks/motion.py, held-out): keypoints on the pose encoder, pose error 11.51 against 13.98
  # degrees; on both encoders 12.06, the expression encoder then fitting the training people
  # better (R^2 0.46 against 0.24) but not the held-out ones (-0.18 against -0.14; identity probe
  # 0.52 against 0.43).
  # pose_widths: the pose encoder's own widths (empty: `widths`, as the expression encoder's).
  # expression_parts: close-ups the expression encoder reads beside the face crop, each with a tower
  # of its own (names in data_pipeline/face_crop.py PARTS: "eyes", "eye_l", "eye_r", "mouth", "brows");
  # every task's input cuts them (input.face_crop.parts follows this field).
  # expression_stem_width, expression_standardise: the expression encoder's stride-1 stem (its
  # width; 0: none) and per-crop standardisation of its input (fp_jax/models/motion.py).
  config.motion = ml_collections.ConfigDict(dict(widths=(16, 32, 64, 64), pose_widths=(), expression_dim=512,
                                                 num_controls=16, expression_weight=20.0,
                                                 invariance_weight=0.1, expression_pooling="mean",
                                                 pose_pooling="mean_keypoints", expression_parts=(),
                                                 expression_stem_width=0, expression_standardise=False))
  config.input.face_crop.parts = config.motion.get_ref("expression_parts")
  # blur_share: the share of the motion task's crops blurred, each by a sigma drawn from blur_sigma
  # (pixels of the crop; fp_jax/train/tasks/motion_task.py), so the encoders read the softer crops
  # of generated frames as they read rendered ones. 0: crops as rendered.
  # mirror_share: the share of examples the expression encoder sees mirrored, controls mirrored
  # to match (left and right swapped; motion_task.py); with mirror_pose the pose encoder sees the
  # same mirrored examples (none when mirror_share is 0), their head poses mirrored to match.
  # nuisance_weight: the weight of the latent's distance from a learned linear map of the true
  # controls, against the latents' spread (what else it holds is identity, light, view; motion_task.py).
  # jitter: what the expression encoder's crops are jittered by at every step (fp_jax/train/jitter.py):
  # shift (whole pixels each way), brightness, contrast, gain (relative, each colour channel),
  # noise (standard deviation), in [-1, 1] image units; all 0: none.
  config.motion_loss = ml_collections.ConfigDict(dict(blur_share=0.0, blur_sigma=(0.5, 3.0), mirror_share=0.0,
                                                    mirror_pose=False, nuisance_weight=0.0,
                                                    jitter=dict(shift=0, brightness=0.0, contrast=0.0,
                                                                gain=0.0, noise=0.0)))
  # The identity embedding (fp_jax/train/tasks/identity_task.py) fp-eval scores identity
  # preservation with: an image encoder as the motion encoders are, its output compared by cosine.
  # temperature: the contrastive softmax's; blur_share, blur_sigma: as motion_loss's.
  config.identity = ml_collections.ConfigDict(dict(widths=(16, 32, 64, 64), embedding_dim=64, pooling="mean"))
  config.identity_loss = ml_collections.ConfigDict(dict(temperature=0.1, blur_share=0.0, blur_sigma=(0.5, 3.0)))
  # Workdirs of trained runs. identity: optional, for fp-eval's identity scores alone.
  config.frozen = ml_collections.ConfigDict(dict(vae="", motion="", identity=""))
  # Start the DiT from a diffusers Wan checkpoint (a .safetensors file or a diffusers model
  # folder); the portrait controls, which Wan lacks, keep their zero initialisation. Or start any
  # task from the EMA weights of another run of it (run: its workdir; the same model sections),
  # with a fresh optimizer and input: a VAE's video stage from its image stage (configs/tiny.py).
  config.init = ml_collections.ConfigDict(dict(diffusers_checkpoint="", run=""))
  # pixel_weighting a: each latent channel's squared velocity error weighted by (1 - a) + a * w,
  # w being how far the channel moves the decoded pixels (mean 1; read from the frozen VAE's linear
  # path, so a > 0 needs vae.linear_path; fp_jax/models/vae_linear.py). At a = 1 the loss is the
  # pixels' error, but the channels that move pixels least are then hardly trained, and an
  # untrained channel leaves the sampler's starting noise in the video. The demo's DiT over its
  # linear-path VAE (one run each, fp-eval, 4 held-out clips): a = 0, PSNR 14.80 dB and pose error
  # 11.80 degrees; a = 1, 16.08 and 14.68; a = 0.5, 16.45 and 12.01.
  config.diffusion = ml_collections.ConfigDict(dict(shift=3.0, timestep_distribution="logit_normal",
                                                    pixel_weighting=0.0, max_level=1.0))
  config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, context=1, tensor=1))
  config.logical_axis_rules = None  # None: fp_jax/parallel/sharding.py's defaults
  config.optim = ml_collections.ConfigDict(dict(
      learning_rate=1e-3, warmup_steps=20, schedule="cosine", final_fraction=0.1, b1=0.9, b2=0.99,
      eps=1e-8, weight_decay=0.01, clip_norm=1.0, accumulation=1,
      mu_dtype="float32",  # AdamW's first moment; bfloat16 halves it (pods: HBM per chip)
      # Parameters held still: regular expressions over names such as `linear_path/encode_kernel`
      # (a whole name must match). A run resumes only under the patterns it was saved with.
      frozen=(),
      # Parameters updated by Muon instead of AdamW (fp_jax/train/optimizer.py): regular
      # expressions over names as `frozen`'s, each naming kernels (matrices or convolution windows;
      # a one-line error names any other). Empty: AdamW throughout.
      muon=()))
  config.ema_decay = 0.99  # the cap: the decay warms up as (1 + step) / (10 + step) (fp_jax/train/step.py)
  # State parts kept in pinned host memory between steps: "ema", "opt_state", "params"
  # (fp_jax/train/offload.py).
  config.offload_state = ()
  config.total_steps = 300
  config.log_every = 10
  config.checkpoint_every = 100
  config.keep_checkpoints = 3  # the last N ...
  config.keep_period = 0  # ... plus every M-th step (0: none)
  config.max_bad_steps = 10  # non-finite steps in a row before the run stops
  # Validation loss on `eval.split` and a sample video every `eval.every` steps (0: never).
  config.eval = ml_collections.ConfigDict(dict(every=100, split="validation", batches=2,
                                               sample_steps=4, sample_fps=8.0))
  # fp-sample: resolution, solver and guidance (fp_jax/diffusion/guidance.py). A schedule is a
  # number or dict(start, end, shape=constant|linear|cosine) over sampling progress 0 -> 1.
  config.sample = ml_collections.ConfigDict(dict(
      height=64, width=64, fps=25.0, sampler="multistep", steps=20, shift=3.0,
      # The noise level sampling starts from: 1 is pure noise; below 1 the start is the portrait
      # (warped onto each frame, with model.warped_reference) noised to that level (SDEdit).
      start_level=1.0,
      window_overlap=1,  # latent frames shared by neighbouring windows of a long video
      guidance=dict(mode="hybrid", scale=4.0,
                    # reference strong early (identity), motion strong late (expression detail)
                    reference=dict(start=3.0, end=1.5, shape="cosine"),
                    motion=dict(start=1.5, end=3.0, shape="cosine"))))
  # A step that has not finished after this many seconds stops the run with an error (0: off);
  # it catches a peer process that hangs while its heartbeat lives on.
  config.watchdog_seconds = 1800.0
  # Peak FLOP/s of one device for MFU; 0: known accelerators from a table, CPUs measured.
  config.device_peak_flops = 0.0
  return config
