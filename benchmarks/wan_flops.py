"""Model FLOPs of one Wan-core training step, counted analytically (shared by the DiT benchmarks)."""


def train_step_flops(size, tokens, text, batch):
  """Matmul and attention FLOPs of one training step: the forward's, times 3 (forward + backward)."""
  d, f, layers = size["dim"], size["ffn_dim"], size["layers"]
  per_layer = (2 * tokens * d * d * 4            # self-attention q, k, v, out
               + 2 * 2 * tokens * tokens * d     # scores and weighted sum
               + 2 * tokens * d * d * 2          # cross-attention q, out
               + 2 * text * d * d * 2            # cross-attention k, v
               + 2 * 2 * tokens * text * d       # cross-attention scores and sum
               + 2 * tokens * d * f * 2)         # feed-forward
  return 3 * batch * layers * per_layer
