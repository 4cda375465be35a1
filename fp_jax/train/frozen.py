"""A task's frozen parts (the dit task's VAE and expression encoder), sharded over the mesh.

The parts that `config.frozen` names go from their runs straight into their shards: nothing is
initialised for them, which on a pod spares a traced, compiled and run init of the whole VAE. A
part it does not name (a test, a from-scratch smoke run) is initialised from `config.seed + 1`,
and that part alone.
"""
import json
import os

import jax
from absl import logging
from flax import nnx

from data_pipeline import durable
from data_pipeline.errors import require
from fp_jax.models.build import abstract_sharded, completed
from fp_jax.train import checkpoints

# Each frozen part and the `config.frozen` field naming the run that trains it (a run of that task).
SOURCE_FIELDS = {"vae": "vae", "expression": "motion"}
# Beside a run's checkpoints: the frozen runs (folder and step) its steps were trained under.
RECORD = "frozen_runs.json"


def frozen_runs(config):
  """{field: {"path": absolute folder, "step": its latest step}} for each run `config.frozen`
  names: what a frozen part is read from. The folder alone does not say it: a run trained further
  in the same folder gives other weights."""
  runs = {}
  for field in sorted(set(SOURCE_FIELDS.values())):
    workdir = config.frozen.get(field, "")
    if workdir:
      runs[field] = {"path": os.path.abspath(workdir), "step": checkpoints.latest_step(workdir)}
  return runs


def check_resumed_under_the_same(workdir, config):
  """A run resumed under frozen runs other than those it trained under would go on learning
  against other weights without a word: refused in one line (runs recorded before the record
  existed are not checked)."""
  record = os.path.join(workdir, RECORD)
  if os.path.exists(record):
    with open(record) as handle:
      trained_under = json.load(handle)
    runs = frozen_runs(config)
    require(trained_under == runs, f"{workdir} was trained under the frozen runs {trained_under}, this config "
            f"now reads {runs}: resume it under those, or start a new workdir")


def check_cache(cache_dir, metadata, config):
  """A latent cache must come from the frozen runs `config` names, at the steps they are at now
  (else the DiT would learn on one VAE's latents and sample through another)."""
  if "frozen_runs" in metadata:
    made_with, wanted = metadata["frozen_runs"], frozen_runs(config)
  else:  # a cache made before the steps were recorded: the folders as named
    made_with, wanted = metadata["frozen"], {"vae": config.frozen.vae, "motion": config.frozen.motion}
  require(made_with == wanted, f"the latent cache {cache_dir} was made with frozen weights {made_with}, "
                               f"this run names {wanted}: make it again (fp-cache-latents) or name those")


def record(workdir, config):
  """At a run's step 0 (process 0): the frozen runs it trains under, for its resumptions."""
  runs = frozen_runs(config)
  if runs and jax.process_index() == 0:
    temporary = os.path.join(workdir, RECORD + ".tmp")
    with open(temporary, "w") as handle:
      json.dump(runs, handle, indent=1, sort_keys=True)
      durable.flush_to_disk(handle)
    durable.replace(temporary, os.path.join(workdir, RECORD))


def saved_parts(config, names):
  """{part: host params} for each of `names` whose run `config.frozen` names."""
  parts = {}
  for name in names:
    source = SOURCE_FIELDS.get(name, "")
    workdir = config.frozen.get(source, "")
    if not workdir:
      continue
    params, step = checkpoints.read_frozen(workdir, config, task=source)
    parts[name] = params["expression"] if name == "expression" else params
    logging.info("frozen %s from %s (step %d)", name, workdir, step)
  return parts


def create_frozen(task, config, mesh, rules):
  """`task.make_frozen`'s parts as one `nnx.Dict`, each in its shards and dtype."""
  make = lambda: nnx.Dict(task.make_frozen(nnx.Rngs(config.seed + 1)))
  abstract = abstract_sharded(make, mesh, rules)
  return completed(make, abstract, saved_parts(config, list(abstract[1].to_pure_dict())), mesh, rules)
