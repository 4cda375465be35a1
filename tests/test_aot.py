"""TPU readiness on a CPU host: the tiny config's train and sampling steps compile for a v5p
topology (libtpu's compile-only devices) with splash and ulysses attention, and fp-aot's figures."""
import functools
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from fp_jax.aot import estimate, programs, topology
from fp_jax.parallel import attention, mesh as mesh_lib
from fp_jax.parallel.sharding import DEFAULT_RULES, use_mesh

VIDEO = programs.Video(5, 32, 32)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(mesh, batch, **model):
  config = tiny.get_config("dit")
  config.input.window.num_frames = VIDEO.frames
  config.input.global_batch_size = batch
  config.mesh = mesh
  config.model.update(model)
  return config


@pytest.fixture(scope="module")
def v5p():
  return topology.devices("v5p:2x2x1")  # 4 chips, one host


def splash_kernel_calls(kernels):
  """Splash kernels in compiled HLO by kind: forward, fused dkv (which makes dq too), dq."""
  kinds = {"fwd": 0, "dkv": 0, "dq": 0}
  for name, count in kernels.items():
    kinds[name.split("_")[2]] += count
  return kinds


def test_train_step_with_context_parallel_splash_compiles_and_is_estimated(v5p):
  devices, chip = v5p
  config = tiny_config(dict(data=1, fsdp=2, context=2, tensor=1), 2, attention="splash",
                       remat="offload_projections", layers=3)
  mesh = mesh_lib.make_mesh(config.mesh, devices)
  program = programs.build("train", config, mesh, DEFAULT_RULES, VIDEO)
  # The optimizer's moments and the EMA are sharded as the parameters are.
  state = program.args[0]
  kernel = lambda tree: tree["blocks"]["ffn_in"]["kernel"].value.sharding
  assert kernel(state["params"]).spec[1] == "fsdp"
  adam = state["opt_state"][1][0]
  assert kernel(adam.mu) == kernel(adam.nu) == kernel(state["ema"]) == kernel(state["params"])

  result = estimate.estimate("train", config, mesh, DEFAULT_RULES, VIDEO, chip, log=lambda _: None)
  # The fused backward (one kernel for dq, dk and dv) and, with the forward kernel's residuals
  # kept by the remat policy, one forward kernel per backward kernel: nothing runs twice.
  calls = splash_kernel_calls(result.pallas_kernels)
  assert calls["dq"] == 0 and calls["fwd"] == calls["dkv"] > 0, result.pallas_kernels
  # Arguments: the state's shards at least, all inputs' at most (jit drops the unused frozen VAE).
  shards = lambda tree: sum(leaf.dtype.itemsize * np.prod(leaf.sharding.shard_shape(leaf.shape))
                            for leaf in jax.tree.leaves(tree))
  assert shards(state) <= result.memory.arguments <= shards(program.args)
  assert result.memory.aliased > 0  # the state is donated
  assert 0 < result.memory.total < chip.hbm_gib * estimate.GIB
  # Full rematerialisation whose saved layer inputs wait in host memory: one per layer and chip.
  layer_input = 2 * (2 * 2 * 2) * config.model.dim * 4 // mesh.size  # batch 2 x 8 tokens x dim, float32
  assert result.memory.host_temporaries >= 3 * layer_input
  # XLA costs the scanned body once: the extrapolation over 3 layers finds more than its raw count.
  xla_flops = result.executed_flops - result.pallas_flops
  assert xla_flops > 1.2 * result.raw_xla_flops * mesh.size
  # The attention XLA cannot see is counted: 3 layers x (forward, 10/4 fused backward), on the
  # 8 tokens padded to one 128-token tile.
  forward = 4 * 2 * 128 * 128 * config.model.dim * 3
  assert result.pallas_flops == forward * (1 + 10 / 4)
  assert result.pallas_seconds == pytest.approx(result.pallas_flops / (chip.peak_flops * mesh.size))
  assert result.model_flops < result.executed_flops  # full remat recomputes the rest of the forward
  assert result.step_seconds > result.xla_seconds > 0

  # Without the attention residuals among what it keeps, the remat runs the forward kernel again.
  config.model.remat = "offload_inputs"
  rerun = programs.build("train", config, mesh, DEFAULT_RULES, VIDEO)
  compiled = estimate.compile_program(rerun)
  calls = splash_kernel_calls(estimate.pallas_kernels(compiled.as_text()))
  assert calls["dq"] == 0 and calls["fwd"] == 2 * calls["dkv"] > 0
  assert estimate.pallas_flops(config, rerun, train=True) == forward * (2 + 10 / 4)
  assert estimate.memory_of(compiled).host_temporaries < result.memory.host_temporaries


