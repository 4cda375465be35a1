"""The trainer: loss falls, exact resume, accumulation, the non-finite guard, SIGTERM, bad input."""
import json
import os
import shutil
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from data_pipeline.errors import InputError
from fp_jax.train import checkpoints, manifest, trainer as trainer_lib
from tests.run_helpers import ROOT, WAN_CHANNELS, host, motion_command, run, step_losses, train_config


def test_dit_loss_falls_with_validation_and_a_sample_video(data_dir, tmp_path, capsys):
  import imageio.v3 as iio  # pylint: disable=g-import-not-at-top
  config = train_config(data_dir, "dit", total_steps=24, checkpoint_every=100)
  config.eval.update(every=24, batches=1, sample_steps=2)
  run(config, tmp_path)
  losses = step_losses(capsys.readouterr().out)
  assert len(losses) == 24
  assert np.mean(losses[-6:]) < 0.8 * np.mean(losses[:6])
  tags = _event_tags(tmp_path)
  assert {"validation/loss", "loss", "mfu", "data_wait_share"} <= tags
  assert any(tag.startswith("samples/") for tag in tags)
  video = iio.imread(tmp_path / "samples" / "step_00000024.mp4", extension=".mp4")
  # 5 frames; the 8 examples stacked (8 x 32 px high); real | generated (2 x 32 px wide).
  assert video.shape == (5, 8 * 32, 2 * 32, 3)


def test_resume_equals_uninterrupted_bit_for_bit(data_dir, motion_reference, tmp_path, monkeypatch):
  # The uninterrupted run's checkpoint at step 2, as a run stopped there left it.
  shutil.copytree(motion_reference.workdir / "checkpoints" / "2", tmp_path / "checkpoints" / "2")
  traces, train_step = [], trainer_lib.Trainer._train_step

  def counted(self, *args):  # Python runs once per trace of the step
    traces.append(1)
    return train_step(self, *args)
  monkeypatch.setattr(trainer_lib.Trainer, "_train_step", counted)

  def no_init(*args, **kwargs):
    raise AssertionError("a resumed run made a fresh state before restoring its checkpoint")
  monkeypatch.setattr(trainer_lib, "initialised", no_init)
  monkeypatch.setattr(trainer_lib, "initial_state", no_init)
  # Picks up step 2: state, optimizer, iterator.
  resumed = run(train_config(data_dir, "motion", total_steps=4, checkpoint_every=2), tmp_path)
  assert len(traces) == 1  # the FLOPs for MFU are counted on the trace the step compiles
  assert int(resumed["step"]) == 4
  for name in ("params", "opt_state", "ema", "rng"):
    jax.tree.map(np.testing.assert_array_equal, resumed[name], motion_reference.state[name])


def test_a_run_resumes_on_another_mesh(data_dir, tmp_path, capsys):
  """Saved on one layout (8-way data parallel), resumed on another (the model split over fsdp and
  tensor as well, as a run moved to another slice shape would be): the state is read straight into
  the new shardings and training goes on as the uninterrupted run did. The DiT's block kernels are
  on Muon (its Newton-Schulz steps on matrices split over the mesh), the rest on AdamW, so both
  optimizers' moments are resharded (one run for both: each DiT run here takes about a minute)."""
  config = lambda steps, **mesh: train_config(data_dir, "dit", total_steps=steps, checkpoint_every=2,
                                              **{"optim.muon": (r"blocks/.*kernel",)},
                                              **{f"mesh.{axis}": size for axis, size in mesh.items()})
  uninterrupted = run(config(4), tmp_path / "a")
  shutil.copytree(tmp_path / "a" / "checkpoints" / "2", tmp_path / "b" / "checkpoints" / "2")
  capsys.readouterr()
  trainer = trainer_lib.Trainer(config(4, data=2, fsdp=2, tensor=2), str(tmp_path / "b"))
  try:
    trainer.run()
    assert [line.split(":")[0] for line in capsys.readouterr().out.splitlines()
            if line.startswith("step ")] == ["step 3", "step 4"]  # from the checkpoint, not afresh
    specs = {jax.tree_util.keystr(path): leaf.sharding.spec
             for path, leaf in jax.tree_util.tree_leaves_with_path(trainer.state["opt_state"])}
    resumed = host(trainer.state)
  finally:
    trainer.close()
  for optimizer in ("adamw", "muon"):  # each one's moments are split over the new mesh's axes
    split = [spec for path, spec in specs.items() if f"['{optimizer}']" in path]
    assert any("fsdp" in spec for spec in split) and any("tensor" in spec for spec in split), optimizer
  assert int(resumed["step"]) == 4
  for name in ("params", "ema"):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), resumed[name],
                 uninterrupted[name])


