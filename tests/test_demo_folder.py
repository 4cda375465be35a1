"""`make demo` keeps a folder's finished stages only for the world version that made them."""
import os
import subprocess

from configs.data import synthetic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_demo(folder):
  return subprocess.run(["make", "-s", "demo", f"DEMO={folder}"], cwd=ROOT, capture_output=True, text=True,
                        timeout=300, check=False)


def test_make_demo_refuses_a_folder_of_another_world_and_writes_nothing(tmp_path):
  current = synthetic.get_config("demo").version
  (tmp_path / "report.json").write_text("{}")  # a demo from before folders were stamped
  result = make_demo(tmp_path)
  assert result.returncode == 2, result.stdout + result.stderr
  assert f"error: {tmp_path} holds a demo of world version older than 1.4.0, this is {current};" in result.stdout
  assert sorted(os.listdir(tmp_path)) == ["report.json"]
  (tmp_path / "world_version").write_text("1.3.0\n")
  result = make_demo(tmp_path)
  assert result.returncode == 2, result.stdout + result.stderr
  assert f"holds a demo of world version 1.3.0, this is {current}; remove it (rm -r {tmp_path})" in result.stdout
  assert (tmp_path / "world_version").read_text() == "1.3.0\n"


def test_the_demos_runs_fit_the_configs_that_read_them():
  """configs/tiny.py's vae, motion and identity runs hold the models its dit config (which
  fp-cache-latents, fp-sample and fp-eval read) describes, compared as the frozen-run check
  compares them, and learn on the face crops it cuts: a model field set for one task alone would
  stop `make demo` at its latent cache."""
  import json  # pylint: disable=g-import-not-at-top
  from configs import tiny  # pylint: disable=g-import-not-at-top
  from fp_jax.train import checkpoints  # pylint: disable=g-import-not-at-top
  reader = tiny.get_config("dit")
  own = lambda task: [section for section in checkpoints.TASK_SECTIONS[task] if section != "task"]
  for task in ("vae", "motion", "identity"):
    config = tiny.get_config(task)
    assert not checkpoints.model_differences(json.loads(config.to_json()), reader, own(task)), task
    where = {"source": "", "stored_share": 0.0}  # where a task's crops come from is its own
    assert config.input.face_crop.to_dict() | where == reader.input.face_crop.to_dict() | where
  drifted = json.loads(tiny.get_config("motion").to_json())
  drifted["motion"]["pose_widths"] = [16, 32]
  assert "motion.pose_widths" in checkpoints.model_differences(drifted, reader, own("motion"))


def test_every_stage_of_a_demo_in_another_folder_reads_that_folder_s_dataset(tmp_path):
  """`make demo DEMO=DIR` renders its dataset into DIR/data, and every command after fp-data reads
  that one, not the configs' default (outputs/demo/data)."""
  listed = subprocess.run(["make", "-n", "demo", f"DEMO={tmp_path}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, check=True).stdout.replace("\\\n", " ")
  commands = [line for line in listed.splitlines() if "/fp-" in line]
  reads = {"fp-data": "--data_dir=", "fp-preview": "--data_dir=", "fp-train": "--config.input.data_dir=",
           "fp-cache-latents": "--config.input.data_dir=", "fp-sample": "--config.input.data_dir=",
           "fp-eval": "--config.input.data_dir="}
  seen = set()
  for command in commands:
    tool = command.split("/fp-", 1)[1].split()[0]
    seen.add("fp-" + tool)
    assert f"{reads['fp-' + tool]}{tmp_path}/data" in command.split(), command
  assert seen == set(reads)
  assert sum("/fp-train " in command for command in commands) == 5
