r"""Tiny FactorPortrait training on CPU: tests and `make demo`. One file, three tasks.

  fp-data --config=configs/data/synthetic.py:demo --data_dir=outputs/demo/data
  fp-train --config=configs/tiny.py:vae --workdir=outputs/demo/vae
  fp-train --config=configs/tiny.py:motion --workdir=outputs/demo/motion
  fp-train --config=configs/tiny.py:dit --workdir=outputs/demo/dit \
      --config.frozen.vae=outputs/demo/vae --config.frozen.motion=outputs/demo/motion
Any field can be overridden: `--config.optim.learning_rate=3e-4 --config.total_steps=200`.
"""
import ml_collections

from configs.data import input as input_config
from configs.models import dit as dit_config


def get_config(arg="dit"):
  config = ml_collections.ConfigDict()
  config.task = arg
  config.seed = 0
  config.input = input_config.get_config("demo")
  config.model = dit_config.get_config("tiny")
  config.vae = ml_collections.ConfigDict(dict(base_dim=16, z_dim=16, dim_mult=(1, 2, 4, 4),
                                              num_res_blocks=1, temporal_downsample=(False, True, True)))
  config.vae_loss = ml_collections.ConfigDict(dict(kl_weight=1e-6))
  config.motion = ml_collections.ConfigDict(dict(widths=(16, 32, 64, 64), expression_dim=512,
                                                 num_controls=16))
  config.frozen = ml_collections.ConfigDict(dict(vae="", motion=""))  # workdirs of trained runs
  config.diffusion = ml_collections.ConfigDict(dict(shift=3.0, timestep_distribution="logit_normal"))
  config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, context=1, tensor=1))
  config.logical_axis_rules = None  # None: fp_jax/parallel/sharding.py's defaults
  config.optim = ml_collections.ConfigDict(dict(
      learning_rate=1e-3, warmup_steps=20, schedule="cosine", final_fraction=0.1, b1=0.9, b2=0.99,
      eps=1e-8, weight_decay=0.01, clip_norm=1.0, accumulation=1))
  config.ema_decay = 0.99
  config.total_steps = 300
  config.log_every = 10
  config.checkpoint_every = 100
  config.keep_checkpoints = 3  # the last N ...
  config.keep_period = 0  # ... plus every M-th step (0: none)
  config.max_bad_steps = 10  # non-finite steps in a row before the run stops
  return config
