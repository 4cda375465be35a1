"""LPIPS (Zhang et al. 2018, v0.1, AlexNet trunk) in JAX, from weights the user supplies.

No weights can ship with the project, so fp-eval scores LPIPS only when given them: safetensors
files holding the trunk (the `lpips` package's `net.sliceK.N.*` names, or torchvision's AlexNet
`features.N.*`) and the five linear heads (`linK.model.1.weight`, or `linK.model.0.weight`
without dropout). The `lpips` package's module state dict saved with safetensors holds all of
them; its shipped `weights/v0.1/alex.pth` holds the heads and torchvision's AlexNet file the
trunk, so two files, one each, serve as well.

The distance: both images scaled by LPIPS's fixed input statistics, through the trunk; at each
of the five ReLU outputs the features are normalised over channels, their squared difference
weighted per channel by the head and averaged over the positions; the five layers add up.
"""
import jax
import jax.numpy as jnp
import numpy as np

from data_pipeline.errors import InputError, require
from fp_jax.export import weights_files

# The trunk's convolutions: torchvision's AlexNet feature index, input and output channels, kernel,
# stride, padding; a max pool (3x3, stride 2) comes before convolutions 3 and 6. LPIPS taps the
# ReLU after each, and its head `linK` weighs the K-th tap's channels.
CONVOLUTIONS = ((0, 3, 64, 11, 4, 2), (3, 64, 192, 5, 1, 2), (6, 192, 384, 3, 1, 1), (8, 384, 256, 3, 1, 1),
                (10, 256, 256, 3, 1, 1))
POOL_BEFORE = (3, 6)
SHIFT = np.array([-0.030, -0.088, -0.188], np.float32)
SCALE = np.array([0.458, 0.448, 0.450], np.float32)


def shapes():
  """`{name: shape}` of the parameters `load` gives (weights in PyTorch's OIHW layout)."""
  result = {}
  for layer, (index, width_in, width_out, kernel, _, _) in enumerate(CONVOLUTIONS):
    result[f"conv{index}.weight"] = (width_out, width_in, kernel, kernel)
    result[f"conv{index}.bias"] = (width_out,)
    result[f"lin{layer}"] = (1, width_out, 1, 1)
  return result


def _file_names(name):
  """The names a parameter goes by in the files: the trunk's torchvision's AlexNet's or the lpips
  package's (`net.sliceK`), the heads' the package's with dropout or without."""
  if name.startswith("lin"):
    return (f"{name}.model.1.weight", f"{name}.model.0.weight")
  index, kind = name[len("conv"):].split(".")
  layer = [c[0] for c in CONVOLUTIONS].index(int(index))
  return (f"features.{index}.{kind}", f"net.slice{layer + 1}.{index}.{kind}")


def load(paths):
  """`{name: float32 array}` LPIPS weights from safetensors `paths` (a list, or a comma-separated
  string); a one-line error lists what is missing or mis-shaped."""
  paths = [p for p in paths.split(",") if p] if isinstance(paths, str) else list(paths)
  require(paths, "LPIPS needs weight files: --lpips=FILE[,FILE]")
  state = {}
  for path in paths:
    state.update(weights_files.load_state_dict(path))
  params, missing, misshaped = {}, [], []
  for name, shape in shapes().items():
    found = [file_name for file_name in _file_names(name) if file_name in state]
    if not found:
      missing.append("{} (or {})".format(*_file_names(name)))
      continue
    params[name] = np.asarray(state[found[0]], np.float32)
    if params[name].shape != shape:
      misshaped.append(f"{found[0]} {list(params[name].shape)} (needs {list(shape)})")
  if missing or misshaped:
    problems = ([f"missing {', '.join(missing)}"] if missing else []) + (
        [f"mis-shaped {', '.join(misshaped)}"] if misshaped else [])
    raise InputError(f"{','.join(paths)} are not LPIPS AlexNet weights: {'; '.join(problems)}")
  return params


def _features(params, images):
  """NHWC images in [-1, 1] -> the five ReLU outputs."""
  x = (images - SHIFT) / SCALE
  outputs = []
  for index, _, _, _, stride, padding in CONVOLUTIONS:
    if index in POOL_BEFORE:
      x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), "VALID")
    kernel = jnp.transpose(params[f"conv{index}.weight"], (2, 3, 1, 0))  # OIHW -> HWIO
    # Full fp32 on every backend: a GPU's TF32 or a TPU's one-pass bf16 products would move the
    # score by 1e-4 to 1e-3, more than the reference parity this module is tested to.
    x = jax.lax.conv_general_dilated(x, kernel, (stride, stride), [(padding, padding)] * 2,
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=jax.lax.Precision.HIGHEST)
    x = jax.nn.relu(x + params[f"conv{index}.bias"])
    outputs.append(x)
  return outputs


@jax.jit
def distance(params, a, b):
  """LPIPS between image batches `a`, `b` `[N, H, W, 3]` in [-1, 1] -> `[N]`."""
  total = 0.0
  for layer, (fa, fb) in enumerate(zip(_features(params, a), _features(params, b))):
    unit = lambda f: f / (jnp.sqrt(jnp.sum(jnp.square(f), axis=-1, keepdims=True)) + 1e-10)
    weights = params[f"lin{layer}"].reshape(-1)
    total = total + jnp.mean(jnp.sum(jnp.square(unit(fa) - unit(fb)) * weights, axis=-1), axis=(1, 2))
  return total


# The trunk's strides and pools leave nothing of frames under 31 pixels a side.
MIN_SIZE = 31


def check_size(height, width):
  require(min(height, width) >= MIN_SIZE, f"LPIPS needs frames of at least {MIN_SIZE}x{MIN_SIZE}, got {height}x{width}")


def video_lpips(params, generated, target):
  """Mean LPIPS over the frames of uint8 videos `[N, H, W, 3]`."""
  check_size(*np.shape(generated)[1:3])
  to_unit = lambda video: jnp.asarray(video, jnp.float32) / 127.5 - 1.0
  return float(jnp.mean(distance(params, to_unit(generated), to_unit(target))))
