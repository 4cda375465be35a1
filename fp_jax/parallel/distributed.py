"""Starting the JAX distributed runtime: TPU pods, GPU clusters, or several local CPU processes."""
import os

import jax


def initialize(coordinator_address=None, num_processes=None, process_id=None, heartbeat_seconds=100):
  """Joins this process to the job. Without arguments, TPU and SLURM jobs find their peers.

  On CPU (tests, local multi-process runs) cross-process collectives go through gloo. A process
  whose heartbeat stops for `heartbeat_seconds` (it died, or its host did) ends the whole job.
  """
  if os.environ.get("JAX_PLATFORMS", "").startswith("cpu"):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if num_processes == 1:
    return
  jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                             process_id=process_id, heartbeat_timeout_seconds=int(heartbeat_seconds))


def initialize_from_env():
  """Joins the job the environment describes, if any: `FP_NUM_PROCESSES=auto` on TPU VM workers
  (JAX finds its peers), or `FP_COORDINATOR_ADDRESS`, `FP_NUM_PROCESSES`, `FP_PROCESS_ID` from
  launch/local_multiprocess.py; `FP_HEARTBEAT_SECONDS` (default 100)."""
  count = os.environ.get("FP_NUM_PROCESSES")
  if not count:
    return
  heartbeat = int(os.environ.get("FP_HEARTBEAT_SECONDS", 100))
  if count == "auto":
    initialize(heartbeat_seconds=heartbeat)
  else:
    initialize(os.environ["FP_COORDINATOR_ADDRESS"], int(count), int(os.environ["FP_PROCESS_ID"]), heartbeat)
