r"""Wan 2.1 14B FactorPortrait on one v5p-128 slice (64 chips): FSDP 16 x context 4, global batch 16
at 81 frames x 480x832. The weights, EMA and optimizer moments are split over all 64 chips
(`embed` over fsdp and context), the tokens of each video over the 4 context chips.

  fp-aot --config=configs/wan_14b_v5p64.py --topology=v5p:4x4x4 --video=81x480x832
  launch/tpu_vm.sh --accelerator=v5p-128 train -- --config=configs/wan_14b_v5p64.py --workdir=...
Every field and its meaning: configs/common.py; the model is configs/wan_14b.py's.
"""
from configs import wan_14b


def get_config(arg="dit"):
  config = wan_14b.get_config(arg)
  config.mesh = dict(data=1, fsdp=16, context=4, tensor=1)
  config.input.global_batch_size = 16
  # Ulysses: an all-to-all trades the token split for a head split (10 heads a chip), where plain
  # splash would gather every video's keys and values on each context chip (docs/scaling.md).
  config.model.attention = "ulysses_splash"
  config.optim.mu_dtype = "bfloat16"  # the first moment in half the HBM (the second stays float32)
  # Full rematerialisation but for attention and three projections: the 40 saved layer inputs,
  # splash's outputs and the outputs of the self-attention's output projection and of both FFN
  # matmuls wait in host memory (20.9 GiB a chip), so the backward reruns neither attention nor
  # those matmuls (docs/scaling.md): estimated MFU 0.572 -> 0.601 at 8.78 GiB of HBM a chip.
  config.model.remat = "offload_projections"
  # The whole state (float32 parameters, EMA, AdamW's moments) waits in host memory between steps;
  # the chips fetch the parameters for the forward's casts and everything again for the update,
  # after the backward's peak: 12.78 -> 8.94 GiB a chip (docs/scaling.md).
  config.offload_state = ("ema", "opt_state", "params")
  # fp_jax/parallel/sharding.py's defaults, but `embed` over fsdp and context.
  config.logical_axis_rules = [
      ("batch", ("data", "fsdp")), ("length", "context"), ("embed", ("fsdp", "context")),
      ("heads", "tensor"), ("mlp", "tensor"), ("layers", None), ("act_embed", None),
      ("act_heads", "tensor"), ("act_mlp", "tensor")]
  return config
