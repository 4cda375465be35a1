r"""FactorPortrait on Wan 2.1 T2V-14B, for large TPU pods (e.g. v5p-256): FSDP x 4-way tensor
parallelism, full rematerialisation.

  fp-train --config=configs/wan_14b.py --workdir=/gcs/BUCKET/runs/dit_14b \
      --config.input.data_dir=/gcs/BUCKET/factor_portrait \
      --config.init.diffusers_checkpoint=PATH/Wan2.1-T2V-14B-Diffusers/transformer \
      --config.frozen.vae=/gcs/BUCKET/runs/vae --config.frozen.motion=/gcs/BUCKET/runs/motion
Every field and its meaning: configs/common.py; the VAE and motion runs are configs/wan_1_3b.py's.
"""
from configs import wan_1_3b


def get_config(arg="dit"):
  config = wan_1_3b.get_config(arg, model_variant="wan_14b")
  config.mesh = dict(data=1, fsdp=-1, context=1, tensor=4)
  config.model.remat = "full"  # 40 layers of 5120: activations would not fit otherwise
  config.input.global_batch_size = 64
  config.optim.learning_rate = 5e-5
  return config