def test_state_parked_in_host_memory_steps_saves_and_resumes_as_on_device(data_dir, motion_reference, tmp_path):
  offload = {"offload_state": ("ema", "opt_state", "params")}
  on_device = motion_reference.state  # the same config (4 steps, checkpoints at 2 and 4) on the devices
  run(train_config(data_dir, "motion", total_steps=2, checkpoint_every=2, **offload), tmp_path / "b")
  resume = train_config(data_dir, "motion", total_steps=4, checkpoint_every=2, **offload)
  resume.eval.update(every=4, batches=1)  # validation reads the parked EMA
  trainer = trainer_lib.Trainer(resume, str(tmp_path / "b"))
  try:
    trainer.run()  # resumes from step 2, restoring into host memory
    kinds = {part: {leaf.sharding.memory_kind for leaf in jax.tree.leaves(trainer.state[part])}
             for part in ("params", "ema", "opt_state")}
    resumed = host(trainer.state)
  finally:
    trainer.close()
  assert kinds == {"params": {"pinned_host"}, "ema": {"pinned_host"}, "opt_state": {"pinned_host"}}
  assert int(resumed["step"]) == 4
  assert "validation/loss" in _event_tags(tmp_path / "b")
  for name in ("params", "opt_state", "ema"):
    jax.tree.map(np.testing.assert_array_equal, resumed[name], on_device[name])


def test_offloading_an_unknown_state_part_is_a_clear_error(tmp_path):
  with pytest.raises(InputError, match="offload_state names \\['batch'\\]"):
    trainer_lib.Trainer(train_config(str(tmp_path), "motion", offload_state=("batch",)), str(tmp_path))


def test_fresh_people_outside_the_motion_task_is_a_clear_error(tmp_path):
  with pytest.raises(InputError, match="input.fresh_people applies to the motion task"):
    trainer_lib.Trainer(train_config(str(tmp_path), "vae", **{"input.fresh_people": 100}), str(tmp_path))


def test_the_motion_task_trains_and_validates_on_fresh_people_as_the_demo_does(data_dir, tmp_path, capsys):
  """configs/tiny.py:motion's input (people drawn anew, kept by the input), at tiny shapes: the
  steps and the validation run on single frames, and the run saves its last step."""
  config = train_config(data_dir, "motion", total_steps=3, checkpoint_every=3,
                        **{"input.fresh_people": 12, "input.global_batch_size": 8,
                           "input.expression_twins": 0, "eval.every": 3, "eval.batches": 1})
  assert tiny.get_config("motion").input.fresh_people > 0  # what the demo runs
  state = run(config, tmp_path)
  assert int(state["step"]) == 3
  out = capsys.readouterr().out
  losses = step_losses(out)
  assert len(losses) == 3 and np.all(np.isfinite(losses))
  assert "validation/pose_mse" in out


def test_gradient_accumulation_equals_one_big_batch(data_dir, tmp_path):
  """2 micro-batches of B/2 give the gradients of one batch of B (the motion loss is deterministic
  without mirrored examples, which each micro-batch draws with its own key; and without twins or
  the nuisance term, measured against each micro-batch's spread)."""
  config = train_config(data_dir, "motion", total_steps=1,
                        **{"mesh.data": 4, "mesh.tensor": 2, "input.expression_twins": 0,
                           "motion_loss.mirror_share": 0.0, "motion_loss.nuisance_weight": 0.0})
  trainer = trainer_lib.Trainer(config, str(tmp_path))
  try:
    batch = next(trainer.batches)
    key = jax.random.key(0)
    results = []
    for accumulation in (1, 2):
      trainer.config.optim.accumulation = accumulation
      with trainer_lib.use_mesh(trainer.mesh, trainer.rules):
        results.append(host(jax.jit(trainer._gradients)(trainer.state["params"], trainer.frozen_state,
                                                          batch, key)))
    (loss_one, _), grads_one = results[0]
    (loss_two, _), grads_two = results[1]
    np.testing.assert_allclose(loss_two, loss_one, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7), grads_two, grads_one)
    assert max(float(np.abs(g).max()) for g in jax.tree.leaves(grads_one)) > 1e-3  # not trivially zero
  finally:
    trainer.close()


