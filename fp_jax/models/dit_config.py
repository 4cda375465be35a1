"""The DiT's static configuration (hashable: it lives in the module graph)."""
import dataclasses

import jax
import jax.numpy as jnp

from data_pipeline.errors import InputError, require
from fp_jax.parallel import attention

EXPRESSION_MODES = ("none", "adaln", "cross_attention", "both")
REFERENCE_FRAMES = ("first", "all")
REMAT_POLICIES = ("none", "full", "offload_inputs", "offload_attention", "offload_projections",
                  "save_matmuls", "offload")
LAYER_INPUT = "layer_input"  # the checkpoint name of each block's input (the remat residual)
# Checkpoint names of matmul outputs a remat policy may keep (fp_jax/models/dit_block.py).
SELF_ATTENTION_OUTPUT = "self_attention_output"  # after the output projection
FFN_HIDDEN, FFN_OUTPUT = "ffn_hidden", "ffn_output"  # before the GELU; after the second matmul
POSE_DIM = 10  # 6D rotation, translation, scale
RAY_DIM = 6


@dataclasses.dataclass(frozen=True)
class DiTConfig:
  dim: int
  heads: int
  layers: int
  ffn_dim: int
  in_channels: int = 16
  out_channels: int = 16
  patch: tuple = (1, 2, 2)
  freq_dim: int = 256
  text_dim: int = 4096
  eps: float = 1e-6
  rope_theta: float = 10000.0
  vae_stride: tuple = (4, 8, 8)
  # Portrait controls (all new weights start at zero).
  reference: bool = True
  # Where the reference latent sits among the condition channels: "first" (FactorPortrait, Wan
  # I2V: the first latent frame only, zeros elsewhere) or "all" (every latent frame, so each
  # frame's patch embedding sees the portrait at its own position and no attention must fetch it).
  reference_frames: str = "first"
  normals: bool = True
  # The portrait warped onto every frame through the tracked mesh (data_pipeline/reference_warp.py),
  # as VAE latents beside the normal maps; with reference_residual, frames' differences are taken
  # from it instead of the portrait. Dropped with the reference or the pose. Not in either paper.
  warped_reference: bool = False
  rays: bool = True
  expression: str = "cross_attention"
  expression_dim: int = 512
  expression_token_dim: int = 16
  pose: bool = True
  # How the network meets the flow (fp_jax/models/preconditioning.py): the velocity of each
  # frame's difference from the reference latent, and EDM's scalings for data of std sigma_data
  # (0: off). Both off: Wan's plain velocity.
  reference_residual: bool = False
  sigma_data: float = 0.0
  # Execution.
  attention: str = "einsum"
  dtype: str = "float32"
  remat: str = "none"
  scan_layers: bool = True

  def __post_init__(self):
    require(self.dim % self.heads == 0, f"dim {self.dim} is not divisible by {self.heads} heads")
    require((self.dim // self.heads) % 2 == 0, "the head dimension must be even for rotary embeddings")
    require(self.expression in EXPRESSION_MODES,
            f"expression must be one of {EXPRESSION_MODES}, got {self.expression!r}")
    require(self.reference_frames in REFERENCE_FRAMES,
            f"reference_frames must be one of {REFERENCE_FRAMES}, got {self.reference_frames!r}")
    require(self.remat in REMAT_POLICIES, f"remat must be one of {REMAT_POLICIES}, got {self.remat!r}")
    require(self.expression == "none" or self.expression_dim % self.expression_token_dim == 0,
            f"expression_dim {self.expression_dim} is not a whole number of "
            f"{self.expression_token_dim}-d tokens")
    require(self.sigma_data >= 0.0, f"sigma_data must be >= 0 (0: off), got {self.sigma_data}")
    require(not self.reference_residual or self.reference,
            "reference_residual needs the reference control (reference=True)")
    require(not self.warped_reference or self.reference,
            "warped_reference needs the reference control (reference=True)")
    attention.get_kernel(self.attention)
    require(self.dtype in ("float32", "bfloat16"), f"dtype must be float32 or bfloat16, got {self.dtype!r}")
    require(not self.attention.endswith("cudnn") or self.dtype == "bfloat16",
            f"attention {self.attention!r} (cuDNN flash attention) needs dtype bfloat16")

  @classmethod
  def from_config(cls, config):
    """From an ml-collections model config (unknown fields are an error)."""
    fields = {f.name for f in dataclasses.fields(cls)}
    values = dict(config)
    unknown = set(values) - fields
    if unknown:
      raise InputError(f"unknown model config fields {sorted(unknown)}")
    for key in ("patch", "vae_stride"):
      if key in values:
        values[key] = tuple(values[key])
    return cls(**values)

  @property
  def compute_dtype(self):
    return jnp.bfloat16 if self.dtype == "bfloat16" else None

  @property
  def patch_volume(self):
    return self.patch[0] * self.patch[1] * self.patch[2]

  @property
  def expression_adaln(self):
    return self.expression in ("adaln", "both")

  @property
  def expression_cross_attention(self):
    return self.expression in ("cross_attention", "both")

  def self_attention(self, q, k, v):
    return attention.get_kernel(self.attention)(q, k, v)

  def cross_attention(self, q, k, v):
    # Keys and values of a cross-attention are short and not split over `context`; keys shorter
    # than one splash block (the expression tokens) would mostly be padding there, and a
    # blockwise loop over a few dozen keys is all loop overhead: its score tensor is no larger
    # than q (dit_step bench, 64 text keys: einsum 15-19 against 19-21 ms a layer, fwd+bwd).
    name = self.attention
    short = k.shape[1] < attention.SPLASH_BLOCK
    if name.startswith("ulysses") or (name in ("splash", "blockwise") and short):
      name = "einsum"
    return attention.get_kernel(name)(q, k, v)

  @property
  def remat_reruns_attention(self):
    """Whether the backward runs the attention forward again (remat without its residuals)."""
    return self.remat not in ("none", "offload_attention", "offload_projections")

  def remat_policy(self):
    return {
        "full": None,
        # As `full`, but each layer's saved input waits in host memory for the backward pass
        # instead of HBM (layers x tokens x dim per chip: 3.1 GiB for wan_14b on 64 chips).
        "offload_inputs": jax.checkpoint_policies.save_and_offload_only_these_names(
            names_which_can_be_saved=[], names_which_can_be_offloaded=[LAYER_INPUT],
            offload_src="device", offload_dst="pinned_host"),
        # As `offload_inputs`, and the attention kernel's residuals kept, so the backward does
        # not run the forward kernel again: see `_keep_attention_residuals`.
        "offload_attention": _keep_attention_residuals(),
        # As `offload_attention`, and the outputs of the self-attention's output projection and of
        # both FFN matmuls in host memory too: the backward reruns none of those three matmuls
        # (wan_14b on 64 chips: 11.6 GiB more a chip in host memory).
        "offload_projections": _keep_attention_residuals(SELF_ATTENTION_OUTPUT, FFN_HIDDEN, FFN_OUTPUT),
        "save_matmuls": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
        "offload": jax.checkpoint_policies.offload_dot_with_no_batch_dims("device", "pinned_host"),
    }[self.remat]


def _keep_attention_residuals(*offloaded):
  """A policy that parks the layer inputs, the attention outputs (rank 4: blockwise's
  `[B, L, N, D]`, splash's `[B, heads, L, D]`) and the `offloaded` names in host memory and keeps
  the log-sum-exp (rank 3, a head dimension smaller) in HBM, where it costs little and where the
  TPU compiler wants it: it failed a layout check on slices of the layers' log-sum-exp in host
  memory (`f32[1, 1, 10, 32768]`)."""
  names = dict(offload_src="device", offload_dst="pinned_host")
  outputs = jax.checkpoint_policies.save_and_offload_only_these_names(
      names_which_can_be_saved=[],
      names_which_can_be_offloaded=[LAYER_INPUT, attention.ATTENTION_RESIDUALS, *offloaded], **names)
  log_sum_exp = jax.checkpoint_policies.save_and_offload_only_these_names(
      names_which_can_be_saved=[attention.ATTENTION_RESIDUALS],
      names_which_can_be_offloaded=[LAYER_INPUT, *offloaded], **names)

  def policy(primitive, *avals, **params):
    return (outputs if avals and avals[0].ndim == 4 else log_sum_exp)(primitive, *avals, **params)
  return policy
