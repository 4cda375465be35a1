"""Orbax checkpoints of a training run: state, Grain iterator, config.

Asynchronous `CheckpointManager` under `<workdir>/checkpoints`, keeping the last N plus every
M-th step. Orbax commits a step atomically (a temporary name, renamed when complete), so a save
cut short by a crash is never taken for a checkpoint.
"""
import json
import os
import re

import grain
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx
from orbax.checkpoint._src.metadata import array_metadata_store
from orbax.checkpoint._src.serialization import type_handler_registry

from data_pipeline.errors import InputError, require, require_local_path
from fp_jax.train import manifest, offload

# Orbax splits the writing of a replicated array among its replicas, each slicing its part on
# device first: one small program per shape. For a norm scale or a bias that costs more than it
# saves (about 80 slices and 5 s a save for the tiny motion task on 8 devices); arrays whose part
# would be under 1 MiB are written by one replica, while a big model's matrices still split.
MIN_BYTES_PER_REPLICA_SLICE = 2**20
type_handler_registry.GLOBAL_TYPE_HANDLER_REGISTRY.add(  # register_type_handler, without its warning
    jax.Array, ocp.type_handlers.ArrayHandler(array_metadata_store=array_metadata_store.Store(),
                                              min_slice_bytes_for_replica_parallel=MIN_BYTES_PER_REPLICA_SLICE),
    override=True, ignore_warnings=True)


def manager(workdir, config):
  require_local_path(workdir, "workdir")
  options = ocp.CheckpointManagerOptions(
      max_to_keep=config.keep_checkpoints, keep_period=config.keep_period or None,
      enable_async_checkpointing=True, create=True)
  return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"), options=options)


@jax.jit
def _all_finite(leaves):
  # Parameters parked in host memory (offload_state) are read from there onto the devices.
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in offload.to_device(leaves)]))


def params_finite(params):
  """Whether every floating parameter is finite: reduced on the devices that hold each shard, so
  one replicated boolean comes back (a parameter split over several hosts cannot be fetched by
  any one of them, and a whole model copied to host memory at every save would be wasted)."""
  leaves = [leaf for leaf in jax.tree.leaves(params) if jnp.issubdtype(leaf.dtype, jnp.floating)]
  return not leaves or bool(_all_finite(leaves))


def save(checkpoints, step, state, batches, config):
  if not params_finite(state["params"]):
    raise RuntimeError(f"refusing to save step {step}: the parameters are not finite")
  items = dict(state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(json.loads(config.to_json())))
  if batches is not None:  # None: a checkpoint made outside training (fp-import) has no input state
    items["input"] = grain.checkpoint.CheckpointSave(batches)
  checkpoints.save(step, args=ocp.args.Composite(**items))


def saved_config(checkpoints, step):
  return checkpoints.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]


def _differences(saved, current, prefix=""):
  for key in sorted(set(saved) | set(current)):
    a, b = saved.get(key), current.get(key)
    if isinstance(a, dict) and isinstance(b, dict):
      yield from _differences(a, b, f"{prefix}{key}.")
    elif a != b:
      yield f"{prefix}{key}: {a!r} in the checkpoint, {b!r} now"


MODEL_SECTIONS = ("task", "model", "vae", "motion")
# The sections each task's checkpoint depends on: a dit run decodes with the VAE and reads the
# encoders its config describes; a vae, motion or identity run holds its own model alone.
TASK_SECTIONS = {"vae": ("task", "vae"), "motion": ("task", "motion"), "identity": ("task", "identity"),
                 "dit": MODEL_SECTIONS}
# The tasks whose runs are encoders of face crops: whatever reads them must cut crops as they learned.
CROP_TASKS = ("motion", "identity")
# Model fields added after checkpoints were first written, with the value that means what a
# checkpoint without them meant, so older runs still resume, sample and export.
ADDED_FIELDS = {"vae": {"residual": False, "patch_size": 1, "decoder_base_dim": 0, "linear_path": False},
                "motion": {"expression_pooling": "mean", "pose_pooling": "mean", "pose_widths": [], "expression_parts": [],
                           "expression_stem_width": 0, "expression_standardise": False},
                "model": {"reference_frames": "first", "reference_residual": False, "sigma_data": 0.0,
                          "patch": [1, 2, 2], "warped_reference": False, "in_channels": 16,
                          "out_channels": 16}}

# Model fields that choose how the model runs, not what it computes (up to rounding), so a run
# resumes, samples and exports under others: a DiT trained with `splash` or `cudnn` samples on a
# CPU with `einsum`, and a run that ran out of memory resumes with a stronger remat policy.
EXECUTION_FIELDS = {"model": ("attention", "remat", "dtype")}


