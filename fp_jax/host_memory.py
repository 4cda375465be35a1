"""On the CPU backend, keep the host memory XLA frees mapped, for its next step to reuse.

XLA:CPU takes a compiled program's temporaries as one allocation per execution (2.4 GB for the
bench DiT's train step). glibc serves an allocation that large with a fresh mmap from whichever
arena the executing thread holds, and unmaps it when it is freed, so every step the kernel maps
and zeroes it again, page by page: ~530k page faults a step, and on a 2-core VM 3.7 s of a 6.3 s
step spent in the kernel (benchmarks/dit_step.py). With one arena, no mmap and no trimming, the
freed block stays in the heap and the next step takes it back at once.

The entry points that run models (fp-train, fp-cache-latents, fp-sample, fp-eval) and the
benchmarks call `keep_freed_memory_on_cpu()` first, before any thread has taken an arena. It acts
only where the process is pinned to the CPU (`JAX_PLATFORMS=cpu`, as `make demo` and the tests
run): on TPU and GPU the temporaries live on the device, and host threads keep their own arenas.
`FP_KEEP_HOST_MEMORY=0` turns it off. The process's resident memory then stays at its high-water
mark, which on CPU is what the next step needs anyway.
"""
import ctypes
import os

# mallopt's parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
NEVER = -1  # M_TRIM_THRESHOLD's "disable trimming completely" (mallopt(3))


def cpu_only():
  """Whether JAX_PLATFORMS pins this process to the CPU backend."""
  platforms = [p.strip() for p in os.environ.get("JAX_PLATFORMS", "").split(",") if p.strip()]
  return bool(platforms) and all(p == "cpu" for p in platforms)


def glibc():
  """This process's glibc, or None where malloc is another one's (musl, macOS)."""
  try:
    os.confstr("CS_GNU_LIBC_VERSION")
  except (ValueError, OSError):
    return None
  return ctypes.CDLL(None)


def keep_freed_memory():
  """One malloc arena, no mmap, no trim; True where glibc took all three settings."""
  libc = glibc()
  if libc is None:
    return False
  settings = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, NEVER))
  return all(libc.mallopt(ctypes.c_int(param), ctypes.c_int(value)) == 1 for param, value in settings)


def keep_freed_memory_on_cpu():
  """`keep_freed_memory()` where the process runs on the CPU backend and it is not turned off."""
  if cpu_only() and os.environ.get("FP_KEEP_HOST_MEMORY", "1") != "0":
    return keep_freed_memory()
  return False