def test_non_finite_steps_are_skipped_and_counted(data_dir, tmp_path):
  trainer = trainer_lib.Trainer(train_config(data_dir, "motion", total_steps=2), str(tmp_path))
  try:
    batch = next(trainer.batches)
    before = host({part: trainer.state[part] for part in ("params", "opt_state", "ema")})
    poisoned = dict(batch, expression=batch["expression"] * jnp.nan)
    with trainer_lib.use_mesh(trainer.mesh, trainer.rules):
      trainer.state, metrics = trainer.step_fn(trainer.state, trainer.frozen_state, poisoned)
      after = host(trainer.state)
      assert int(after["skipped"]) == 1 and int(after["bad_streak"]) == 1
      # The weights, the optimizer's moments and count, and the average: all as they were.
      jax.tree.map(np.testing.assert_array_equal, {part: after[part] for part in before}, before)
      trainer.state, _ = trainer.step_fn(trainer.state, trainer.frozen_state, batch)
    assert int(trainer.state["bad_streak"]) == 0 and int(trainer.state["skipped"]) == 1
  finally:
    trainer.close()


def test_a_workdir_of_another_model_is_refused(data_dir, motion_reference, tmp_path, monkeypatch):
  shutil.copytree(motion_reference.workdir, tmp_path, dirs_exist_ok=True)  # a run with steps 2 and 4

  def no_input(*args, **kwargs):
    raise AssertionError("the input was built before the checkpoint was checked against the config")
  # Each refusal comes before the input (its workers), the model or the frozen runs are made.
  with monkeypatch.context() as patch:
    patch.setattr(trainer_lib.input_pipeline, "make_iterator", no_input)
    other = train_config(data_dir, "motion", total_steps=2, **{"motion.widths": (8, 32)})
    with pytest.raises(InputError, match=r"incompatible model: motion.widths: \[8, 16\] in the checkpoint"):
      run(other, tmp_path)
    # init.run is read only at a run's start: a run started afresh, resumed with one, is refused.
    resumed = train_config(data_dir, "motion", total_steps=2)
    resumed.init.run = str(tmp_path)
    with pytest.raises(InputError, match=r"holds step 4 of a run started from fresh weights, this config names "
                                         r"init.run .*, which is read only when a run starts"):
      run(resumed, tmp_path)
    # The input's position is saved per input worker and per process: it resumes only in as many.
    more_workers = train_config(data_dir, "motion", total_steps=2, **{"input.workers.count": 2})
    with pytest.raises(InputError, match=r"holds step 4 of a run with input.workers.count 0, this config has 2"):
      run(more_workers, tmp_path)
    os.rename(tmp_path / "checkpoints" / "4" / "input" / "process_0-of-1.json",
              tmp_path / "checkpoints" / "4" / "input" / "process_0-of-2.json")
    manifest.write(str(tmp_path / "checkpoints" / "4"))  # as a run of two processes would have saved it
    with pytest.raises(InputError, match=r"holds step 4 of a run of \[2\] process\(es\), this job has 1"):
      run(train_config(data_dir, "motion", total_steps=2), tmp_path)
    os.rename(tmp_path / "checkpoints" / "4" / "input" / "process_0-of-2.json",
              tmp_path / "checkpoints" / "4" / "input" / "process_0-of-1.json")
    manifest.write(str(tmp_path / "checkpoints" / "4"))
  # A run started from another resumes under init.run's new path (the two may move together).
  started = train_config(data_dir, "motion", total_steps=1)
  started.init.run = str(tmp_path)
  run(started, tmp_path / "started")
  moved = train_config(data_dir, "motion", total_steps=2)
  moved.init.run = str(tmp_path / "moved")
  assert int(run(moved, tmp_path / "started")["step"]) == 2


