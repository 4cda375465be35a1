"""Step FLOPs for MFU: exact matmul and convolution counts, loops and shard_map included."""
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from fp_jax.train import flops


def xla_flops(fn, *args):
  """XLA's own count (the independent reference; it sees no loops in these functions)."""
  return float(jax.jit(fn).lower(*args).compile().cost_analysis()["flops"])


def test_matmuls_match_the_analytic_count_and_xla():
  x, w1, w2 = jnp.ones((8, 32)), jnp.ones((32, 64)), jnp.ones((64, 16))
  fn = lambda x, w1, w2: (x @ w1) @ w2
  assert flops.step_flops(fn, x, w1, w2) == 2 * 8 * 32 * 64 + 2 * 8 * 64 * 16
  batched = lambda a, b: jnp.einsum("bqd,bkd->bqk", a, b)
  a, b = jnp.ones((3, 5, 7)), jnp.ones((3, 11, 7))
  assert flops.step_flops(batched, a, b) == 2 * 3 * 5 * 11 * 7 == xla_flops(batched, a, b)


def test_grouped_and_strided_convolutions_match_xla():
  # VALID padding: with SAME, XLA leaves out the taps that fall on padding, we count them all.
  x = jnp.ones((2, 16, 16, 8))
  for kernel_shape, groups, stride in (((3, 3, 8, 12), 1, 1), ((3, 3, 2, 12), 4, 2), ((1, 5, 8, 4), 1, 1)):
    kernel = jnp.ones(kernel_shape)
    conv = lambda x, k, groups=groups, stride=stride: jax.lax.conv_general_dilated(
        x, k, (stride, stride), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=groups)
    assert flops.step_flops(conv, x, kernel) == xla_flops(conv, x, kernel)


def test_a_scan_counts_its_body_times_its_length_with_gradients():
  layers, x = jnp.ones((6, 32, 32)), jnp.ones((4, 32))

  def scanned(layers, x):
    return jnp.sum(jax.lax.scan(lambda h, w: (h @ w, None), x, layers)[0])

  def unrolled(layers, x):
    for w in layers:
      x = x @ w
    return jnp.sum(x)

  forward = 6 * 2 * 4 * 32 * 32
  assert flops.step_flops(scanned, layers, x) == flops.step_flops(unrolled, layers, x) == forward
  # Backward: two products per layer (input and weight gradients), the first layer's input
  # gradient included since x is differentiated too.
  grad = lambda fn: jax.grad(fn, argnums=(0, 1))
  assert flops.step_flops(grad(scanned), layers, x) == flops.step_flops(grad(unrolled), layers, x) == 3 * forward
  # XLA's count of the unrolled products (no sum: nothing else to count) agrees.
  def chain(layers, x):
    for w in layers:
      x = x @ w
    return x
  assert xla_flops(chain, layers, x) == forward


def test_shard_map_bodies_count_once_per_device():
  mesh = jax.make_mesh((len(jax.devices()),), ("x",))
  a = jax.device_put(jnp.ones((8 * len(jax.devices()), 16)), NamedSharding(mesh, P("x")))
  w = jnp.ones((16, 24))
  local = jax.shard_map(lambda a, w: a @ w, mesh=mesh, in_specs=(P("x"), P()), out_specs=P("x"))
  assert flops.step_flops(local, a, w) == flops.step_flops(lambda a, w: a @ w, a, w) == 2 * a.shape[0] * 16 * 24


def test_peak_is_the_configured_value_or_a_positive_measurement():
  assert flops.peak_flops_per_device(123.0) == 123.0
  measured = flops.peak_flops_per_device()
  assert np.isfinite(measured) and measured > 1e8  # any CPU does over 0.1 GFLOP/s