def model_differences(saved, config, sections=None):
  """One line per model field where a saved config (dict) and `config` disagree, summarised, over
  `sections` (default: those the saved run's task depends on)."""
  current = json.loads(config.to_json())
  differences = []
  if sections is None:
    sections = TASK_SECTIONS.get(saved.get("task"), MODEL_SECTIONS)
  for section in sections:
    a, b = saved.get(section), current.get(section)
    if isinstance(a, dict) and isinstance(b, dict):
      running = EXECUTION_FIELDS.get(section, ())
      a = {k: v for k, v in {**ADDED_FIELDS.get(section, {}), **a}.items() if k not in running}
      b = {k: v for k, v in b.items() if k not in running}
      differences += list(_differences(a, b, f"{section}."))
    elif a != b:
      differences.append(f"{section}: {a!r} in the checkpoint, {b!r} now")
  if not differences:
    return ""
  return "; ".join(differences[:3]) + (f" (and {len(differences) - 3} more)" if len(differences) > 3 else "")


def check_compatible(checkpoints, step, config):
  """The saved and current configs' model sections, `optim.frozen` and `optim.muon` must agree,
  and both must start from a run (`init.run`) or neither (one-line error otherwise)."""
  saved = saved_config(checkpoints, step)
  differences = model_differences(saved, config)
  if differences:
    raise InputError(f"{checkpoints.directory} holds step {step} of an incompatible model: {differences}")
  # The optimizer's state holds moments for the trained parameters alone, Muon's apart from AdamW's.
  for field in ("frozen", "muon"):
    kept, now = list(saved.get("optim", {}).get(field, [])), list(config.optim.get(field, ()))
    require(kept == now, f"{checkpoints.directory} holds step {step} of a run with optim.{field} {kept}, "
                           f"this config has {now}: its optimizer state would not fit")
  # init.run is read when a run starts: resumed under one it did not start with (or without the one
  # it did), a run would silently keep its own start (an older demo's VAE, carried on without its
  # image stage). Whether it started from a run is compared, not the path: a workdir and the run it
  # started from may have moved together.
  _check_input_position(checkpoints, step, saved, config)
  started, named = saved.get("init", {}).get("run", ""), config.init.get("run", "")  # older runs: none
  require(bool(started) == bool(named),
          f"{checkpoints.directory} holds step {step} of a run started from {started or 'fresh weights'}, this "
          f"config names init.run {named or '(none)'}, which is read only when a run starts: give the run's "
          f"own, or another workdir")


def _check_input_position(checkpoints, step, saved, config):
  """The input's saved position is one per process, and inside it one per input worker: it
  resumes only into as many of each (Grain cannot carry it across)."""
  folder = os.path.join(checkpoints.directory, str(step), "input")
  if not os.path.isdir(folder):
    return  # an imported step: the input starts at its beginning
  counts = {int(match.group(1)) for match in map(re.compile(r"process_\d+-of-(\d+)\.json$").match, os.listdir(folder))
            if match}
  require(counts <= {jax.process_count()}, f"{checkpoints.directory} holds step {step} of a run of {sorted(counts)} "
          f"process(es), this job has {jax.process_count()}: its input position resumes only in as many")
  kept, now = saved.get("input", {}).get("workers", {}).get("count"), int(config.input.workers.count)
  require(kept is None or int(kept) == now, f"{checkpoints.directory} holds step {step} of a run with "
          f"input.workers.count {kept}, this config has {now}: its input position resumes only in as many")


def restore(checkpoints, step, abstract_state, batches):
  """Restores the state straight into the shardings of `abstract_state`, and the iterator (left
  at its start when the checkpoint has no input state, as an imported one)."""
  items = dict(state=ocp.args.StandardRestore(abstract_state))
  if os.path.isdir(os.path.join(checkpoints.directory, str(step), "input")):
    items["input"] = grain.checkpoint.CheckpointRestore(batches)
  return checkpoints.restore(step, args=ocp.args.Composite(**items))["state"]


def latest_step(workdir):
  """The newest step under `<workdir>/checkpoints` (None if there is none)."""
  directory = os.path.join(os.path.abspath(workdir), "checkpoints")
  steps = ocp.CheckpointManager(directory).all_steps() if os.path.isdir(directory) else []
  return max(steps) if steps else None


