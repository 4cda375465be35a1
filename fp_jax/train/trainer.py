"""The trainer: one loop for the `vae`, `motion`, `identity` and `dit` tasks.

Sections, in order: mesh, input, model and frozen parts, optimizer and state, checkpoint restore,
the loop (metrics, checkpoints, preemption). The train step itself is fp_jax/train/step.py's.
"""
import os
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from clu import metric_writers, parameter_overview, periodic_actions
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

from data_pipeline import input_pipeline, latent_cache
from data_pipeline.errors import require
from fp_jax.models.build import abstract_sharded, initialised, loaded
from fp_jax.parallel import global_batches, mesh as mesh_lib
from fp_jax.parallel.sharding import rules_from_config, use_mesh
from fp_jax.train import checkpoints as ckpt
from fp_jax.train.evaluation import Evaluator
from fp_jax.train import flops as flops_lib
from fp_jax.train import frozen as frozen_lib
from fp_jax.train import manifest
from fp_jax.train import offload
from fp_jax.train.step import TrainStep
from fp_jax.train.tasks import get_task
from fp_jax.train.watchdog import StepWatchdog


class TrainingStopped(RuntimeError):
  """Too many non-finite steps in a row."""


def _print_step(step, values):
  print(f"step {step}: " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(values.items())), flush=True)


def _masked(x):
  return isinstance(x, optax.MaskedNode)


def map_moments(tx, f, opt_state, like_params, **kwargs):
  """optax's `tree_map_params`: `f(leaf, like)` over every parameter-shaped part of `opt_state`,
  with `like_params` beside it. The empty places of parameters that `optim.frozen` holds still
  (which keep no moments) pass through as they are."""
  return optax.tree_utils.tree_map_params(tx, lambda x, like: x if _masked(x) else f(x, like), opt_state,
                                          like_params, is_leaf=_masked, **kwargs)


def fresh_state(params, tx, seed, shardings):
  """The training state at step 0 (traceable). Every parameter-shaped part (EMA, the optimizer's
  moments) is pinned to the parameters' `shardings`: left to jit, the moments came out replicated."""
  like_params = lambda tree: jax.tree.map(jax.lax.with_sharding_constraint, tree, shardings)
  return dict(
      params=params, ema=like_params(jax.tree.map(jnp.copy, params)),
      opt_state=map_moments(tx, jax.lax.with_sharding_constraint, tx.init(params), shardings),
      step=jnp.zeros((), jnp.int32), rng=jax.random.key_data(jax.random.key(seed)),
      skipped=jnp.zeros((), jnp.int32), bad_streak=jnp.zeros((), jnp.int32))


def initial_state(params, tx, seed):
  """The training state at step 0, sharded as `params` (call under the mesh)."""
  shardings = jax.tree.map(lambda x: x.sharding, params)
  return jax.jit(lambda params: fresh_state(params, tx, seed, shardings))(params)


def abstract_state(params, tx, seed, mesh, rules, offloaded=()):
  """The training state's shapes and shardings, with nothing computed, for `params` (abstract,
  each carrying its sharding): the parameter-shaped parts sharded as the parameters, the counters
  replicated, the `offloaded` parts in pinned host memory."""
  like_params = jax.tree.map(lambda x: x.sharding, params)
  with use_mesh(mesh, rules):
    shapes = jax.eval_shape(lambda p: fresh_state(p, tx, seed, like_params), params)
  # Outside the mesh: mapping the optimizer's state runs its init on the default device, which
  # for a compile-only topology (fp-aot) cannot run anything.
  replicated = NamedSharding(mesh, PartitionSpec())
  shardings = dict(jax.tree.map(lambda _: replicated, shapes), params=like_params, ema=like_params,
                   opt_state=map_moments(tx, lambda _, s: s, shapes["opt_state"], like_params,
                                         transform_non_params=lambda _: replicated))
  shardings = offload.host_shardings(shardings, offloaded)
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), shapes, shardings)