def test_runs_are_compared_on_the_models_they_hold_and_fields_they_predate_read_as_before():
  from fp_jax.train.checkpoints import model_differences  # pylint: disable=g-import-not-at-top
  for task in ("vae", "motion", "dit"):
    saved = json.loads(tiny.get_config(task).to_json())
    for field in ("residual", "patch_size", "decoder_base_dim"):  # a run saved before these existed
      del saved["vae"][field]
    assert model_differences(saved, tiny.get_config(task)) == ""
    saved["vae"]["patch_size"] = 2
    saved["motion"]["widths"] = [8, 16]
    differences = model_differences(saved, tiny.get_config(task))
    assert ("vae.patch_size: 2 in the checkpoint, 1 now" in differences) == (task != "motion")
    assert ("motion.widths" in differences) == (task != "vae")
    # A VAE saved before the linear path existed has none; the tiny config's has one.
    del saved["vae"]["linear_path"]
    differences = model_differences(saved, tiny.get_config(task))
    assert ("vae.linear_path: False in the checkpoint, True now" in differences) == (task != "motion")
    # A DiT saved before these fields existed held the reference on the first frame and ran the
    # plain velocity on 1x2x2 patches.
    saved = json.loads(tiny.get_config(task).to_json())
    for field in ("reference_frames", "reference_residual", "sigma_data", "patch", "warped_reference"):
      del saved["model"][field]
    assert model_differences(saved, tiny.get_config(task)) == (
        "model.reference_frames: 'first' in the checkpoint, 'all' now; "
        "model.reference_residual: False in the checkpoint, True now; "
        "model.warped_reference: False in the checkpoint, True now" if task == "dit" else "")
    # How the DiT runs is not what it computes: a run trained with another kernel, remat policy or
    # compute dtype still matches; its width does not.
    saved = json.loads(tiny.get_config(task).to_json())
    saved["model"].update(attention="cudnn", remat="full", dtype="bfloat16")
    assert model_differences(saved, tiny.get_config(task)) == ""
    saved["model"]["dim"] = 96
    assert model_differences(saved, tiny.get_config(task)) == (
        "model.dim: 96 in the checkpoint, 64 now" if task == "dit" else "")


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(data_dir, tmp_path):
  command = motion_command(data_dir, tmp_path, "--config.total_steps=100000", "--config.checkpoint_every=100000")
  env = dict(os.environ, PYTHONPATH=ROOT)
  process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
  for line in process.stdout:
    if line.startswith("step 3:"):
      process.send_signal(signal.SIGTERM)
      break
  out, err = process.communicate(timeout=120)
  assert process.returncode == 0, err[-2000:]
  saved = sorted(int(name) for name in os.listdir(tmp_path / "checkpoints") if name.isdigit())
  assert len(saved) == 1 and 3 <= saved[0] < 100000
  # Told apart from a finished run (the input workers' part: tests/test_input_pipeline.py).
  assert f"stopped on SIGTERM at step {saved[0]} of 100000; checkpoint saved" in out


def test_unknown_config_field_is_one_line(tmp_path):
  result = subprocess.run([sys.executable, "-c", "from fp_jax.train.cli import run; run()",
                           "--config=" + os.path.join(ROOT, "configs", "tiny.py") + ":dit",
                           f"--workdir={tmp_path}", "--config.totl_steps=3"],
                          cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True)
  assert result.returncode == 2
  assert result.stderr.strip() == ("error: the config " + os.path.join(ROOT, "configs", "tiny.py") +
                                   ":dit has no field 'totl_steps'; did you mean 'total_steps'?")


def test_a_url_for_a_path_is_refused_in_one_line_and_writes_nothing(tmp_path):
  # Taken for a relative folder, gs://BUCKET/run would put checkpoints on the local disk.
  result = subprocess.run([sys.executable, "-c", "from fp_jax.train.cli import run; run()",
                           "--config=" + os.path.join(ROOT, "configs", "tiny.py") + ":dit",
                           "--workdir=gs://bucket/runs/dit"],
                          cwd=tmp_path, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True)
  assert result.returncode == 2 and "Traceback" not in result.stderr
  assert result.stderr.strip() == ("error: --workdir: gs://bucket/runs/dit is a URL; give a local path, with a bucket "
                                   "mounted as a folder (Cloud Storage FUSE, e.g. /gcs/BUCKET/...)")
  assert not os.listdir(tmp_path)
  from data_pipeline.records import ClipRecords  # pylint: disable=g-import-not-at-top
  for read in (lambda: checkpoints.read_run("gs://bucket/runs/vae"),
               lambda: ClipRecords("gs://bucket/data", "tiny", "train")):
    with pytest.raises(InputError, match="is a URL; give a local path"):
      read()


def test_a_run_refused_at_start_up_leaves_no_workdir(tmp_path):
  workdir = tmp_path / "run"
  result = subprocess.run([sys.executable, "-c", "from fp_jax.train.cli import run; run()",
                           "--config=" + os.path.join(ROOT, "configs", "tiny.py") + ":dit",
                           f"--workdir={workdir}", "--config.model.warped_reference=False"],
                          cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1] == (
      "error: model.warped_reference=False needs input.warped_reference to match (the input makes the "
      "warped portrait the model reads), got True")
  assert "Traceback" not in result.stderr
  assert not workdir.exists()


def test_a_run_refused_after_the_checkpoint_folder_is_made_leaves_none(data_dir, tmp_path):
  """optim.frozen is checked when the optimizer first sees the model, after the checkpoint manager
  has made its folder: the refusal takes that empty folder away, and keeps the workdir the user made."""
  result = subprocess.run(motion_command(data_dir, tmp_path, "--config.total_steps=1",
                                         "--config.optim.frozen=('no_such_part/.*',)"),
                          cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True)
  assert result.returncode == 2, result.stderr[-2000:]
  assert result.stderr.strip().splitlines()[-1].startswith("error: optim.frozen: 'no_such_part/.*' names no parameter")
  assert "Traceback" not in result.stderr
  assert tmp_path.is_dir() and not (tmp_path / "checkpoints").exists()


