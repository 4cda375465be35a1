"""A task's frozen parts (the dit task's VAE and expression encoder), sharded over the mesh.

The parts that `config.frozen` names go from their runs straight into their shards: nothing is
initialised for them, which on a pod spares a traced, compiled and run init of the whole VAE. A
part it does not name (a test, a from-scratch smoke run) is initialised from `config.seed + 1`,
and that part alone.
"""
from absl import logging
from flax import nnx

from fp_jax.models.build import abstract_sharded, completed
from fp_jax.train import checkpoints

# Each frozen part and the `config.frozen` field naming the run that trains it (a run of that task).
SOURCE_FIELDS = {"vae": "vae", "expression": "motion"}


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
