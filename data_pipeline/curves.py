"""Smooth random curves: keyframes joined by monotone cubic interpolation."""
import numpy as np
from scipy.interpolate import PchipInterpolator


def keyframed(rng, num_frames, low, high, mean_gap, start=None, size=()):
  """A smooth curve `[num_frames, *size]` through random keyframes in [low, high].

  Keyframes fall every `mean_gap` frames on average (jittered); `start` pins frame 0.
  """
  low, high = np.broadcast_to(low, size), np.broadcast_to(high, size)
  if num_frames == 1:
    value = rng.uniform(low, high, size=size) if start is None else np.asarray(start)
    return np.broadcast_to(value, (1,) + tuple(size)).astype(np.float64)
  times = [0.0]
  while times[-1] < num_frames - 1:
    times.append(times[-1] + max(2.0, rng.uniform(0.6, 1.4) * mean_gap))
  values = rng.uniform(low, high, size=(len(times),) + tuple(size))
  if start is not None:
    values[0] = start
  curve = PchipInterpolator(np.array(times), values, axis=0)
  return curve(np.arange(num_frames, dtype=np.float64))


def pulses(rng, num_frames, rate_per_frame, width_frames):
  """Random smooth bumps (0 -> 1 -> 0), e.g. blinks; Poisson arrivals."""
  out = np.zeros(num_frames)
  frame = rng.exponential(1.0 / rate_per_frame) * rng.uniform(0.0, 1.0)
  t = np.arange(num_frames, dtype=np.float64)
  while frame < num_frames + width_frames:
    out = np.maximum(out, np.clip(1.0 - np.abs(t - frame) / width_frames, 0.0, 1.0) ** 0.7)
    frame += width_frames * 3.0 + rng.exponential(1.0 / rate_per_frame)
  return out


def speech(rng, num_frames, fps):
  """Speech-like jaw opening in [0, 1]: syllables at 3-6 Hz under a random phrase envelope."""
  t = np.arange(num_frames, dtype=np.float64) / fps
  syllable_rate = rng.uniform(3.0, 6.0)
  phase = np.cumsum(np.full(num_frames, syllable_rate / fps) * (1.0 + 0.3 * np.sin(
      2.0 * np.pi * rng.uniform(0.2, 0.6) * t + rng.uniform(0, 2 * np.pi))))
  syllables = 0.5 - 0.5 * np.cos(2.0 * np.pi * phase + rng.uniform(0, 2 * np.pi))
  envelope = np.clip(keyframed(rng, num_frames, -0.3, 1.0, mean_gap=fps * 0.8), 0.0, 1.0)
  return np.clip(syllables * envelope * rng.uniform(0.4, 0.9), 0.0, 1.0)