def _damage(step_dir):
  largest = max((p for p in step_dir.rglob("*") if p.is_file() and p.name != "manifest.json"),
                key=lambda p: p.stat().st_size)
  data = bytearray(largest.read_bytes())
  data[len(data) // 2] ^= 0xFF  # same size, one byte altered: only the checksum can tell
  largest.write_bytes(bytes(data))


def test_a_damaged_checkpoint_is_set_aside_and_the_one_before_used(data_dir, motion_reference, tmp_path, capsys):
  shutil.copytree(motion_reference.workdir, tmp_path, dirs_exist_ok=True)  # a run with steps 2 and 4
  step_dir = tmp_path / "checkpoints" / "4"
  assert (step_dir / "manifest.json").exists() and (tmp_path / "checkpoints" / "2" / "manifest.json").exists()
  # A file cut short is refused by what reads a run's weights (fp-export, frozen runs, fp-sample).
  largest = max((p for p in step_dir.rglob("*") if p.is_file() and p.name != "manifest.json"),
                key=lambda p: p.stat().st_size)
  whole = largest.read_bytes()
  largest.write_bytes(whole[:len(whole) // 2])
  with pytest.raises(InputError, match=rf"step 4 of {tmp_path} is damaged \(.* is {len(whole) // 2} bytes, "
                                       rf"was {len(whole)}\): fp-train on that run sets it aside"):
    checkpoints.read_run(str(tmp_path))
  largest.write_bytes(whole)
  assert checkpoints.read_run(str(tmp_path))[1] == 4
  _damage(step_dir)
  capsys.readouterr()
  state = run(train_config(data_dir, "motion", total_steps=5, checkpoint_every=100), tmp_path)
  out = capsys.readouterr().out
  assert "checkpoint step 4 is damaged" in out and "changed" in out
  assert [line.split(":")[0] for line in out.splitlines() if line.startswith("step ")] == \
      ["step 3", "step 4", "step 5"]  # resumed from step 2
  assert int(state["step"]) == 5
  set_aside = list((tmp_path / "checkpoints_set_aside").iterdir())
  assert len(set_aside) == 1 and set_aside[0].name.startswith("4-")


def test_a_step_a_power_loss_emptied_before_its_manifest_is_set_aside(data_dir, motion_reference, tmp_path, capsys):
  # Committed, then the host lost power before the manifest was written and before the step's
  # data reached the disk: its files come back empty. The run resumes from the step before.
  shutil.copytree(motion_reference.workdir, tmp_path, dirs_exist_ok=True)
  step_dir = tmp_path / "checkpoints" / "4"
  (step_dir / "manifest.json").unlink()
  for path in step_dir.rglob("*"):
    if path.is_file():
      path.write_bytes(b"")
  trainer = trainer_lib.Trainer(train_config(data_dir, "motion", total_steps=4, checkpoint_every=2), str(tmp_path))
  try:
    assert trainer.restore_latest() == 2
  finally:
    trainer.close()
  assert "checkpoint step 4 is damaged" in capsys.readouterr().out
  assert [path.name.split("-")[0] for path in (tmp_path / "checkpoints_set_aside").iterdir()] == ["4"]


def test_a_step_s_manifest_is_written_once_it_commits_not_at_the_next_save(data_dir, motion_reference, tmp_path,
                                                                              monkeypatch):
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  shutil.copytree(motion_reference.workdir / "checkpoints" / "2", tmp_path / "checkpoints" / "2")
  events, write, print_step = [], trainer_lib.manifest.write, trainer_lib._print_step  # pylint: disable=protected-access

  def written(step_dir):
    events.append(f"manifest {os.path.basename(step_dir)}")
    write(step_dir)

  def printed(step, values):
    events.append(f"step {step}")
    print_step(step, values)
  monkeypatch.setattr(trainer_lib.manifest, "write", written)
  monkeypatch.setattr(trainer_lib, "_print_step", printed)
  # Every save has committed by the next step (here the manifest's write waits for it).
  monkeypatch.setattr(ocp.CheckpointManager, "is_saving_in_progress", lambda self: False)
  run(train_config(data_dir, "motion", total_steps=4, checkpoint_every=1), tmp_path)  # saves 3 and 4
  assert events.index("manifest 3") < events.index("step 4"), events
  assert manifest.problems(str(tmp_path / "checkpoints" / "3")) == [] and "manifest 4" in events


def test_a_run_whose_every_checkpoint_is_damaged_starts_afresh(data_dir, motion_reference, tmp_path):
  config = train_config(data_dir, "motion", total_steps=4, checkpoint_every=2)
  shutil.copytree(motion_reference.workdir, tmp_path / "run")
  for step in (2, 4):
    _damage(tmp_path / "run" / "checkpoints" / str(step))
  trainer = trainer_lib.Trainer(config, str(tmp_path / "run"))
  try:
    assert not os.listdir(tmp_path / "run" / "checkpoints")  # both set aside as the trainer was made
    assert trainer.restore_latest() == 0
    restarted = host(trainer.state)
  finally:
    trainer.close()
  fresh = trainer_lib.Trainer(config, str(tmp_path / "fresh"))
  try:
    want = host(fresh.state)
  finally:
    fresh.close()
  assert int(restarted["step"]) == 0
  for name in ("params", "opt_state", "ema", "rng"):
    jax.tree.map(np.testing.assert_array_equal, restarted[name], want[name])


def test_dit_starts_from_a_diffusers_wan_checkpoint(data_dir, tmp_path):
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from tests import dit_helpers as helpers  # pylint: disable=g-import-not-at-top
  reference = helpers.diffusers_wan_model(64, 4, 2, ffn_dim=128, text_dim=64, seed=3)
  reference.save_pretrained(tmp_path / "transformer", safe_serialization=True)
  config = train_config(data_dir, "dit", total_steps=1, **WAN_CHANNELS)
  config.init.diffusers_checkpoint = str(tmp_path / "transformer")
  trainer = trainer_lib.Trainer(config, str(tmp_path / "run"))
  try:
    model = nnx.merge(trainer.graphdef, trainer.state["params"])
    ema = nnx.merge(trainer.graphdef, trainer.state["ema"])
  finally:
    trainer.close()
  rng = np.random.default_rng(0)
  channels = config.vae.z_dim
  latents = rng.standard_normal((1, 2, 4, 4, channels)).astype(np.float32)
  timestep = np.array([500.0], np.float32)
  context = rng.standard_normal((1, 3, 64)).astype(np.float32)
  controls = helpers.control_inputs(rng, 1, 2, 4, 4, channels=channels)
  # The tiny DiT runs the flow relative to the warped portrait (model.reference_residual and
  # warped_reference): Wan reads the latents less (1 - s) times it, and the velocity is its answer
  # less it; the first frame's base is the portrait itself.
  assert config.model.reference_residual and config.model.warped_reference
  base = np.array(controls["warped"])
  base[:, 0] = controls["reference"]
  wan_input = latents - (1 - timestep[0] / 1000) * base
  wan_input[:, 0] = 0  # the reference latent takes the first frame's place
  want = helpers.diffusers_forward(reference, wan_input, timestep, context) - base
  forward = nnx.jit(lambda m, *a, **k: m(*a, **k))
  for weights in (model, ema):  # Wan at step 0, controls and all; the EMA starts equal
    got = forward(weights, jnp.asarray(latents), jnp.asarray(timestep), jnp.asarray(context), **controls)
    assert helpers.relative_error(got, want) <= 1e-4


def test_a_bad_diffusers_checkpoint_is_a_clear_error(data_dir, tmp_path):
  config = train_config(data_dir, "dit", total_steps=1)
  config.init.diffusers_checkpoint = str(tmp_path / "nowhere")
  with pytest.raises(InputError, match="no such checkpoint"):
    trainer_lib.Trainer(config, str(tmp_path / "run"))
  (tmp_path / "broken.safetensors").write_bytes(b"not a safetensors file")
  config.init.diffusers_checkpoint = str(tmp_path / "broken.safetensors")
  with pytest.raises(InputError, match="not a readable safetensors file"):
    trainer_lib.Trainer(config, str(tmp_path / "run2"))


def _event_tags(workdir):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tags = set()
  for name in os.listdir(workdir):
    if name.startswith("events.out.tfevents"):
      for event in tf.compat.v1.train.summary_iterator(os.path.join(workdir, name)):
        tags.update(value.tag for value in event.summary.value)
  return tags


def test_a_missing_validation_split_fails_before_training(data_dir, tmp_path):
  config = train_config(data_dir, "motion", total_steps=2)
  config.eval.split = "holdout"
  with pytest.raises(InputError, match="holdout"):
    trainer_lib.Trainer(config, str(tmp_path))


def test_a_bfloat16_first_moment_is_stored_in_bfloat16_and_steps_like_float32():
  import optax  # pylint: disable=g-import-not-at-top
  from fp_jax.train.optimizer import make_optimizer  # pylint: disable=g-import-not-at-top
  optim = tiny.get_config("dit").optim
  start = {"kernel": jnp.linspace(-1.0, 1.0, 64, dtype=jnp.float32).reshape(8, 8)}
  grads = {"kernel": jnp.cos(jnp.arange(64, dtype=jnp.float32)).reshape(8, 8)}
  moments = lambda state, name: [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(state)
                                 if f".{name}" in jax.tree_util.keystr(path)]
  final = {}
  for dtype in ("float32", "bfloat16"):
    with optim.unlocked():
      optim.update(mu_dtype=dtype, warmup_steps=0)
    tx, _ = make_optimizer(optim, 10)
    params, state = start, tx.init(start)
    assert moments(state, "mu")[0].dtype == jnp.dtype(dtype) and moments(state, "nu")[0].dtype == jnp.float32
    for _ in range(3):
      updates, state = tx.update(grads, state, params)
      params = optax.apply_updates(params, updates)
    final[dtype] = np.asarray(params["kernel"])
  assert np.abs(final["float32"] - np.asarray(start["kernel"])).max() > 1e-3  # it did move
  np.testing.assert_allclose(final["bfloat16"], final["float32"], rtol=0, atol=2e-5)


def test_frozen_parameters_are_held_still_and_the_rest_train():
  """optim.frozen: parameters whose whole name matches a pattern get no update and no weight
  decay (a kernel with zero gradient would shrink under AdamW's decay); a pattern that is not a
  regular expression, or names no parameter, is a one-line error."""
  import optax  # pylint: disable=g-import-not-at-top
  from fp_jax.train.optimizer import make_optimizer  # pylint: disable=g-import-not-at-top
  optim = tiny.get_config("vae").optim
  with optim.unlocked():
    optim.update(warmup_steps=0, weight_decay=0.5, frozen=(r"linear_path/.*",))
  start = {"linear_path": {"encode_kernel": jnp.ones((4, 3)), "encode_bias": jnp.ones((3,))},
           "decoder": {"conv_out": {"kernel": jnp.ones((3, 3)), "bias": jnp.ones((3,))}},
           "linear_path_gate": {"kernel": jnp.ones((2, 2))}}  # a name the pattern does not match whole
  grads = jax.tree.map(jnp.ones_like, start)
  grads["linear_path"]["encode_kernel"] = jnp.zeros((4, 3))
  tx, _ = make_optimizer(optim, 10)
  params, state = start, tx.init(start)
  for _ in range(3):
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
  jax.tree.map(np.testing.assert_array_equal, params["linear_path"], start["linear_path"])
  for trained in (params["decoder"]["conv_out"]["kernel"], params["linear_path_gate"]["kernel"]):
    assert np.abs(np.asarray(trained) - 1.0).min() > 1e-3
  with optim.unlocked():
    optim.frozen = ("linear_path/(",)
  with pytest.raises(InputError, match=r"optim.frozen: 'linear_path/\(' is not a regular expression"):
    make_optimizer(optim, 10)
  with optim.unlocked():
    optim.frozen = ("encoder/.*",)
  tx, _ = make_optimizer(optim, 10)
  with pytest.raises(InputError, match=r"optim.frozen: 'encoder/\.\*' names no parameter"):
    tx.init(start)


def test_a_frozen_part_stays_as_it_started_through_steps_a_save_and_a_resume(data_dir, tmp_path):
  """The VAE's image stage holds its linear path still (configs/tiny.py:vae_image): through two
  steps, a checkpoint and a resumed third step it is the fit it started as, in the weights and the
  EMA, while the nets train; resuming under other optim.frozen or optim.muon patterns is a one-line
  error."""
  # Two whole names: what the config names a parameter by, its nnx variable's `.value` left out.
  frozen = {"optim.frozen": (r"linear_path/(en|de)code_kernel", r"linear_path/(en|de)code_bias"),
            "checkpoint_every": 2}
  fresh = trainer_lib.Trainer(train_config(data_dir, "vae", total_steps=3, **frozen), str(tmp_path / "start"))
  start = host(fresh.state["params"])
  fresh.close()
  run(train_config(data_dir, "vae", total_steps=2, **frozen), tmp_path / "run")
  resumed = run(train_config(data_dir, "vae", total_steps=3, **frozen), tmp_path / "run")
  assert int(resumed["step"]) == 3
  jax.tree.map(np.testing.assert_array_equal, resumed["params"]["linear_path"], start["linear_path"])
  # The EMA's weighted mean of equal values may round in the last bit; a step of the path's
  # weights (a learning rate of 5e-5 and up here) would move them far more.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=0), resumed["ema"]["linear_path"],
               start["linear_path"])
  assert np.abs(resumed["params"]["decoder"]["conv_out"]["kernel"]).max() > 0  # zero at the start
  with pytest.raises(InputError, match=r"a run with optim.frozen \['linear_path/\(en\|de\)code_kernel', .*\], "
                                       r"this config has \[\]"):
    run(train_config(data_dir, "vae", total_steps=4), tmp_path / "run")
  muon = {"optim.muon": (r"decoder/conv_out/kernel",)}
  with pytest.raises(InputError, match=r"a run with optim.muon \[\], this config has \['decoder/conv_out/kernel'\]"):
    run(train_config(data_dir, "vae", total_steps=4, **frozen, **muon), tmp_path / "run")


def test_muon_orthogonalises_each_kernel_update_and_leaves_the_rest_to_adamw():
  """optim.muon: a named kernel's first update is the orthogonal polar factor of its gradient (as an
  input x output matrix; the numpy SVD is the reference), each of the DiT's stacked layers on its
  own; the other parameters step exactly as under AdamW alone; frozen ones do not move; a pattern
  that names a vector, or nothing, is a one-line error."""
  import optax  # pylint: disable=g-import-not-at-top
  from fp_jax.train.optimizer import make_optimizer  # pylint: disable=g-import-not-at-top
  optim = tiny.get_config("dit").optim
  with optim.unlocked():
    optim.update(warmup_steps=0, clip_norm=1e6, muon=(r"conv/kernel", r"blocks/attn/kernel"), frozen=(r"still/.*",))
  rng = np.random.default_rng(0)

  def spread(rows, cols):
    """A gradient with widely spread singular values, so its polar factor differs from it."""
    return (rng.normal(size=(rows, cols)) @ np.diag(np.geomspace(1.0, 100.0, cols))).astype(np.float32)

  start = {"conv": {"kernel": jnp.zeros((3, 3, 4, 8)), "bias": jnp.zeros((8,))},
           "blocks": {"attn": {"kernel": jnp.zeros((2, 6, 5))}},
           "head": {"kernel": jnp.zeros((8, 3))}, "still": {"kernel": jnp.ones((2, 2))}}
  layers = np.stack([spread(6, 5), 1e-3 * spread(6, 5)])  # layer 1's gradient 1000x smaller
  grads = {"conv": {"kernel": jnp.asarray(spread(36, 8).reshape(3, 3, 4, 8)), "bias": jnp.ones((8,))},
           "blocks": {"attn": {"kernel": jnp.asarray(layers)}},
           "head": {"kernel": jnp.asarray(spread(8, 3))}, "still": {"kernel": jnp.ones((2, 2))}}
  tx, _ = make_optimizer(optim, 10)
  updates, _ = tx.update(grads, tx.init(start), start)

  def cosine_to_polar(update, gradient):
    u, _, vt = np.linalg.svd(np.asarray(gradient, np.float64), full_matrices=False)
    polar, update = -(u @ vt).ravel(), np.asarray(update, np.float64).ravel()
    return polar @ update / np.linalg.norm(polar) / np.linalg.norm(update)

  assert cosine_to_polar(updates["conv"]["kernel"].reshape(36, 8), grads["conv"]["kernel"].reshape(36, 8)) > 0.97
  step = updates["blocks"]["attn"]["kernel"]
  for layer in range(2):  # each layer orthogonalised alone: the small one's update as large as the big one's
    assert cosine_to_polar(step[layer], layers[layer]) > 0.97
  assert 0.5 < float(jnp.linalg.norm(step[1]) / jnp.linalg.norm(step[0])) < 2.0
  assert cosine_to_polar(updates["head"]["kernel"], grads["head"]["kernel"]) < 0.9  # AdamW's is not the polar factor
  with optim.unlocked():
    optim.muon = ()
  adamw, _ = make_optimizer(optim, 10)
  alone, _ = adamw.update(grads, adamw.init(start), start)
  for name, kind in (("head", "kernel"), ("conv", "bias")):
    np.testing.assert_array_equal(np.asarray(updates[name][kind]), np.asarray(alone[name][kind]))
  np.testing.assert_array_equal(np.asarray(updates["still"]["kernel"]), 0.0)
  params = optax.apply_updates(start, updates)
  np.testing.assert_array_equal(np.asarray(params["still"]["kernel"]), 1.0)
  for patterns, message in (((r"conv/bias",), r"optim.muon: conv/bias has shape \(8,\), not a matrix or a kernel"),
                            ((r"dense/.*",), r"optim.muon: 'dense/\.\*' names no parameter"),
                            ((r"conv/(",), r"optim.muon: 'conv/\(' is not a regular expression")):
    with optim.unlocked():
      optim.muon = patterns
    with pytest.raises(InputError, match=message):
      tx, _ = make_optimizer(optim, 10)
      tx.update(grads, tx.init(start), start)