def read_run(workdir, step=None, which="ema"):
  """Host (numpy) copies of a run's parameters (`which`: "ema" or "params") at `step` (default
  the latest), on any devices, with the step and the run's saved config (a dict)."""
  require_local_path(workdir, "run")
  directory = os.path.join(os.path.abspath(workdir), "checkpoints")
  if not os.path.isdir(directory):
    raise InputError(f"no checkpoint under {directory} to take weights from")
  checkpoints = ocp.CheckpointManager(directory)
  steps = checkpoints.all_steps()
  if not steps:
    raise InputError(f"no checkpoint under {directory} to take weights from")
  step = max(steps) if step is None else step
  if step not in steps:
    raise InputError(f"{directory} has no step {step} (it has {sorted(steps)})")
  # Files missing or cut short (a copy or disk gone wrong) are refused rather than read as weights;
  # sizes only: hashing a pod model's whole step (optimizer included) would cost minutes a read.
  damage = manifest.problems(os.path.join(checkpoints.directory, str(step)), contents=False)
  require(not damage, f"step {step} of {workdir} is damaged ({'; '.join(damage[:3])}): fp-train on that run "
          f"sets it aside and resumes from the step before")
  path = os.path.join(checkpoints.directory, str(step), "state")
  checkpointer = ocp.PyTreeCheckpointer()
  metadata = checkpointer.metadata(path).item_metadata.tree
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), metadata[which])
  # Only the wanted tree is read (the optimizer state stays on disk).
  state = checkpointer.restore(path, args=ocp.args.PyTreeRestore(
      item={which: metadata[which]}, restore_args={which: restore_args}, partial_restore=True))
  return _pure(state[which]), step, saved_config(checkpoints, step)


def latest_params(workdir, which="ema"):
  """Host (numpy) copies of the (EMA) parameters of a run's latest checkpoint, on any devices."""
  params, step, _ = read_run(workdir, None, which)
  return params, step


def _pure(tree):
  """A saved `nnx.State` comes back with a `{'value': array}` node per variable: drop them."""
  if isinstance(tree, dict):
    if set(tree) == {"value"}:
      return tree["value"]
    # List indices come back as strings from a partial restore; nnx states use ints.
    return {int(key) if isinstance(key, str) and key.isdigit() else key: _pure(value)
            for key, value in tree.items()}
  return tree


def placed(value, like):
  """Host `value` as a global array shaped like `like` (an array or ShapeDtypeStruct with a
  sharding): each process converts and places only its own devices' shards, each distinct shard
  once, so a pod's hosts each write their part and no host converts more of a sharded weight
  than it holds."""
  value, converted = np.asarray(value), {}

  def shard(index):  # devices holding the same shard (replicas) share one conversion
    key = tuple((part.start, part.stop, part.step) if isinstance(part, slice) else part for part in index)
    if key not in converted:
      converted[key] = np.asarray(value[index], like.dtype)
    return converted[key]

  return jax.make_array_from_callback(like.shape, like.sharding, shard)


def place_like(params, current):
  """Host `params` as device arrays shaped like `current` (the same tree): each in its sharding
  and dtype (`placed`)."""
  return jax.tree.map(placed, params, current)


def load_into(module, params):
  """`module` with `params` (a pure dict, as `read_run` gives it) written in, each leaf in the
  module's own dtype and sharding; returns the module."""
  state = nnx.state(module)
  nnx.replace_by_pure_dict(state, place_like(params, state.to_pure_dict()))
  nnx.update(module, state)
  return module


def read_frozen(workdir, config, task=None, role="the frozen run"):
  """The latest (EMA) parameters of a frozen run, which must hold the model `config` describes
  (one-line error otherwise: its weights would not fit the modules built from `config`), be a run
  of `task` where one is named, and, if it is an encoder of face crops (`CROP_TASKS`), have learned
  on face crops of the size and margin `config` cuts, lest it read crops unlike any it saw."""
  params, step, saved = read_run(workdir, None, "ema")
  require(task is None or saved.get("task") == task, f"{workdir} is a {saved.get('task')!r} run, not a {task!r} run")
  if saved.get("task") in CROP_TASKS:
    theirs, ours = saved.get("input", {}).get("face_crop", {}), config.input.face_crop
    for field in ("size", "margin"):
      require(field not in theirs or theirs[field] == ours[field],
              f"{workdir} learned on face crops of {field} {theirs.get(field)}, this config cuts them at "
              f"{ours[field]} (input.face_crop.{field})")
  own = [section for section in TASK_SECTIONS.get(saved.get("task"), ()) if section != "task"]
  differences = model_differences(saved, config, own)
  require(not differences, f"{role} {workdir} holds another model than this config describes: "
                           f"{differences}")
  return params, step
