r"""DiT sizes. Training configs embed one as `config.model`; `fp-aot` and the benchmarks read them.

  python benchmarks/dit_step.py                     # uses the `bench` size
Variants: `tiny` (CPU tests and the demo), `bench` (benchmarks/dit_step.py), `wan_1_3b`, `wan_14b`.
Portrait controls default to on; `--config.model.expression=adaln|cross_attention|both|none`.
"""
import ml_collections

SIZES = {
    "tiny": dict(dim=64, heads=4, layers=2, ffn_dim=128, text_dim=64),
    "bench": dict(dim=512, heads=8, layers=8, ffn_dim=2048, text_dim=512),
    "wan_1_3b": dict(dim=1536, heads=12, layers=30, ffn_dim=8960, text_dim=4096),
    "wan_14b": dict(dim=5120, heads=40, layers=40, ffn_dim=13824, text_dim=4096),
}


def get_config(arg="tiny"):
  if arg not in SIZES:
    raise ValueError(f"unknown variant {arg!r}: use one of {sorted(SIZES)}")
  config = ml_collections.ConfigDict(SIZES[arg])
  config.patch = (1, 2, 2)  # latent frames, rows, columns per token (Wan's)
  config.in_channels = config.out_channels = 16  # latent channels: the VAE's z_dim (Wan's 16)
  config.reference = True
  config.reference_frames = "first"  # or "all" (fp_jax/models/dit_config.py)
  config.normals = True
  # The portrait warped onto each frame through the tracked mesh, beside the normal maps (not in
  # either paper; needs input.warped_reference; fp_jax/models/dit_config.py).
  config.warped_reference = False
  config.rays = True
  config.expression = "cross_attention"
  config.expression_dim = 512
  config.pose = True
  # How the network meets the flow (fp_jax/models/preconditioning.py); both off: Wan's velocity.
  config.reference_residual = False
  config.sigma_data = 0.0
  config.attention = {"tiny": "einsum", "bench": "blockwise"}.get(arg, "splash")
  config.dtype = "float32" if arg in ("tiny", "bench") else "bfloat16"
  config.remat = "none" if arg in ("tiny", "bench") else "save_matmuls"
  # Scanned: one compiled block for every layer (compile time on pods). The CPU `bench` size
  # unrolls: XLA:CPU ran its 8-layer train step 15% faster that way (benchmarks/dit_step.py,
  # median of 6 alternating runs: 7.1 s against 8.4 s).
  config.scan_layers = arg != "bench"
  return config
