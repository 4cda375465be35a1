r"""The synthetic portrait dataset (four regimes, disjoint identities per split).

Build it:
  fp-data --config=configs/data/synthetic.py:demo --data_dir=outputs/demo/data
Variants: `tiny` (tests), `demo` (make demo), `pod` (Beam on a cluster: 512x512, 81 frames).
Any field can be overridden, e.g. `--config.height=128 --config.identities.train=100`.
A local build renders clips in `workers` processes (one a core by default; 2 workers built the
demo set in 49 s here against 96 s for one), in the same order and with the same pixels.
"""
import ml_collections


def get_config(arg="demo"):
  config = ml_collections.ConfigDict()
  config.name = arg
  config.version = "1.7.0"
  config.seed = 0
  config.height = 64
  config.width = 64
  config.num_frames = 17  # 4k + 1 for the causal video VAE
  config.fps = 25.0
  config.supersample = 1
  # Each frame's face crop rendered at this size (0: none), as a crop of a high-resolution driving
  # video would show it; the motion encoders train on it (`input.face_crop.source`). parts: close-ups
  # of these parts of the face beside it, at the same size (data_pipeline/face_crop.py PARTS), for
  # an expression encoder that reads them (motion.expression_parts).
  config.face = ml_collections.ConfigDict(dict(size=64, margin=1.8, parts=("eye_l", "eye_r", "mouth")))
  config.identities = ml_collections.ConfigDict(dict(train=32, validation=4, test=4))
  config.clips_per_identity = 4
  config.regime_weights = ml_collections.ConfigDict(
      dict(phone=1.0, studio=1.0, viewsweep=1.0, dynamicsweep=1.0))
  config.file_format = "array_record"
  config.workers = 0  # local builds: clips rendered by this many processes (0: one a core)
  config.beam = False  # True: build through Apache Beam (DirectRunner locally, Dataflow at scale)
  config.beam_options = "--runner=DirectRunner --direct_num_workers=1"
  if arg == "tiny":
    config.height = config.width = 32
    config.num_frames = 5
    config.identities = ml_collections.ConfigDict(dict(train=3, validation=1, test=1))
    config.clips_per_identity = 2
    config.face.size = 16
  elif arg == "pod":
    config.height = config.width = 512
    config.num_frames = 81
    config.supersample = 2
    config.face.size = 224
    config.identities = ml_collections.ConfigDict(dict(train=100_000, validation=500, test=500))
    config.clips_per_identity = 8
    config.beam = True
    config.beam_options = "--runner=DataflowRunner"
  elif arg != "demo":
    raise ValueError(f"unknown variant {arg!r}: use tiny, demo or pod")
  return config
