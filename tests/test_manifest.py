"""Checkpoint manifests: what a crash while writing one leaves behind is never taken for damage."""
import json

from fp_jax.train import manifest


def _step(tmp_path):
  step_dir = tmp_path / "7"
  (step_dir / "state").mkdir(parents=True)
  (step_dir / "state" / "data").write_bytes(b"\x01" * 1000)
  (step_dir / "_CHECKPOINT_METADATA").write_text("{}")
  return step_dir


def test_a_manifest_finds_a_changed_or_missing_file(tmp_path):
  step_dir = _step(tmp_path)
  manifest.write(step_dir)
  assert manifest.problems(step_dir) == []
  assert set(json.loads((step_dir / manifest.MANIFEST).read_text())) == {"state/data", "_CHECKPOINT_METADATA"}
  (step_dir / "state" / "data").write_bytes(b"\x02" * 1000)
  (step_dir / "_CHECKPOINT_METADATA").unlink()
  assert manifest.problems(step_dir) == ["_CHECKPOINT_METADATA missing", "state/data changed"]


def test_a_temporary_manifest_left_by_a_kill_is_not_recorded(tmp_path):
  step_dir = _step(tmp_path)
  (step_dir / manifest.TEMPORARY).write_text('{"half": ')  # a kill during an earlier write
  manifest.write(step_dir)
  assert not (step_dir / manifest.TEMPORARY).exists()
  assert manifest.problems(step_dir) == []


def test_a_manifest_cut_short_leaves_an_intact_step_in_use(tmp_path):
  step_dir = _step(tmp_path)
  manifest.write(step_dir)
  for cut in ("", '{"state/data": {"size": 10'):
    (step_dir / manifest.MANIFEST).write_text(cut)
    assert manifest.problems(step_dir) == []


def test_a_step_without_a_manifest_is_checked_for_what_a_power_loss_leaves(tmp_path):
  # A crash right after Orbax committed the step, before its manifest: its structure is checked.
  step_dir = _step(tmp_path)
  assert manifest.problems(step_dir) == []
  (step_dir / "_CHECKPOINT_METADATA").write_bytes(b"\x00" * 2)  # metadata whose bytes never reached the disk
  (step_dir / "state" / "data").write_bytes(b"")  # a file the crash left empty
  assert manifest.problems(step_dir) == ["_CHECKPOINT_METADATA is not valid JSON", "state/data is empty"]
  # A manifest cut short reads as none: the same check.
  (step_dir / manifest.MANIFEST).write_text('{"state/data": {"size": 10')
  assert manifest.problems(step_dir) == ["_CHECKPOINT_METADATA is not valid JSON", "state/data is empty"]
