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
`configs/tiny.py:vae_image` is the VAE's image stage, which the vae run starts from
(`--config.init.run=RUN`): with its 300 steps on clips after it the VAE passes 30 dB on held-out
clips (figures under arg == "vae_image").
`make demo` runs exactly these (fp-sample with all six modes at once; the VAE's image stage,
the motion run, fp-sample and fp-eval on one device), in 50 to about 85 minutes on a 2-core
machine, as fast as its cores are that hour.
The run of 7 December 2026 with the VAE in two stages (its dataset, motion and identity runs those
of a make demo of the same hour, whose stages took 0.8, 27.4 and 2.9 minutes), minutes per stage
(from its files' times): previews 0.1, VAE image stage 11.2, VAE on clips 8.9, latent cache 2.8,
DiT 7.0, sampling 0.5, evaluation 1.8; about 63 in all with those three. Its report on 8 test
clips of 4 people: PSNR 27.580 dB against the repeated portrait's 22.671 (+4.91), pose error 3.063
against 12.921 degrees (0.24x), identity similarity 0.920; the warp through the VAE 29.085 dB and
2.784 degrees, the real clips 31.003 and 2.126. The make demo of that hour with the VAE of 50
steps on clips alone (1.7 minutes; 43.1 in all): PSNR 26.996 dB, pose error 3.079 degrees, the
warp 28.134 dB, the real clips 29.758. A second run of the latent cache, DiT and evaluation on the
same two-stage VAE: PSNR 27.557 dB, pose error 3.067 degrees.
The same with the motion run under Muon (optim.muon, as kept; the run of 7 December above with its
motion run swapped for that one and its latent cache, DiT, sampling and evaluation redone through
make demo, 11.6 minutes): PSNR 27.587 dB, SSIM 0.799, identity similarity 0.922, each as before;
pose error 3.376 degrees and the real clips through the VAE 2.348 (against 3.063 and 2.126), each
read by its own pose encoder: the new one reads the test split's crops better (benchmarks/motion.py:
1.96 degrees against 2.89; 2.21 from crops cut from frames) but the VAE's round trips worse;
expression error 2.233, the real clips 2.077 (against 2.277 and 2.168).
The same with the motion run of 30000 people on one device (as kept; make demo into that folder
with its motion, latent cache, DiT, sampling and evaluation redone, 7 December 2026): motion 30.8
minutes, latent cache 2.3, DiT 6.1, sampling 0.4, evaluation 1.5. PSNR 27.481 dB, SSIM 0.794
(against 27.580 and 0.799; two DiT runs on one set of codes differed by 0.023 dB), identity
similarity 0.921; pose error 3.239 degrees, the real clips through the VAE 2.138 (against 3.063
and 2.126 with the AdamW run, 3.376 and 2.348 with Muon on 10000 people); expression error 2.083,
the real clips 1.872 (against 2.277 and 2.168), each read by its own encoders.
The run of 6 December 2026 in world 1.7.0 (a nose wrinkle lifts the nostrils and the upper lip),
from an empty folder, benchmarks/motion.py beside its identity stage: dataset and previews 1.4,
VAE 1.7, motion 22.0, identity 3.0, latent cache 2.0, DiT 4.8, sampling 0.4, evaluation 1.2,
36.4 in all (from its files' times). Its report on 8 test clips of 4 people: PSNR 27.005 dB
against the repeated portrait's 22.671 (+4.33), pose error 3.134 against 12.834 degrees (0.24x),
identity similarity 0.921; the warp through the VAE 28.134 dB and 2.976 degrees, the real clips
29.758 and 2.228. Its motion run (benchmarks/motion.py): expression R^2 0.639 (0.679 by its own
read-out; nose wrinkle 0.29 against world 1.6.0's -0.31), pose error 2.89 degrees, identity
probe 0.206 (chance 0.25). The runs below are of older worlds.
The run of 6 December 2026 with each eye's own close-up (world 1.6.0), from an empty folder, with
an expression encoder benchmark and benchmarks/motion.py running beside it for most of its
minutes: dataset and previews 1.3, VAE 2.8, motion 27.7, identity 3.5, latent cache 2.7, DiT 5.6,
sampling 0.4, evaluation 1.2, 45 in all (from its files' times). Its report on 8 test clips of 4
people: PSNR 26.960 dB against the repeated portrait's 22.677 (+4.28), pose error 2.828 against
12.449 degrees (0.23x), identity similarity 0.917; the warp through the VAE 28.139 dB and 2.729
degrees, the real clips 29.752 and 2.056. Its motion run (benchmarks/motion.py): expression R^2
0.607 against 0.555 with the close-up of both eyes, pose error 2.94 degrees, identity probe 0.213
(chance 0.25). The same demo with the motion run taking three in four of its crops rendered at
crop resolution (input.face_crop.stored_share, as kept; motion figures below; its latent cache,
DiT, sampling and evaluation redone, minutes 1.8, 4.4, 0.3, 1.2): PSNR 26.949 dB (+4.27), pose
error 3.094 against 12.832 degrees (0.24x), identity similarity 0.917; the warp through the VAE
28.139 dB and 2.972 degrees, the real clips 29.752 and 2.234. Its pose errors are the new pose
encoder's readings (the real clips' 2.234 against 2.056), so they are not comparable with the
run before; the DiT's PSNR is unchanged.
The run of 6 December 2026 with the expression encoder reading close-ups of the eyes and the mouth
(world 1.5.0, which stores them), from an empty folder, minutes per stage (from its files' times):
dataset and previews 1.0, VAE 2.0, motion 20.9 (1.25 s a step with the close-ups, 0.73
before), identity 2.7, latent cache 2.6, DiT 7.2, sampling 0.7, evaluation 2.1 (its DiT and
evaluation beside a benchmark), 40 in all. Its report on 8 test clips of 4 people: PSNR 26.847
dB against the repeated portrait's 22.677 (+4.17), pose error 2.903 against 13.691 degrees
(0.21x), identity similarity 0.916; the warp through the VAE 28.139 dB and 2.692 degrees, the
real clips 29.752 and 2.242. Its motion run (benchmarks/motion.py): expression R^2 0.544 against
the run before's 0.367, pose error 3.00 degrees, identity probe 0.449 (chance 0.25). The same
demo with the motion run of motion_loss.nuisance_weight 0.1 (as kept; its latent cache, DiT,
sampling and evaluation redone, minutes 3.1, 6.7, 3.0, 1.7, the DiT beside a benchmark): PSNR
26.900 dB (+4.22), pose error 2.867 against 13.575 degrees (0.21x), identity similarity 0.915; the
warp through the VAE 28.139 dB and 2.604 degrees, the real clips 29.752 and 2.143.
The run of 5 December 2026 with the wider pose encoder and 1000 motion steps (the motion config
below), from an empty folder, minutes per stage (from its files' times): dataset and previews
0.7, VAE 1.9, motion 13.2, identity 2.9, latent cache 2.0, DiT 5.9, sampling 0.5, evaluation 1.5,
28.5 in all (it ran as two `make demo`s: the first stopped at the latent cache on a config error
since mended, the second resumed). Its report on 8 test clips of 4 people: PSNR 26.974 dB
against the repeated portrait's 22.677 (+4.30), pose error 3.261 against 13.996 degrees (0.23x),
identity similarity 0.919; the warp through the VAE 28.139 dB and 3.050 degrees, the real clips
29.752 dB and 2.249 degrees. The pose errors are the new pose encoder's readings, so they are
not comparable with the figures of the runs before it, whose motion stage took 8.6 minutes.
The same demo with the motion run's peak learning rate at 3e-3 (as kept; its motion, latent
cache, DiT, sampling and evaluation redone, minutes 12.1, 1.7, 5.0, 0.4, 1.2 on a faster hour):
PSNR 26.922 dB (+4.25), pose error 2.878 against 12.635 degrees (0.23x), identity similarity
0.917; the warp through the VAE 28.139 dB and 2.802 degrees, the real clips 29.752 and 2.210.
An earlier run of that day (world 1.4.0, warp version 3, 64 latent channels), from an empty
folder, took 23 min 12 s, minutes per stage (from its files' times): dataset and previews 0.65,
VAE 2.7, motion 8.6 (10000 people), latent cache 2.7 (each clip's 5 reference candidates warped
and encoded), DiT 6.5, sampling 0.5, evaluation 1.6 (8 clips). Its report on 8 test clips of 4
people: PSNR 27.006 dB against the repeated portrait's 22.677 (+4.33), pose error 3.627 against
13.552 degrees (0.27x); the warped portrait through the VAE 28.139 dB and 3.339 degrees (the DiT
scores below the warp it reads); the real clips through it 29.751 dB and 2.722 degrees. The run
before (32 channels, warp version 2): +2.11 dB, 0.51x. Until the evaluation took one clip of each
person in turn it scored the split's first 4 clips, all one person's. On a slow afternoon a whole
run (then with 10000 people, each input worker rendering every one) took 39 min 16 s: dataset
1.4, VAE 4.3, motion 14.8 (13 of them for the first 400 steps, which waited for renders), latent
cache 2.4, DiT 13.0, sampling 1.0, evaluation 2.3. Its unchanged stages ran 1.8x slower than that
evening's (VAE 4.3 against 2.4, DiT 13.0 against 7.0), which would put a run at about 42 minutes
on such an afternoon. The identity stage (added after those runs) took 3.7 minutes alone, and the
whole demo with it, from an empty folder, 20 min 26 s on the evening of 5 December 2026 (a fast
hour: its report equal to the run above to the third decimal); on such an afternoon's cores the
identity stage would add about 7 minutes to the 42, and the longer motion stage about 8 more. Any field can be overridden: `--config.optim.learning_rate=3e-4
--config.total_steps=200`. Every field and its meaning: configs/common.py.
"""
from configs import common


def get_config(arg="dit"):
  # vae_image: the VAE's image stage, a vae run on single frames that the vae run starts from.
  config = common.training_config("vae" if arg == "vae_image" else arg, input_variant="demo", model_variant="tiny")
  # Every task's VAE (the vae run's, the frozen one of the others): the VAE starts as the training
  # clips' principal components (fp_jax/models/vae_linear.py). Held-out PSNR after 150 steps
  # 26.15 dB against 20.45 without (benchmarks/vae.py). make demo trains it in two stages, single
  # frames then clips (arg == "vae_image"): 30.67 dB, and the DiT on its latents 27.557 and
  # 27.580 dB against 26.996 on those of the 50 steps of clips alone it ran before
  # (docs/architecture.md). With 16 channels the nets reach 27.95 dB after 3000 steps (43 minutes).
  config.vae.linear_path = True
  # 64 latent channels, not Wan's 16 (a departure for the demo): a 16-channel linear code of a
  # latent cell's 768 pixels tops out near 26 dB, a 32-channel one near 28 (numpy PCA on the demo's
  # clips). The same demo runs (the VAE, the latent cache and the DiT redone, the motion run kept),
  # fp-eval of 8 clips of 4 people, seed 0, start level 0.3, validation; test:
  #   channels   real clips via the VAE   warp via the VAE   the DiT (dB, degrees)
  #   16         27.082; 25.937 dB        25.615; 24.351 dB  24.949, 6.403; 23.786, 7.527 (from 0.5)
  #   32         29.165; 27.797           26.728; 25.340     26.010, 4.947; 24.784, 6.857
  #   64         31.472; 29.751           27.445; 25.976     26.205, 4.829; 25.063, 6.251
  # The VAE's training PSNR after its 50 steps: 26.56 dB with 32 channels, 28.51 with 64. Same
  # stage minutes (VAE 2.3, latent cache 2.6, DiT 6.8).
  config.vae.z_dim = 64
  config.model.in_channels = config.model.out_channels = 64
  # The demo's fp-eval (4 held-out clips): PSNR 21.69 dB against the repeated portrait's 22.35; pose
  # error 15.37 against its 17.52 degrees (0.88x). The DiT's reference_residual figures below were
  # measured with the motion encoders of 400 steps (21.65 dB, 15.11 against 17.38 degrees), the
  # others with those of the clips (whose pose encoder read the baseline's motion as 10.71).
  # The DiT's loss: half the latents' error, half the pixels' (the demo's DiT as below, fp-eval:
  # 20.40 dB and 9.94 degrees; unweighted 19.47 and 11.50). Checked again with the 64-channel VAE
  # and warp version 3 (fp-eval, 8 validation clips of 4 people, seed 0): 0.5, 27.926 dB and 4.153
  # degrees; 0, 26.073 and 4.732; 1, 27.884 and 4.009 (the warp through the VAE: 29.248, 3.195).
  config.diffusion.pixel_weighting = 0.5
  # The motion encoders every task builds (the motion run's, the frozen one of the others): the
  # pose encoder twice as wide as the expression encoder (figures under arg == "motion").
  config.motion.pose_widths = (32, 64, 128, 128)
  # The expression encoder reads close-ups of the eyes and the mouth beside the face crop, each with
  # a tower of its own (fp_jax/models/motion.py; every task cuts them: input.face_crop.parts). In the
  # expression encoder alone on 10000 fresh people (benchmarks/expression_fit.py --people=10000
  # --val_people=1000 --parts=eyes,mouth [--face_only]), held-out R^2 at 500, 1000, 1500 steps:
  # 0.421, 0.510, 0.535 against 0.237, 0.317, 0.334 with the face crop alone (the same people); gaze
  # yaw 0.46 against -0.01, jaw 0.91 against 0.56, smiles 0.75 against 0.50, pucker 0.57 against 0.05.
  # A close-up of each eye instead of one of both (--parts=eye_l,eye_r,mouth; world 1.6.0 stores
  # them): 0.452, 0.550, 0.564 at the same steps, gaze yaw 0.61 against 0.46, gaze pitch 0.29
  # against 0.0, squint 0.45 against 0.31. make demo's motion run with them (benchmarks/motion.py):
  # R^2 0.607 against 0.555 (0.631 against 0.584 by its own read-out; gaze yaw 0.49 against 0.23,
  # gaze pitch 0.30 against -0.05, squint 0.48 against 0.17), pose error 2.94 against 2.95 degrees,
  # identity probe 0.213 against 0.228 (chance 0.25). Measured and not kept: keypoint pooling
  # beside the mean (motion.expression_pooling="mean_keypoints"), in the encoder alone 0.441, 0.554,
  # 0.582 at 500, 1000, 1500 steps (gaze yaw 0.67), and as this motion run's R^2 0.619 against
  # 0.607, pose error 2.97 against 2.94 degrees, identity probe 0.265 against 0.213: a small gain,
  # one run each, with more of the identity. The encoder alone over 3000 steps (mean pooling):
  # 0.443, 0.523, 0.555, 0.560 at 500 to 2000 steps while the training people's R^2 rose to 0.689:
  # past ~1500 steps 10000 people are learned by heart. Also measured and left off (docs/training.md):
  # a stride-1 stem of 16 (motion.expression_stem_width) and standardised crops
  # (motion.expression_standardise), with the motion run's stored_share at 0.75 as kept: R^2
  # 0.643 against 0.629 without them, pose error 2.54 against 2.92 degrees, identity probe 0.471
  # against 0.257.
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
    # stage's run (`--config.init.run`; figures under arg == "vae_image").
    config.total_steps = 300
    if arg == "vae_image":
      # The VAE's image stage, as Wan's VAE was first trained as an image VAE of the same layout:
      # single frames (a step costs about a tenth of a 17-frame one), the linear path held still
      # (on one frame it sees each latent frame's four copies of it, and moving it there spoils
      # the later frames of a clip). A vae run then starts from it (`--config.init.run=RUN`).
      # These 64 channels (benchmarks/vae.py --image_steps=3000 --steps=300, held-out test clips):
      # 30.67 dB (the path alone 29.53; first frame 32.72, later latent frames 30.41 to 30.90) in
      # about 20 minutes, 8.5 of them this stage's, against 29.73 after 1000 steps of clips alone;
      # after this stage alone 29.88 (the first frame 32.63, the later ones 29.6 to 30.1): the
      # clip stage is what carries its detail to the frames a latent frame holds four of. Then 150
      # on clips: 30.49 (13 minutes in all); 1500 image steps then 100 on clips: 29.82. With Wan's
      # 16 channels (--z_dim=16 --image_steps=5000 --steps=300): 28.31 dB; with 1000 clip steps
      # 28.53 (docs/architecture.md).
      config.input.window.num_frames = 1
      config.optim.frozen = (r"linear_path/.*",)
      config.total_steps = 3000
  elif arg == "motion":
    # One crop each of many people drawn anew (data_pipeline/fresh_people.py; 30000, set below),
    # 128 a step, kept by the input workers after their first render: the dataset's 32 training
    # people are memorised (held-out pose error 8.10 degrees after 400 steps of its clips with 4
    # twin frames a window, expression R^2 -0.11) where these are not (5.02 degrees, R^2 -0.05
    # after 400 steps of 10000 people; benchmarks/motion.py). Until every person has been rendered
    # once (the input workers share their renders), the steps wait for renders. Half the examples
    # reach the expression encoder mirrored (motion_loss.mirror_share), so under AdamW even 10000
    # people were not memorised (under Muon they are: below).
    # 600 steps, measured with benchmarks/motion.py --workdir=RUN --data_dir=DATA on one morning, the
    # last three rows in a trial world with every expression twice as strong (world 1.4.0 as kept
    # leaves blinks as they were and cheek puffs 1.5x); columns: held-out expression R^2 by the
    # fixed-strength ridge (expression_r2_fixed_ridge); by the run's own read-out; pose error;
    # identity probe (chance 0.25); the stage's minutes:
    #   5000 people, the older world:  R^2 -0.081;   --  ; 4.83 degrees; 0.38; 8.9 (another day)
    #   5000 people:                   R^2  0.025;   --  ; 4.90 degrees; 0.07; 7.1
    #   5000 people, mirrored:         R^2  0.157; 0.284; 4.91 degrees; 0.38; 7.5
    #   10000 people, mirrored:        R^2  0.170; 0.304; 4.65 degrees; 0.27; 8.3
    # The fresh people's validation loss tells the same: the share of the expression controls'
    # variance left unexplained ends at 0.96, 0.86 and 0.82 in the last three rows (and rose in
    # the unmirrored run after its best, 0.88 at step 300: memorised people). This config in world
    # 1.4.0 (make demo's run): R^2 0.092 by the fixed ridge, 0.239 by the cross-validated one
    # (expression_r2), 0.281 by its own read-out; pose error 4.64 degrees; probe 0.29; 8.2 minutes.
    # Wider encoders (motion.widths (32, 64, 128, 128), the rest as kept; benchmarks/motion.py, one
    # run each, 5 December 2026, against this config's R^2 0.239, pose error 4.55, probe 0.294):
    # 600 steps, R^2 0.253, pose error 3.18 degrees, probe 0.485, about 11 minutes; 1000 steps, R^2
    # 0.314, pose error 2.78 (2.98 from crops cut from frames), probe 0.382, about 15 minutes. Width
    # buys pose, not expression, so only the pose encoder is widened (motion.pose_widths): 1000
    # steps, R^2 0.331 (0.387 by its own read-out), pose error 2.74 degrees (2.92 from crops cut
    # from frames), probe 0.375 (1.5x chance), 14 minutes (the first ~80 steps wait for renders,
    # then 0.64 s a step against 0.44 with the narrow pose encoder). The 400 steps beyond 600 are
    # what reads blinks (R^2 0.51 and 0.48 against 0.07 and 0.08) and the jaw (0.30 against 0.09).
    # Also measured at 600 steps: motion.expression_pooling="grid" (where on the face features fire),
    # R^2 0.234, probe 0.485. (motion.pose_widths is set above, for every task.)
    # A peak learning rate of 3e-3 against the common 1e-3 (1000 steps, the rest as kept): R^2
    # 0.367 against 0.331 (0.421 against 0.387 by its own read-out; jaw 0.48 against 0.30, smiles
    # 0.59 and 0.57 against 0.49 and 0.43), pose error 2.84 against 2.74 degrees (2.83 against 2.92
    # from crops cut from frames), probe 0.206 against 0.375 (chance 0.25), 13 minutes.
    # With the close-ups of the eyes and the mouth (motion.expression_parts, set above for every
    # task; make demo's run of 6 December 2026): R^2 0.544 (0.599 by its own read-out; jaw 0.91,
    # smiles 0.84 and 0.78, blinks 0.78 and 0.80, gaze yaw 0.23, pucker, cheek puff, lip corners
    # and nose wrinkle still at or below 0.05), pose error 3.00 degrees (3.06 from crops cut from
    # frames), probe 0.449 (1.8x chance), 21 minutes.
    config.optim.learning_rate = 3e-3
    # Muon on the encoders' convolution kernels, AdamW on the rest (optim.muon). This config's run
    # against the same with AdamW throughout (make demo's of 6 December, world 1.7.0, figures below;
    # benchmarks/motion.py, one run each): expression R^2 0.687 against 0.639 (0.604 to 0.725 over
    # the 16 test clips; 0.722 by its own read-out), on 1000 held-out people 0.600 against 0.552,
    # pose error 1.96 against 2.89 degrees (2.21 from crops cut from frames), identity probe 0.221
    # against 0.206 (chance 0.25). Gaze yaw 0.76, gaze pitch 0.48, squint 0.58; pucker 0.15, cheek
    # puff 0.11, lip corners 0.28 and brow furrow 0.24 still low. The validation people's share of
    # the controls' variance left unexplained: 0.759, 0.585, 0.518 at steps 100, 200, 300 (AdamW's
    # 0.913, 0.816, 0.689), least at step 700 (0.464; AdamW's 0.516), 0.483 at the end (AdamW's
    # 0.490), while the training people's fell to 0.21 (AdamW's 0.43): under Muon the 10000 people
    # are learned by heart within the 1000 steps, so more people is where its next gain lies (30000
    # people, below). 35 minutes, two tests running beside it for four of them (make demo's AdamW
    # runs of 6 and 7 December: 22.0 and 27.4).
    config.optim.muon = (r".*/(stem|down|conv1|conv2)/kernel",)
    # The latent held to what its true controls predict (motion_loss.nuisance_weight, 0.1 as the
    # twin term's weight): the same run with it, R^2 0.555 (0.584 by its own read-out; the training
    # people's 0.581 against 0.631: less of them is learned), pose error 2.95 degrees (3.00 from
    # frames), identity probe 0.228 against 0.449 (chance 0.25), the term at 0.23 of the latents'
    # spread on validation people at the end (5.0 at the start).
    config.motion_loss.nuisance_weight = 0.1
    config.total_steps = 1000
    # 30000 people against 10000 under Muon (one run each, benchmarks/motion.py; docs/training.md):
    # expression R^2 0.726 against 0.687, on the 1000 held-out people 0.663 against 0.600, pose
    # error 2.02 against 1.96 degrees, the pose shift through the VAE 2.03 against 2.26 (AdamW's
    # 2.12), identity probe 0.162 (chance 0.25); 37.8 minutes against 35 on 8 simulated devices,
    # 30.8 on one (make demo's), 16 GB in use (8.1 GB at step 300 since the input workers keep
    # their people in slabs, data_pipeline/kept_examples.py). 3000 steps (87 minutes): R^2 0.775,
    # 0.725 on the people, but the 30000 people are learned by heart after about 2400
    # (docs/training.md).
    config.input.fresh_people = 30000
    config.input.fresh_people_cache = 30000
    config.motion_loss.mirror_share = 0.5
    # The pose encoder reads the same mirrored examples, their poses mirrored: held-out pose error
    # 4.55 degrees (4.33 from crops cut from frames) against 4.64 (4.51) without, the same run
    # otherwise (benchmarks/motion.py; its expression figures do not change).
    config.motion_loss.mirror_pose = True
    # Jitter of the expression encoder's crops (motion_loss.jitter; docs/training.md) is left off.
    # It keeps the encoder alone from learning 10000 people by heart (held-out R^2 0.603 against
    # 0.532 at 1500 steps), but this run sees its 30000 people about four times each, and with it
    # (shift 3, brightness 0.1, contrast 0.2, gain 0.1, noise 0.01) the validation people's
    # unexplained share was 0.518 at step 700 against 0.405: it slows learning that has not yet
    # turned to memorising. Where it is wanted, a shift of 3 pixels alone does nearly as much (0.597).
    config.input.global_batch_size = 128
    # Crops rendered at crop resolution and crops cut from the 64x64 frames: the encoders learn
    # expression detail and still read the small generated frames evaluation gives them. Three in
    # four rendered at crop resolution (input.face_crop.stored_share; the rest as kept,
    # benchmarks/motion.py, one run each, 6 December 2026) against one in two: R^2 0.629 against
    # 0.607 (0.671 against 0.631 by its own read-out; gaze yaw 0.64 against 0.49), from crops cut
    # from frames 0.474 against 0.469, pose error 2.92 against 2.94 degrees (2.93 both from
    # frames), identity probe 0.257 against 0.213 (chance 0.25). make demo's figures at the top of
    # this file: the later stages redone with it. Three times the steps and the people
    # (total_steps 3000, fresh_people and fresh_people_cache 30000; 59 minutes, past the demo's
    # budget): R^2 0.712 (0.755 by its own read-out), pose error 1.64 degrees, probe 0.191; the
    # people alone (30000, 1000 steps, 29.5 minutes): R^2 0.652, pose error 2.83, probe 0.324, not
    # kept (docs/training.md). Those figures are world 1.6.0's. In world 1.7.0 (the nose wrinkle
    # lifts the nostrils and the upper lip) make demo's run: R^2 0.639 (0.540 to 0.688 over its 16
    # test clips), 0.552 on 1000 held-out people, pose error 2.89 degrees, probe 0.206; 3000 steps
    # on 30000 people: R^2 0.745, 0.685 on the people, pose error 1.68 degrees, probe 0.125.
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
    # Every fp-eval figure below was measured on the test split's first 4 clips, which are one
    # person's (fp-eval now takes one clip of each person in turn), unless it says otherwise.
    # The reference on every latent frame (fp_jax/models/dit_config.py): at 2000 steps the held-out
    # validation loss 0.32 against 0.57 with it on the first frame only, and fp-eval (4 held-out
    # clips, guidance off) PSNR 20.59 dB and pose error 10.53 degrees against 19.42 and 13.41.
    # A wider and deeper DiT (dim 128, 4 layers) in the same minutes (800 steps): 20.23, 12.18.
    # The same DiT with reference_residual given 4.5x the minutes (3000 steps, 35 min): 21.99 dB,
    # pose error 11.78 degrees (0.67x the repeated portrait's), against this one's 21.67 and 15.51.
    # Four times the batch (32) in the same minutes (550 steps): 20.83 dB, 15.70 degrees.
    config.model.reference_frames = "all"
    # The flow on each frame's difference from the reference (fp_jax/models/preconditioning.py):
    # fp-eval PSNR 21.65 dB against 20.62 with the plain velocity, pose error 15.11 against 14.10
    # degrees (one run each; runs of one config have differed by 0.9 degrees). Also measured (one run
    # each, the same fp-eval): with EDM's scalings (sigma_data 0.57, the differences' RMS) 20.05 dB
    # and 13.50 degrees, its one-step Euler mean 22.43 dB (the repeated portrait: 22.35), so the
    # samples' spread costs 2.4 dB; 1x1x1 patches (1000 steps, same minutes) 21.07 dB and 15.06.
    config.model.reference_residual = True
    # The portrait warped onto every frame through the mesh, read beside the normal maps and the
    # base the residual above starts from (fp_jax/models/dit_config.py). fp-eval, one run each
    # from the same frozen runs, 2000 steps: PSNR 22.65 dB against 21.64, pose error 10.78
    # against 16.90 degrees (0.58x the repeated portrait's, against 0.91x); validation loss 0.156
    # against 0.277; a whole make demo with it: 22.651 dB, 10.805 degrees. A perfect copy of the
    # warp through the demo VAE would score 24.18 dB and 13.29 degrees (benchmarks/reference_warp.py).
    config.model.warped_reference = True
    config.input.warped_reference = True
    # Guidance on the motion controls only: a reference scale above 1 pushes a model that reads
    # the portrait this well off its data (the default hybrid schedule: 17.84 dB, 11.13 degrees;
    # motion scale 1 (guidance off): 20.59 dB, 10.53 degrees; 1.5: 20.57, 10.10; 2: 20.40, 9.94;
    # 3: 19.82, 9.16, figures of an earlier DiT). With the warped portrait (the demo's DiT of 22 min
    # 59 s above, fp-eval, seed 0): motion scale 1: 23.230 dB, 11.146 degrees; 1.5: 23.170, 10.687;
    # 2: 22.651, 10.805; 3: 21.194, 12.543. 1.5 is the better of 2 on both. Checked again on the
    # validation split's 4 people (one clip each, world 1.4.0's demo DiT; the repeated portrait:
    # 24.892 dB, 11.412 degrees): scale 1: 24.036 dB, 8.811 degrees; 1.5: 23.949, 8.782; 2: 23.521,
    # 9.036.
    config.sample.guidance.mode = "motion"
    config.sample.guidance.motion = dict(start=1.5, end=1.5, shape="constant")
    # A refiner of the warp: trained on noise levels up to 0.5 only, sampled from the warped
    # portrait noised to 0.5 (SDEdit; fp_jax/sample/pipeline.py). fp-eval on the validation split
    # (8 clips of 4 people, seed 0; the repeated portrait 24.881 dB and 9.924 degrees, the warp
    # through the VAE 25.512 and 6.928): this DiT 24.655 dB and 6.960 degrees; the DiT trained on
    # every level, sampled from noise 23.832 and 8.107, from the warp at 0.75, 0.5, 0.25 and 0.05:
    # 24.132 and 8.001, 24.404 and 7.690, 24.759 and 7.227, 25.376 and 6.809; this DiT from 0.3:
    # 25.098 and 6.942. The lower the start, the more of the warp is kept; on these people no start
    # beats the warp's PSNR. 0.5 leaves the model half the noise range. Also measured: twice the
    # clips (8 a person, the same people): 24.603 and 7.027; EDM's scalings over the warp's
    # residual (sigma_data 0.4, every level, from noise): 20.915 and 9.205.
    # With the 32-channel VAE (validation): from 0.5 25.254 dB and 5.402 degrees, from 0.3 26.010
    # and 4.947 (the warp through it: 26.728 and 4.340). With the 64-channel VAE (validation; test;
    # the warp through it 27.445 dB and 3.964 degrees; 25.976 and 6.811): from 0.3 26.205, 4.829;
    # 25.063, 6.251; from 0.2 26.644, 4.507; 25.387, 6.363; from 0.1 27.034, 4.192; 25.664, 6.543.
    # Guidance off from 0.3: 26.250, 4.443; 25.127, 6.661. A DiT trained to level 0.2, from 0.2:
    # 26.512, 4.310; 25.279, 6.614. On validation no start beats the warp; the test split's pose
    # error is the model's best at the higher starts. Also tried and not kept: a quarter of the
    # training examples at the sampler's first state (the warp noised to 0.3, the velocity to the
    # real latents), so that the model learns the frames' difference from the warp from the
    # controls instead of reading it under the noise: 25.626, 5.102; 24.587, 6.134. The tiny DiT's
    # own estimate of that difference is worse than none on held-out people.
    config.diffusion.max_level = 0.5
    config.sample.start_level = 0.3
    # The flow's timestep shift stays at 3 (diffusion.shift for training, sample.shift for
    # sampling; one run each, this DiT, fp-eval): shift 1 gave 21.01 dB and pose error 15.46
    # degrees (sampled at shift 3 instead: 20.95, 15.43), shift 3 21.64 and 16.87, shift 6 21.60
    # and 17.61. Lower shifts trade PSNR for pose, and none comes near the bar.
    # Rays go to the devices in float16 (as on pods): the batch's folded rays are most of its bytes,
    # and the steps waited on them. 300 steps from the latent cache, alternating: 87 and 85 s against
    # 96 and 109 with float32, start-up included; 2000 steps then fp-eval gave the same PSNR and pose
    # error to the third decimal (21.636 dB, 16.895 degrees).
    config.input.rays_dtype = "float16"
    # ~0.2 s a step from the latent cache.
    config.total_steps = 2000
    config.eval.every = 1000
  return config
