"""The CPU backend's freed temporaries stay mapped: a second execution faults no pages in."""
import os
import subprocess
import sys

import pytest

from fp_jax import host_memory

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A program whose 4096 x 4096 fp32 intermediate (64 MiB, beyond glibc's largest mmap threshold)
# XLA must hold as a temporary; the page faults of three executions after a warm one.
PROGRAM = """
import resource, sys
from fp_jax import host_memory
print(host_memory.keep_freed_memory_on_cpu())
import jax, jax.numpy as jnp
step = jax.jit(lambda x: jnp.sum((x @ x.T) @ x))
x = jnp.ones((4096, 64), jnp.float32)
step(x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
  step(x).block_until_ready()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 3)
"""


def faults_per_execution(**env):
  environment = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": REPO, **env}
  environment.pop("XLA_FLAGS", None)
  out = subprocess.run([sys.executable, "-c", PROGRAM], env=environment, capture_output=True, text=True,
                       check=True).stdout.split()
  return out[0] == "True", float(out[1])


@pytest.mark.skipif(host_memory.glibc() is None, reason="mallopt is glibc's")
def test_temporaries_are_reused_on_cpu_and_faulted_in_afresh_when_turned_off():
  applied, kept = faults_per_execution()
  not_applied, fresh = faults_per_execution(FP_KEEP_HOST_MEMORY="0")
  assert applied and not not_applied
  assert fresh > 64 * 2**20 / 4096  # the 64 MiB temporary, page by page, every execution
  assert kept < 0.05 * fresh


def test_only_a_process_pinned_to_the_cpu_changes_its_allocator(monkeypatch):
  for platforms, pinned in (("cpu", True), ("cpu,cpu", True), ("tpu", False), ("cpu,tpu", False), ("", False)):
    monkeypatch.setenv("JAX_PLATFORMS", platforms)
    assert host_memory.cpu_only() == pinned, platforms
  monkeypatch.setenv("JAX_PLATFORMS", "tpu")
  assert not host_memory.keep_freed_memory_on_cpu()
