"""`fp-import` of a diffusers Wan checkpoint: time and peak host memory, initialising only the
portrait controls (as it does) against initialising the whole DiT first and overwriting its Wan
core (what it did before).

  python benchmarks/import_wan.py [--size=wan_1_3b] [--layers=6] [--rounds=3]

Saves a randomly initialised diffusers `WanTransformer3DModel` of the size's shapes (--layers of
its blocks) as safetensors, then imports it into a dit run of configs/tiny.py with that model
(portrait controls on) in a fresh process per way, one device, each way --rounds times,
alternating. Prints the medians: `import_seconds_*` (the whole `import_weights`: model made,
step 0 written), `model_seconds_*` (the model alone, weights in place), `import_peak_rss_growth_*`
(peak resident memory over what the process held before), `wan_core_size` and the ratios.

Measured (wan_1_3b shapes, 6 layers, 3 rounds): Wan core 1161 MiB; the model in 5.25 s against
10.98 s (2.09x), the import 18.77 s against 23.61 s (1.26x), peak RSS growth 9327 against 9755 MiB
(1.05x: step 0's optimizer state and EMA, written by both ways, dominate it).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.pop("XLA_FLAGS", None)  # one device: every byte of the model once
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from fp_jax.host_memory import keep_freed_memory_on_cpu  # pylint: disable=g-import-not-at-top
keep_freed_memory_on_cpu()  # as fp-import does, before any thread takes a malloc arena
from timing import peak_rss_growth, resident_bytes  # pylint: disable=g-import-not-at-top  # benchmarks/timing.py

WAYS = ("controls_only", "whole_init_first")


def make_config(size, layers):
  from configs import tiny  # pylint: disable=g-import-not-at-top
  from configs.models import dit as dit_configs  # pylint: disable=g-import-not-at-top
  config = tiny.get_config("dit")
  config.model = dit_configs.get_config(size)
  config.model.layers = layers
  return config


def save_wan(config, path):
  """A random diffusers Wan of the config's model shapes at `path`; returns its size in bytes."""
  import torch  # pylint: disable=g-import-not-at-top
  from diffusers import WanTransformer3DModel  # pylint: disable=g-import-not-at-top
  model = config.model
  torch.manual_seed(0)
  wan = WanTransformer3DModel(
      patch_size=tuple(model.patch), num_attention_heads=model.heads, attention_head_dim=model.dim // model.heads,
      in_channels=16, out_channels=16, text_dim=model.text_dim, freq_dim=256, ffn_dim=model.ffn_dim,
      num_layers=model.layers, cross_attn_norm=True, eps=1e-6)
  wan.save_pretrained(path, safe_serialization=True)
  return sum(p.numel() * p.element_size() for p in wan.parameters())


def whole_init_first(make_model, abstract, path, num_layers, mesh, rules):
  """The way before: the whole DiT initialised, then its Wan core overwritten from the file."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from flax import nnx, traverse_util  # pylint: disable=g-import-not-at-top
  from fp_jax.export import wan_init  # pylint: disable=g-import-not-at-top
  from fp_jax.models.build import initialised  # pylint: disable=g-import-not-at-top
  model = initialised(make_model, abstract, mesh, rules)
  state = nnx.state(model)
  current = traverse_util.flatten_dict(state.to_pure_dict())
  wan = traverse_util.flatten_dict(wan_init.read_wan(abstract[1].to_pure_dict(), path, num_layers))
  placed = {leaf: jax.device_put(np.asarray(value, current[leaf].dtype), current[leaf].sharding)
            for leaf, value in wan.items()}
  nnx.replace_by_pure_dict(state, traverse_util.unflatten_dict(placed))
  nnx.update(model, state)
  return model


def run_import(config, source, workdir, way):
  """In this process: seconds of the import and of its model, and peak RSS growth in bytes."""
  import jax  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from fp_jax.export import import_run, wan_init  # pylint: disable=g-import-not-at-top
  make = wan_init.wan_model if way == "controls_only" else whole_init_first
  timed = {}

  def timed_model(*args):
    start = time.perf_counter()
    model = make(*args)
    jax.block_until_ready(nnx.state(model))
    timed["model"] = time.perf_counter() - start
    return model

  wan_init.wan_model = timed_model
  before = resident_bytes()
  start = time.perf_counter()
  import_run.import_weights(source, config, workdir)
  seconds = time.perf_counter() - start
  return seconds, timed["model"], peak_rss_growth(before)


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--size", default="wan_1_3b")
  parser.add_argument("--layers", type=int, default=6)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--child", help=argparse.SUPPRESS)  # "WAY SOURCE WORKDIR": one import, as JSON
  args = parser.parse_args()
  config = make_config(args.size, args.layers)
  if args.child:
    way, source, workdir = args.child.split(" ")
    seconds, model_seconds, growth = run_import(config, source, workdir, way)
    print(json.dumps(dict(seconds=seconds, model_seconds=model_seconds, growth=growth)))
    return
  import numpy as np  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as root:
    source = os.path.join(root, "transformer")
    wan_bytes = save_wan(config, source)
    results = {way: [] for way in WAYS}
    for round_index in range(args.rounds):
      for way in WAYS:
        workdir = os.path.join(root, f"{way}_{round_index}")
        out = subprocess.run([sys.executable, __file__, f"--size={args.size}", f"--layers={args.layers}",
                              f"--child={way} {source} {workdir}"], capture_output=True, text=True, check=True).stdout
        results[way].append(json.loads(out.strip().splitlines()[-1]))
  median = lambda way, key: float(np.median([r[key] for r in results[way]]))
  mib = 2 ** 20
  print(f"wan_core_size: {wan_bytes / mib:.0f} MiB")
  for way in WAYS:
    print(f"import_seconds_{way}: {median(way, 'seconds'):.2f} s")
    print(f"model_seconds_{way}: {median(way, 'model_seconds'):.2f} s")
    print(f"import_peak_rss_growth_{way}: {median(way, 'growth') / mib:.0f} MiB")
  print(f"import_time_ratio: {median(WAYS[1], 'seconds') / median(WAYS[0], 'seconds'):.2f}")
  print(f"model_time_ratio: {median(WAYS[1], 'model_seconds') / median(WAYS[0], 'model_seconds'):.2f}")
  print(f"import_memory_ratio: {median(WAYS[1], 'growth') / median(WAYS[0], 'growth'):.2f}")


if __name__ == "__main__":
  main()