class Trainer(TrainStep):

  def __init__(self, config, workdir):
    self.config, self.workdir = config, workdir
    self.task = get_task(config)
    offload.offloaded_parts(config)  # checked before any data is read
    # -- mesh ----------------------------------------------------------------------------------
    self.mesh = mesh_lib.make_mesh(config.mesh)
    self.rules = rules_from_config(config.logical_axis_rules)
    mesh_lib.check_global_batch(config.input.global_batch_size, self.mesh)
    accumulation = config.optim.accumulation
    require(accumulation >= 1 and config.input.global_batch_size % (accumulation * mesh_lib.batch_shards(self.mesh)) == 0,
            f"global batch {config.input.global_batch_size} does not split into {accumulation} "
            f"micro-batches over {mesh_lib.batch_shards(self.mesh)} batch shards")
    self._check_input()
    # -- checkpoints ---------------------------------------------------------------------------
    # A resumed run is checked against the step it will resume from before anything is built: a
    # config that does not fit is refused in seconds, not after the input workers have started,
    # the model has been traced and the frozen runs read.
    self.checkpoints = ckpt.manager(workdir, config)
    self._verified_step = None
    try:
      self._verified_step = self._newest_intact_step()
      if self._verified_step is not None:
        frozen_lib.check_resumed_under_the_same(workdir, config)
        ckpt.check_compatible(self.checkpoints, self._verified_step, config)
    except BaseException:
      self.checkpoints.close()
      raise
    # -- input ---------------------------------------------------------------------------------
    host = input_pipeline.make_iterator(config.input, jax.process_index(), jax.process_count(),
                                        steps=config.total_steps)
    self.batches = global_batches.GlobalBatchIterator(host, self.mesh, config.input.device_prefetch)
    # -- model and frozen parts ----------------------------------------------------------------
    self.make_model = lambda: self.task.make_model(nnx.Rngs(config.seed))
    self.abstract_model = abstract_sharded(self.make_model, self.mesh, self.rules)
    self.graphdef, abstract_params = self.abstract_model
    frozen = frozen_lib.create_frozen(self.task, config, self.mesh, self.rules)
    self.frozen_graphdef, self.frozen_state = nnx.split(frozen)
    # -- optimizer and state -------------------------------------------------------------------
    TrainStep.__init__(self, config, self.task, self.graphdef, self.frozen_graphdef)
    self.abstract_state = abstract_state(abstract_params, self.tx, config.seed, self.mesh, self.rules,
                                         self.offloaded)
    self.shardings = jax.tree.map(lambda x: x.sharding, self.abstract_state)
    self.step_fn = jax.jit(self._train_step, donate_argnums=0, out_shardings=(self.shardings, None))
    # A resumed run's state comes from its checkpoint alone (restore_latest): no random model and
    # optimizer state are made first, which would hold the chips' memory twice over while it loads.
    self.state = self._fresh_state() if self.checkpoints.latest_step() is None else None
    self.evaluator = None
    if config.eval.every:
      self.evaluator = Evaluator(config, self.task, self.mesh, self.graphdef, self.frozen_graphdef, workdir)
    self.stop_requested = False
    self._manifest_due = False  # a save has begun whose manifest is not yet written

  def _check_input(self):
    """A latent cache must come from the frozen weights this run names (else the DiT would
    learn on one VAE's latents and sample through another). Fresh people are face crops, no video:
    motion examples, or (input.identity_views) identity examples."""
    views = self.config.input.get("identity_views", 0)
    require(not self.config.input.get("fresh_people") or self.config.task == ("identity" if views else "motion"),
            "input.fresh_people applies to the motion task, and with input.identity_views to the identity task")
    require(self.config.task != "identity" or (self.config.input.get("fresh_people") and views),
            "the identity task learns on fresh people seen several times: set input.fresh_people and "
            "input.identity_views")
    cache_dir = self.config.input.get("cached_latents")
    if not cache_dir:
      return
    require(self.config.task == "dit", "input.cached_latents applies to the dit task only")
    frozen_lib.check_cache(cache_dir, latent_cache.read_metadata(cache_dir), self.config)

  def _fresh_state(self):
    """The state at step 0: the model initialised (its Wan core from a diffusers checkpoint, the
    whole of it from another run, or part of it fitted to the training data, where the config says
    so), its EMA copy and the optimizer's state."""
    _, params = nnx.split(self._fresh_model())
    if not self.config.init.get("run"):  # a run's weights already hold what the data would fit
      self._init_from_data(params)
    with use_mesh(self.mesh, self.rules):
      state = initial_state(params, self.tx, self.config.seed)
    return jax.device_put(state, self.shardings)

  def _fresh_model(self):
    """The model at step 0. A fresh run of the dit task may start from a diffusers Wan checkpoint
    (`config.init.diffusers_checkpoint`): then only the portrait controls, which Wan lacks, are
    initialised. A fresh run of any task may start from the EMA weights of another run of its
    task and model (`config.init.run`), as the VAE's video stage starts from its image stage; the
    optimizer and the input start afresh."""
    path, run = self.config.init.diffusers_checkpoint, self.config.init.get("run", "")
    if run:
      require(not path, "init.run and init.diffusers_checkpoint each give the whole start: set one")
      params, step = ckpt.read_frozen(run, self.config, task=self.config.task, role="init.run")
      logging.info("initialised from step %d of %s", step, run)
      return loaded(self.abstract_model, params)
    if not path:
      return initialised(self.make_model, self.abstract_model, self.mesh, self.rules)
    require(self.config.task == "dit", "init.diffusers_checkpoint applies to the dit task only")
    from fp_jax.export import wan_init  # pylint: disable=g-import-not-at-top
    model = wan_init.wan_model(self.make_model, self.abstract_model, path, self.task.model_config.layers,
                               self.mesh, self.rules)
    logging.info("initialised from the diffusers checkpoint %s", path)
    return model

  def _init_from_data(self, params):
    """A fresh run of a task that fits part of its model to its training clips (the VAE's linear
    path) does so here, before the state (and its EMA copy) is made."""
    if hasattr(self.task, "initialise_from_data"):
      self.task.initialise_from_data(params)

  def _ema_on_device(self):
    """The EMA parameters in device memory (a copy when `offload_state` parks them on the host)."""
    if "ema" not in self.offloaded:
      return self.state["ema"]
    return jax.device_put(self.state["ema"], offload.in_memory(self.shardings["ema"], "device"))

  # -- restore -------------------------------------------------------------------------------

  def _newest_intact_step(self):
    """The latest step whose files match its manifest; damaged ones are set aside. The step found
    when the trainer was made is not hashed again (a pod model's step takes minutes)."""
    while True:
      step = self.checkpoints.latest_step()
      if step is None:
        return None
      if step == self._verified_step:
        return step
      step_dir = os.path.join(self.checkpoints.directory, str(step))
      issues = manifest.problems(step_dir) if jax.process_index() == 0 else []
      count = len(issues)
      if jax.process_count() > 1:  # process 0 decides for everyone
        count = int(multihost_utils.broadcast_one_to_all(np.int32(count)))
      if count == 0:
        return step
      if jax.process_index() == 0:
        moved = manifest.set_aside(step_dir, self.workdir)
        logging.error("checkpoint step %d is damaged (%s); moved to %s, falling back",
                      step, "; ".join(issues[:3]), moved)
        print(f"warning: checkpoint step {step} is damaged ({'; '.join(issues[:3])}); "
              f"set aside in {moved}", flush=True)
      if jax.process_count() > 1:
        multihost_utils.sync_global_devices("checkpoint set aside")
      self.checkpoints.reload()

  def _write_manifests(self):
    """Manifests for every committed step that lacks one (process 0; call after saves finish)."""
    self.checkpoints.wait_until_finished()
    if jax.process_index() != 0:
      return
    for step in self.checkpoints.all_steps():
      step_dir = os.path.join(self.checkpoints.directory, str(step))
      if not os.path.exists(os.path.join(step_dir, manifest.MANIFEST)):
        manifest.write(step_dir)

  def restore_latest(self):
    """The newest intact checkpoint's step, its state restored; 0 and a fresh state if none is
    (every one damaged included)."""
    step = self._newest_intact_step()
    if step is None:
      if self.state is None:
        self.state = self._fresh_state()
      return 0
    if step != self._verified_step:  # the step found as the trainer was made has been checked
      ckpt.check_compatible(self.checkpoints, step, self.config)
    self.state = None  # a fresh state (a checkpoint written since the trainer began) is freed first
    self.state = ckpt.restore(self.checkpoints, step, self.abstract_state, self.batches)
    logging.info("resumed from step %d", step)
    return step

  # -- the loop ------------------------------------------------------------------------------

  def _on_sigterm(self, signum, frame):
    del signum, frame
    self.stop_requested = True

  def _stop_agreed(self):
    """Preemption seen by any process stops every process at the same step."""
    if jax.process_count() == 1:
      return self.stop_requested
    flags = multihost_utils.process_allgather(np.int32(self.stop_requested))
    return bool(np.max(flags))

  def _save(self, step):
    self._write_manifests()  # the previous save has committed by now (or is waited for)
    ckpt.save(self.checkpoints, step, self.state, self.batches, self.config)
    self._manifest_due = True

  def _write_manifest_once_committed(self):
    """The last save's manifest as soon as it has committed (checked between steps), not at the
    next save: the window in which a step's array bytes cannot be verified shrinks from
    `checkpoint_every` steps to the save's own time. Each process asks its own saver; only
    process 0 writes, and waits for nothing that has not finished."""
    if self._manifest_due and not self.checkpoints.is_saving_in_progress():
      self._manifest_due = False
      self._write_manifests()

  def run(self):
    config = self.config
    writer = metric_writers.create_default_writer(self.workdir, just_logging=jax.process_index() > 0)
    start = self.restore_latest()
    if start == 0:
      parameter_overview.log_parameter_overview(self.state["params"].to_pure_dict())
      frozen_lib.record(self.workdir, config)
    previous = signal.signal(signal.SIGTERM, self._on_sigterm)
    report = periodic_actions.ReportProgress(num_train_steps=config.total_steps, writer=writer)
    history, waited, paused = [], 0.0, 0.0
    step = saved = start
    step_flops, peak_flops = None, flops_lib.peak_flops_per_device(config.device_peak_flops) * jax.device_count()
    window_start = time.perf_counter()
    watchdog = StepWatchdog(config.watchdog_seconds)
    try:
      with use_mesh(self.mesh, self.rules):
        while step < config.total_steps:
          self._write_manifest_once_committed()
          began = time.perf_counter()
          batch = next(self.batches)
          waited += time.perf_counter() - began
          if step_flops is None:  # for MFU, from the trace the jitted step then compiles
            step_flops = flops_lib.step_flops(self.step_fn, self.state, self.frozen_state, batch)
          self.state, metrics = self.step_fn(self.state, self.frozen_state, batch)  # asynchronous
          step += 1
          watchdog.pet(step)  # armed after the first step: compilation may take long
          history.append(metrics)
          report(step)
          if step % config.log_every == 0 or step == config.total_steps:
            history = jax.device_get(history)  # waits for the window's last step
            summary = {name: float(np.mean([m[name] for m in history])) for name in history[0]}
            elapsed = max(time.perf_counter() - window_start - paused, 1e-9)
            summary["data_wait_share"] = waited / elapsed
            summary["mfu"] = step_flops * len(history) / (elapsed * peak_flops)
            writer.write_scalars(step, summary)
            if jax.process_index() == 0:
              _print_step(step, summary)
            history, waited, paused, window_start = [], 0.0, 0.0, time.perf_counter()
            if int(self.state["bad_streak"]) > config.max_bad_steps:
              raise TrainingStopped(
                  f"{int(self.state['bad_streak'])} non-finite steps in a row at step {step}; "
                  f"the last good checkpoint is kept in {self.checkpoints.directory}")
          if self.evaluator is not None and step % config.eval.every == 0:
            eval_start = time.perf_counter()
            validation = self.evaluator.run(step, self._ema_on_device(), self.frozen_state, writer)
            if jax.process_index() == 0:
              _print_step(step, validation)
            watchdog.pet(step)
            paused += time.perf_counter() - eval_start  # the pass is not training time
          if step % config.checkpoint_every == 0 or step == config.total_steps:
            self._save(step)
            saved = step
          if self._stop_agreed():
            if saved != step:
              self._save(step)
            logging.warning("stopping at step %d on SIGTERM; checkpoint saved", step)
            break
    finally:
      watchdog.stop()
      self._write_manifests()
      signal.signal(signal.SIGTERM, previous)
      writer.flush()
    return step

  def close(self):
    self.checkpoints.close()
    self.batches.close()


def train(config, workdir):
  trainer = Trainer(config, workdir)
  try:
    return trainer.run(), trainer
  finally:
    trainer.close()
