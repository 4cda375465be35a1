"""Loading an `fp-export` folder into a PyTorch mirror (torch only, no jax)."""
import json
import os

import torch


def load_exported(make_model, directory, section, dtype=torch.float32):
  """`make_model(config[section])` with the folder's `model.safetensors`, strictly."""
  from safetensors.torch import load_file  # pylint: disable=g-import-not-at-top
  with open(os.path.join(directory, "config.json")) as f:
    model = make_model(json.load(f)[section])
  model.load_state_dict(load_file(os.path.join(directory, "model.safetensors")), strict=True)
  return model.to(dtype).eval()
