"""The FactorPortrait DiT: Wan's video transformer with the portrait controls.

Inputs are channels-last latents `[B, F, h, w, C]` (F = 1 + k latent frames) and, optionally,
the controls at video rate (`T = 1 + 4k` frames):

- condition fusion (FactorPortrait): the reference-image latent (first latent frame, zeros
  elsewhere) and the normal-map latents (first frame zero) are concatenated with the noisy latents
  (first frame zero) along channels; with `warped_reference`, also the latents of the portrait
  warped onto each frame through the tracked mesh (first frame zero). The patch embedding of the
  concatenation is Wan's patch embedding of the noisy latents plus a zero-initialised embedding of
  the new channels, which is the same linear map written as two.
- camera: Plücker rays folded onto the latent grid, `[B, F, h, w, 4*8*8*6]`
  (`data_pipeline.rays.to_latent_grid`: frames grouped as the causal VAE groups them,
  space-to-depth by the VAE stride), patchified and embedded by their own zero-initialised
  projection.
- expression `[B, T, E]`: per-latent-frame AdaLN (codes averaged over the frame's group, added to
  the timestep embedding) and/or frame-aligned cross-attention on `E / 16` tokens per frame.
- head pose `[B, T, 10]` (6D rotation, t, s): embedded into the per-frame modulation (DeX's global
  branch; the normal maps are its spatial branch).
- `keep`: per-example 0/1 for `reference`, `expression`, `pose`, `camera`. A dropped condition is
  replaced by zeros (its latent channels, rays, and its branch's contribution), so one model
  serves every guidance branch.

With no controls given, the model is Wan exactly (tested against diffusers).

Tokens are laid out on a `TokenGrid` (fp_jax/models/token_grid.py) whose major axis is one the
`context` shards divide, not always Wan's frames, so per-frame views keep the context split.
"""
import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from data_pipeline.errors import InputError, require
from fp_jax.models import layers, preconditioning, rope
from fp_jax.models.dit_block import Block
from fp_jax.models.dit_config import LAYER_INPUT, POSE_DIM, RAY_DIM, DiTConfig
from fp_jax.models.token_grid import AXES, TokenGrid
from fp_jax.parallel.sharding import constrain, shards

CONTROLS = ("reference", "expression", "pose", "camera")


def group_frames(x, latent_frames, name):
  """`[B, T, ...]` with T = 1 + 4(F - 1) -> `[B, F, 4, ...]`; the first frame fills its group."""
  frames = x.shape[1]
  if frames != 1 + 4 * (latent_frames - 1):
    raise InputError(f"{name} has {frames} frames; {latent_frames} latent frames need "
                     f"{1 + 4 * (latent_frames - 1)} (1 + 4k)")
  first = jnp.repeat(x[:, :1], 4, axis=1)
  rest = x[:, 1:].reshape(x.shape[0], latent_frames - 1, 4, *x.shape[2:])
  return jnp.concatenate([first[:, None], rest], axis=1)


