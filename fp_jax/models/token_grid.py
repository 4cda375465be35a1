"""The DiT's token grid: latent frames x rows x columns (after the patch), and the order the
tokens are laid out in.

A `context` split of the token sequence splits its major axis. Wan lays tokens out (frame, row,
column); with 21 latent frames over 4 context shards a frame straddles two shards, and every
per-frame view (per-frame modulation, frame-aligned expression attention) makes the compiler
gather whole sequences. So the major axis is the first of rows, columns, frames that the shard
count divides (480x832 video: 30 rows, 52 columns, 21 frames; 4 shards take the columns), the
other two follow in (frame, row, column) order, and per-frame views reshape to the grid itself,
which keeps the split. Attention does not depend on the order; the rotary tables follow it.
"""
import dataclasses

AXES = ("frames", "rows", "columns")


@dataclasses.dataclass(frozen=True)
class TokenGrid:
  frames: int
  rows: int
  columns: int
  order: tuple = AXES  # axis names, major to minor

  @classmethod
  def for_shards(cls, frames, rows, columns, shards):
    sizes = dict(frames=frames, rows=rows, columns=columns)
    major = next((axis for axis in ("rows", "columns", "frames") if sizes[axis] % shards == 0), "rows")
    return cls(frames, rows, columns, (major,) + tuple(axis for axis in AXES if axis != major))

  @property
  def shape(self):
    """The sizes in layout order: `tokens.reshape(batch, *grid.shape, dim)` is the grid view."""
    return tuple(getattr(self, axis) for axis in self.order)

  @property
  def permutation(self):
    """Positions of (frames, rows, columns) in layout order."""
    return tuple(AXES.index(axis) for axis in self.order)

  @property
  def frame_axis(self):
    return self.order.index("frames")

  def per_frame(self, values):
    """`[B, F or 1, ...]` -> broadcastable against the grid view `[B, *shape, ...]`."""
    sizes = [1, 1, 1]
    sizes[self.frame_axis] = values.shape[1]
    return values.reshape(values.shape[0], *sizes, *values.shape[2:])

  def letters(self):
    """Einsum letters of the grid axes in layout order (f, y, x)."""
    return "".join(dict(frames="f", rows="y", columns="x")[axis] for axis in self.order)
