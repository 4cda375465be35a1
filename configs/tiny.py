r"""Tiny FactorPortrait training on CPU: tests and `make demo`. One file, three tasks.

  fp-data --config=configs/data/synthetic.py:demo --data_dir=outputs/demo/data
  fp-train --config=configs/tiny.py:vae --workdir=outputs/demo/vae
  fp-train --config=configs/tiny.py:motion --workdir=outputs/demo/motion
  fp-train --config=configs/tiny.py:dit --workdir=outputs/demo/dit \
      --config.frozen.vae=outputs/demo/vae --config.frozen.motion=outputs/demo/motion
Any field can be overridden: `--config.optim.learning_rate=3e-4 --config.total_steps=200`.
Every field and its meaning: configs/common.py.
"""
from configs import common


def get_config(arg="dit"):
  return common.training_config(arg, input_variant="demo", model_variant="tiny")