def test_state_parked_in_host_memory_leaves_the_chips_hbm(v5p):
  devices, _ = v5p
  mesh = mesh_lib.make_mesh(dict(data=1, fsdp=4, context=1, tensor=1), devices)
  memories = {}
  for parts in ((), ("ema", "opt_state", "params")):
    config = tiny_config(dict(data=1, fsdp=4, context=1, tensor=1), 4, remat="full", layers=2)
    config.offload_state = parts
    program = programs.build("train", config, mesh, DEFAULT_RULES, VIDEO)
    memories[parts] = estimate.memory_of(estimate.compile_program(program))
  state = program.args[0]
  for part in ("ema", "opt_state", "params"):
    assert {leaf.sharding.memory_kind for leaf in jax.tree.leaves(state[part])} == {"pinned_host"}
  assert {leaf.sharding.memory_kind for leaf in jax.tree.leaves(program.args[2])} == {"device"}  # the batch
  shards = lambda tree: sum(leaf.dtype.itemsize * np.prod(leaf.sharding.shard_shape(leaf.shape))
                            for leaf in jax.tree.leaves(tree))
  parked = shards(state["ema"]) + shards(state["opt_state"]) + shards(state["params"])
  on_device, on_host = memories[()], memories[("ema", "opt_state", "params")]
  # What leaves HBM arrives in host memory: the parked shards (padded to the chip's tiles).
  assert on_device.host_arguments == 0
  assert on_device.arguments - on_host.arguments == on_host.host_arguments >= parked


def test_sampling_step_with_ulysses_compiles(v5p):
  devices, _ = v5p
  config = tiny_config(dict(data=1, fsdp=1, context=2, tensor=2), 1, attention="ulysses")
  mesh = mesh_lib.make_mesh(config.mesh, devices)
  program = programs.build("sample", config, mesh, DEFAULT_RULES, VIDEO)
  compiled = estimate.compile_program(program)
  assert "all-to-all" in compiled.as_text()  # tokens traded for heads over `context`
  latents = program.args[1]
  assert compiled.output_shardings.is_equivalent_to(latents.sharding, latents.ndim)
  assert compiled.memory_analysis().argument_size_in_bytes > 0


@pytest.mark.parametrize("max_blocks", [None, dict(q=128, kv=128, kv_backward=128)])
def test_sharded_splash_matches_einsum_in_interpret_mode(max_blocks):
  """Each shard's 68 queries pad to one 128-token tile; the 136 keys to one 256-token tile or,
  with tiles capped at 128, to two, and the fused backward then sums two partial dq."""
  mesh = mesh_lib.make_mesh({"data": 2, "context": 2, "tensor": 2})
  rng = np.random.default_rng(0)
  q, k, v = (jnp.asarray(rng.standard_normal((2, 136, 4, 32)), jnp.float32) for _ in range(3))
  splash = functools.partial(attention.splash_attention, interpret=True, max_blocks=max_blocks)
  loss = lambda kernel: lambda q, k, v: jnp.sum(jnp.sin(kernel(q, k, v)))
  want, want_grads = attention.einsum_attention(q, k, v), jax.grad(loss(attention.einsum_attention),
                                                                   argnums=(0, 1, 2))(q, k, v)
  with use_mesh(mesh):
    spec = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp"), "context", "tensor"))
    sharded = [jax.device_put(x, spec) for x in (q, k, v)]
    got = jax.jit(splash)(*sharded)
    grads = jax.jit(jax.grad(loss(splash), argnums=(0, 1, 2)))(*sharded)
  np.testing.assert_allclose(got, want, atol=2e-5)
  for a, b in zip(grads, want_grads):
    np.testing.assert_allclose(a, b, atol=2e-5)


@pytest.mark.parametrize("args, message", [
    (["--topology=v9z:2x2"], "error: --topology 'v9z:2x2': unknown TPU generation 'v9z'"),
    (["--topology=v5p:3x3x3"], "error: --topology 'v5p:3x3x3': "),
    (["--topology=v5p:2x2x1", "--config.model.remat=sometimes"], "error: remat must be one of"),
])
def test_fp_aot_mistakes_are_one_line_errors(args, message):
  result = subprocess.run([sys.executable, "-c", "from fp_jax.aot.cli import run; run()",
                           "--config=configs/tiny.py", *args], cwd=ROOT, capture_output=True, text=True,
                          check=False)
  assert result.returncode == 2, result.stderr[-2000:]
  errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and errors[0].startswith(message), result.stderr[-2000:]
  assert "Traceback" not in result.stderr and "fits:" not in result.stdout


def test_splash_tiles_at_the_14b_shape_fit_a_v5p_core(v5p):
  """One context chip's share of wan_14b at 81x480x832 (10 heads of 32,760 tokens after Ulysses):
  the tiles splash picks compile for a v5p core (its scoped VMEM limits the fused backward's key
  tile), the forward and the fused backward once per head, and no dq kernel."""
  devices, _ = v5p
  sizes = attention.splash_block_sizes(32760, 32760)
  assert (sizes.block_q, sizes.block_kv, sizes.block_kv_dkv) == (512, 1024, 2048)
  assert sizes.use_fused_bwd_kernel
  shape = jax.ShapeDtypeStruct((1, 32760, 10, 128), jnp.bfloat16,
                               sharding=jax.sharding.SingleDeviceSharding(devices[0]))
  loss = lambda q, k, v: jnp.sum(attention.splash_kernel(q, k, v).astype(jnp.float32))
  compiled = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(shape, shape, shape).compile()
  calls = splash_kernel_calls(estimate.pallas_kernels(compiled.as_text()))
  assert calls == {"fwd": 10, "dkv": 10, "dq": 0}
