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
