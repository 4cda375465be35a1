"""Two JAX processes x 4 devices train exactly like one process x 8 devices, and resume."""
import os
import subprocess
import sys

import jax
import numpy as np

from fp_jax.train import checkpoints
from tests.run_helpers import motion_command, step_losses

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fp_train(data_dir, workdir, steps):
  return motion_command(data_dir, workdir, f"--config.total_steps={steps}", "--config.checkpoint_every=2")


def two_processes(command):
  command = [sys.executable, os.path.join(ROOT, "launch", "local_multiprocess.py"), "-n", "2",
             "--devices_per_process", "4", "--"] + command
  result = subprocess.run(command, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu"),
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout


def test_two_processes_equal_one_and_resume(data_dir, motion_reference, tmp_path):
  # The one-process reference (8 devices, as conftest set) ran the same config for 4 steps.
  double = two_processes(fp_train(data_dir, tmp_path / "two", 2))  # stop after 2 ...
  double += two_processes(fp_train(data_dir, tmp_path / "two", 4))  # ... and resume to 4
  assert len(step_losses(double)) == 4
  np.testing.assert_allclose(step_losses(double), motion_reference.losses, rtol=1e-5)
  one, _ = checkpoints.latest_params(str(motion_reference.workdir), which="params")
  two, step = checkpoints.latest_params(str(tmp_path / "two"), which="params")
  assert step == 4
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6),
               two, one)


def test_when_one_process_dies_the_other_stops_in_bounded_time(data_dir, tmp_path):
  import signal  # pylint: disable=g-import-not-at-top
  import socket  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  with socket.socket() as sock:
    sock.bind(("localhost", 0))
    port = sock.getsockname()[1]
  command = fp_train(data_dir, tmp_path / "run", 100_000)
  processes = []
  for index in range(2):
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", FP_COORDINATOR_ADDRESS=f"localhost:{port}",
               FP_NUM_PROCESSES="2", FP_PROCESS_ID=str(index), FP_HEARTBEAT_SECONDS="5",
               XLA_FLAGS=os.environ["XLA_FLAGS"].replace("device_count=8", "device_count=2"))
    processes.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
  survivor, victim = processes
  try:
    for line in survivor.stdout:  # training is under way once process 0 reports step 3
      if line.startswith("step 3:"):
        break
    victim.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    code = survivor.wait(timeout=120)
    assert code != 0
    assert time.monotonic() - killed < 60  # heartbeat 5 s; not the hang of a blocked collective
  finally:
    for process in processes:
      process.kill()
      process.wait()


PARAMS_FINITE = """
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec
from fp_jax.parallel import distributed
from fp_jax.train import checkpoints
distributed.initialize_from_env()
sharding = NamedSharding(jax.make_mesh((8,), ("fsdp",)), PartitionSpec("fsdp"))
values = np.arange(16, dtype=np.float32)
good = jax.make_array_from_callback((16,), sharding, lambda index: values[index])
values[11] = np.nan  # on the sixth device: the second process's
bad = jax.make_array_from_callback((16,), sharding, lambda index: values[index])
assert not good.is_fully_addressable
print("finite:", checkpoints.params_finite({"w": good, "count": jnp.int32(3)}), checkpoints.params_finite({"w": bad}))
"""


def test_the_save_time_finiteness_check_reads_parameters_split_over_processes():
  # A parameter sharded over both processes cannot be fetched by either; the check before every
  # save must still see a NaN that only the other process holds.
  out = two_processes([sys.executable, "-c", PARAMS_FINITE])
  assert out.count("finite: True False") == 2, out