class DiT(nnx.Module):

  def __init__(self, config: DiTConfig, *, rngs: nnx.Rngs):
    self.config = config
    dim, dtype, volume = config.dim, config.compute_dtype, config.patch_volume
    linear = lambda i, o, axes, **kw: layers.linear(i, o, axes, rngs, dtype=dtype, **kw)
    self.patch_embedding = linear(volume * config.in_channels, dim, (None, "embed"))
    self.time_embedder_1 = linear(config.freq_dim, dim, (None, "embed"))
    self.time_embedder_2 = linear(dim, dim, ("embed", None))
    self.time_proj = linear(dim, 6 * dim, ("embed", None))
    self.text_embedder_1 = linear(config.text_dim, dim, (None, "embed"))
    self.text_embedder_2 = linear(dim, dim, ("embed", None))

    @nnx.split_rngs(splits=config.layers)
    @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
    def make_blocks(rngs):
      return Block(config, rngs)

    self.blocks = make_blocks(rngs)
    self.scale_shift_table = nnx.Param(jax.random.normal(rngs.params(), (2, dim)) / dim ** 0.5)
    self.proj_out = linear(dim, volume * config.out_channels, ("embed", None))

    condition_channels = config.in_channels * (int(config.reference) + int(config.normals)
                                               + int(config.warped_reference))
    if condition_channels:
      self.condition_embedding = linear(volume * condition_channels, dim, (None, "embed"),
                                        zero=True, use_bias=False)
    if config.rays:
      t, s = config.vae_stride[0], config.vae_stride[1] * config.vae_stride[2]
      self.ray_embedding = linear(volume * t * s * RAY_DIM, dim, (None, "embed"), zero=True)
    if config.expression_adaln:
      self.expression_adaln_1 = linear(config.expression_dim, dim, (None, "embed"))
      self.expression_adaln_2 = linear(dim, dim, ("embed", None), zero=True)
    if config.expression_cross_attention:
      self.expression_tokens_1 = linear(config.expression_token_dim, dim, (None, "embed"))
      self.expression_tokens_2 = linear(dim, dim, ("embed", None))
    if config.pose:
      self.pose_embedding_1 = linear(POSE_DIM, dim, (None, "embed"))
      self.pose_embedding_2 = linear(dim, dim, ("embed", None), zero=True)

  # -- shapes --------------------------------------------------------------------------------

  def _patchify(self, x, grid):
    """`[B, F, H, W, C]` -> tokens `[B, L, pt*ph*pw*C]` laid out as `grid`; each token's features
    in Wan's (pt, ph, pw, C) order."""
    batch, frames, height, width, channels = x.shape
    pt, ph, pw = self.config.patch
    x = x.reshape(batch, frames // pt, pt, height // ph, ph, width // pw, pw, channels)
    x = x.transpose(0, *(1 + 2 * axis for axis in grid.permutation), 2, 4, 6, 7)
    return x.reshape(batch, -1, pt * ph * pw * channels)

  def _unpatchify(self, x, grid):
    pt, ph, pw = self.config.patch
    x = x.reshape(x.shape[0], *grid.shape, pt, ph, pw, -1)
    f, h, w = (1 + grid.order.index(axis) for axis in AXES)
    x = x.transpose(0, f, 4, h, 5, w, 6, 7)
    return x.reshape(x.shape[0], grid.frames * pt, grid.rows * ph, grid.columns * pw, -1)

  def _check(self, latents, timestep):
    config = self.config
    require(latents.ndim == 5, f"latents must be [B, F, h, w, C], got shape {latents.shape}")
    _, frames, height, width, channels = latents.shape
    for size, patch, name in zip((frames, height, width), config.patch, ("frames", "height", "width")):
      require(size % patch == 0, f"latent {name} {size} is not a multiple of the patch size {patch}")
    require(channels == config.in_channels,
            f"latents have {channels} channels, the model takes {config.in_channels}")
    require(timestep.shape in ((latents.shape[0],), (latents.shape[0], frames)),
            f"timestep must be [B] or [B, F], got {timestep.shape} for latents {latents.shape}")

  # -- conditions ----------------------------------------------------------------------------

  def _keep(self, keep, name, batch):
    if keep is None or name not in keep:
      return jnp.ones((batch,), jnp.float32)
    return jnp.asarray(keep[name], jnp.float32).reshape(batch)

  def _warp_keep(self, keep, batch):
    """The warped portrait carries the reference and the pose: dropped with either."""
    return self._keep(keep, "reference", batch) * self._keep(keep, "pose", batch)

  def _require_frames(self, name, value, latents):
    require(value is not None and value.shape == latents.shape,
            f"{name} latents must match latents {latents.shape}, got {None if value is None else value.shape}")

  def _fused_conditions(self, latents, reference, normals, warped, keep, grid):
    """Reference, normal-map and warped-portrait channels (first latent frame: reference only; with
    `reference_frames="all"` the reference on every frame)."""
    config = self.config
    batch = latents.shape[0]
    per_example = lambda keep_value: keep_value[:, None, None, None, None]
    parts = []
    if config.reference:
      require(reference is not None and reference.shape == (batch, *latents.shape[2:]),
              f"reference latent must be [B, h, w, C] matching latents {latents.shape}")
      reference = reference.astype(latents.dtype)
      if config.reference_frames == "all":
        slot = jnp.broadcast_to(reference[:, None], latents.shape)
      else:
        slot = jnp.zeros_like(latents).at[:, 0].set(reference)
      parts.append(slot * per_example(self._keep(keep, "reference", batch)))
    if config.normals:
      self._require_frames("normal-map", normals, latents)
      normals = normals.astype(latents.dtype).at[:, 0].set(0)
      parts.append(normals * per_example(self._keep(keep, "pose", batch)))
    if config.warped_reference:
      self._require_frames("warped-reference", warped, latents)
      warped = warped.astype(latents.dtype).at[:, 0].set(0)
      parts.append(warped * per_example(self._warp_keep(keep, batch)))
    return self.condition_embedding(self._patchify(jnp.concatenate(parts, axis=-1), grid))

  def residual_base(self, reference, warped, keep):
    """What `reference_residual` measures frames from: the portrait, or where the warped portrait
    is kept, the portrait carried to each frame (the first frame is the portrait's own)."""
    if not self.config.warped_reference or warped is None:
      return reference
    reference = reference.astype(jnp.float32)
    kept = self._warp_keep(keep, reference.shape[0])[:, None, None, None, None]
    base = kept * warped.astype(jnp.float32) + (1.0 - kept) * reference[:, None]
    return base.at[:, 0].set(reference)

  def _ray_tokens(self, rays, latents, keep, dtype, grid):
    st, sh, sw = self.config.vae_stride
    expected = (*latents.shape[:4], st * sh * sw * RAY_DIM)
    require(tuple(rays.shape) == expected,
            f"rays must be folded onto the latent grid, {list(expected)} for latents "
            f"{list(latents.shape)} (data_pipeline.rays.to_latent_grid of [B, T, H, W, 6] maps), "
            f"got {list(rays.shape)}")
    tokens = self.ray_embedding(self._patchify(rays.astype(dtype), grid))
    return tokens * self._keep(keep, "camera", latents.shape[0])[:, None, None]

  def _per_frame(self, values, frames, name, width):
    require(values.ndim == 3 and values.shape[2] == width,
            f"{name} must be [B, T, {width}], got {values.shape}")
    return group_frames(values.astype(jnp.float32), frames, name)

  def _frame_embedding(self, expression, head_pose, keep, batch, frames):
    """Per-latent-frame additions to the timestep embedding: expression (AdaLN) and pose."""
    config = self.config
    total = jnp.zeros((batch, frames, config.dim), jnp.float32)
    if config.expression_adaln and expression is not None:
      codes = self._per_frame(expression, frames, "expression", config.expression_dim).mean(axis=2)
      embedded = self.expression_adaln_2(jax.nn.silu(self.expression_adaln_1(codes)))
      total += embedded * self._keep(keep, "expression", batch)[:, None, None]
    if config.pose and head_pose is not None:
      pose = self._per_frame(head_pose, frames, "head_pose", POSE_DIM).mean(axis=2)
      embedded = self.pose_embedding_2(jax.nn.silu(self.pose_embedding_1(pose)))
      total += embedded * self._keep(keep, "pose", batch)[:, None, None]
    return total

  def _expression_tokens(self, expression, frames):
    config = self.config
    codes = self._per_frame(expression, frames, "expression", config.expression_dim)
    tokens = codes.reshape(codes.shape[0], frames, -1, config.expression_token_dim)
    return self.expression_tokens_2(jax.nn.gelu(self.expression_tokens_1(tokens), approximate=True))

  # -- forward -------------------------------------------------------------------------------

  def __call__(self, latents, timestep, context=None, *, reference=None, normals=None, rays=None,
               expression=None, head_pose=None, keep=None, warped=None):
    """Velocity `[B, F, h, w, C_out]` for noisy `latents` at `timestep` (`[B]` or `[B, F]`)."""
    config = self.config
    timestep = jnp.asarray(timestep)
    self._check(latents, timestep)
    batch, frames, height, width, _ = latents.shape
    controls = reference is not None
    dtype = config.compute_dtype or latents.dtype

    pt, ph, pw = config.patch
    grid = TokenGrid.for_shards(frames // pt, height // ph, width // pw, shards("length"))
    base = self.residual_base(reference, warped, keep) if controls else None
    noisy = preconditioning.network_input(config, latents, timestep, base)
    noisy = noisy.at[:, 0].set(0) if controls else noisy
    tokens = self.patch_embedding(self._patchify(noisy.astype(dtype), grid))
    if controls and (config.reference or config.normals or config.warped_reference):
      tokens = tokens + self._fused_conditions(latents, reference, normals, warped, keep, grid)
    if controls and config.rays and rays is not None:
      tokens = tokens + self._ray_tokens(rays, latents, keep, dtype, grid)
    tokens = constrain(tokens.astype(dtype), ("batch", "length", "act_embed"))

    features = layers.sinusoidal_embedding(timestep.reshape(batch, -1), config.freq_dim)
    temb = self.time_embedder_2(jax.nn.silu(self.time_embedder_1(features))).astype(jnp.float32)
    if controls and (config.expression_adaln or config.pose):
      temb = temb + self._frame_embedding(expression, head_pose, keep, batch, frames)
    modulation = self.time_proj(jax.nn.silu(temb)).astype(jnp.float32).reshape(batch, -1, 6, config.dim)
    if modulation.shape[1] not in (1, frames // config.patch[0]):
      raise InputError("per-frame modulation needs one entry per latent frame")

    text = None
    if context is not None:
      text = self.text_embedder_2(jax.nn.gelu(self.text_embedder_1(context.astype(dtype)), approximate=True))
    expression_tokens = expression_keep = None
    if controls and config.expression_cross_attention and expression is not None:
      expression_tokens = self._expression_tokens(expression, grid.frames).astype(dtype)
      expression_keep = self._keep(keep, "expression", batch)

    tables = rope.rope_tables(grid, config.dim // config.heads, config.rope_theta)
    tokens = self._run_blocks(tokens, grid, modulation, tables, text, expression_tokens, expression_keep)

    head = grid.per_frame(self.scale_shift_table[...][None, None] + temb[:, :, None])  # [B, ., ., ., 2, D]
    shift, scale = head[..., 0, :], head[..., 1, :]
    out = (layers.layer_norm(tokens.reshape(batch, *grid.shape, config.dim), config.eps) * (1 + scale)
           + shift).astype(dtype)
    out = self.proj_out(out.reshape(batch, -1, config.dim))
    out = self._unpatchify(out, grid).astype(jnp.float32)
    return preconditioning.velocity(config, out, latents, timestep, base)

  def _run_blocks(self, tokens, grid, modulation, tables, text, expression_tokens, expression_keep):
    config = self.config
    graphdef, params = nnx.split(self.blocks)
    if config.compute_dtype is not None:
      params = layers.dense_weights_cast(self.blocks, params, config.compute_dtype)

    def layer(x, layer_params):
      x = checkpoint_name(x, LAYER_INPUT)  # what the `offload_inputs` remat policy moves to the host
      block = nnx.merge(graphdef, layer_params)
      return block(x, grid, modulation, tables, text, expression_tokens, expression_keep)

    if config.remat != "none":
      layer = jax.checkpoint(layer, policy=config.remat_policy(), prevent_cse=not config.scan_layers)
    if config.scan_layers:
      tokens, _ = jax.lax.scan(lambda x, p: (layer(x, p), None), tokens, params)
      return tokens
    # Unrolled: each stacked weight is split into its layers by one op, whose gradient is one
    # concatenation; indexing layer by layer instead pads every layer's gradient to the whole
    # stack and sums them (layers^2 weight-sized passes).
    stacked, structure = jax.tree.flatten(params)
    split = [jnp.split(weight, config.layers) for weight in stacked]
    for index in range(config.layers):
      tokens = layer(tokens, structure.unflatten([parts[index][0] for parts in split]))
    return tokens
