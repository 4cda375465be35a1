r"""FactorPortrait on Wan 2.1 T2V-1.3B, for TPU pods (e.g. v5p-64): 512x512, 81 frames.

  fp-data --config=configs/data/synthetic.py:pod --data_dir=/gcs/BUCKET/factor_portrait
  fp-train --config=configs/wan_1_3b.py:vae --workdir=/gcs/BUCKET/runs/vae
  fp-train --config=configs/wan_1_3b.py:motion --workdir=/gcs/BUCKET/runs/motion
  fp-train --config=configs/wan_1_3b.py --workdir=/gcs/BUCKET/runs/dit_1_3b \
      --config.input.data_dir=/gcs/BUCKET/factor_portrait \
      --config.init.diffusers_checkpoint=PATH/Wan2.1-T2V-1.3B-Diffusers/transformer \
      --config.frozen.vae=/gcs/BUCKET/runs/vae --config.frozen.motion=/gcs/BUCKET/runs/motion
  fp-sample --config=configs/wan_1_3b.py --workdir=/gcs/BUCKET/runs/dit_1_3b --image=portrait.png \
      --driving=driving.mp4 --mode=all-moving --camera=spiral --out=out.mp4
Every field and its meaning: configs/common.py.
"""
from configs import common


def get_config(arg="dit", model_variant="wan_1_3b"):
  config = common.training_config(arg, input_variant="pod", model_variant=model_variant)
  config.vae = dict(base_dim=96, z_dim=16, dim_mult=(1, 2, 4, 4), num_res_blocks=2,
                    temporal_downsample=(False, True, True))  # Wan 2.1's VAE
  config.motion.widths = (32, 64, 128, 256)
  # Parameters, optimizer state and EMA sharded over every chip; batch split over the same chips.
  config.mesh = dict(data=1, fsdp=-1, context=1, tensor=1)
  config.optim.update(learning_rate=1e-4, warmup_steps=1000, b2=0.999, weight_decay=0.0)
  config.ema_decay = 0.9999
  config.total_steps = 100_000
  config.log_every = 50
  config.checkpoint_every = 1000
  config.keep_period = 10_000
  config.eval.update(every=2000, batches=8, sample_steps=30)
  config.sample.update(height=512, width=512, steps=30)
  return config
