r"""Runs a command as N JAX processes on this machine (CPU devices, gloo collectives).

  python launch/local_multiprocess.py -n 2 [--devices_per_process=4] -- \
      fp-train --config=configs/tiny.py:motion --workdir=outputs/mp

Each process gets `FP_COORDINATOR_ADDRESS`, `FP_NUM_PROCESSES` and `FP_PROCESS_ID` (fp-train
joins the job with them) and its own simulated CPU devices. If one process fails, the others are
stopped (SIGTERM, then SIGKILL after `--grace` seconds) and its exit status is returned.
"""
import argparse
import os
import signal
import socket
import subprocess
import sys
import time


def free_port():
  with socket.socket() as sock:
    sock.bind(("localhost", 0))
    return sock.getsockname()[1]


def with_device_count(flags, count):
  """The caller's XLA flags, kept, with this process's simulated CPU device count."""
  kept = [flag for flag in flags.split() if not flag.startswith("--xla_force_host_platform_device_count")]
  return " ".join(kept + [f"--xla_force_host_platform_device_count={count}"])


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("-n", "--num_processes", type=int, default=2)
  parser.add_argument("--devices_per_process", type=int, default=4)
  parser.add_argument("--grace", type=float, default=30.0)
  parser.add_argument("command", nargs=argparse.REMAINDER)
  args = parser.parse_args()
  command = args.command[1:] if args.command[:1] == ["--"] else args.command
  if not command or args.num_processes < 1:
    print("error: give -n N and a command after --", file=sys.stderr)
    sys.exit(2)
  address = f"localhost:{free_port()}"
  processes = []
  for index in range(args.num_processes):
    env = dict(os.environ, FP_COORDINATOR_ADDRESS=address, FP_NUM_PROCESSES=str(args.num_processes),
               FP_PROCESS_ID=str(index), JAX_PLATFORMS="cpu",
               XLA_FLAGS=with_device_count(os.environ.get("XLA_FLAGS", ""), args.devices_per_process))
    processes.append(subprocess.Popen(command, env=env))
  status = 0
  while processes:
    for process in list(processes):
      code = process.poll()
      if code is None:
        continue
      processes.remove(process)
      if code != 0 and status == 0:
        status = code
        for other in processes:  # one failed: the job cannot go on
          other.send_signal(signal.SIGTERM)
        deadline = time.time() + args.grace
        for other in processes:
          try:
            other.wait(timeout=max(0.0, deadline - time.time()))
          except subprocess.TimeoutExpired:
            other.kill()
    time.sleep(0.2)
  sys.exit(status)


if __name__ == "__main__":
  main()
