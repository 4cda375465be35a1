"""TFDS builder for the synthetic portrait dataset (ArrayRecord; local or Apache Beam).

Clips follow the schema in docs/data_format.md. Splits have disjoint identities: train takes
identities [0, n_train), validation the next n_validation, test the rest. TFDS writes each
split under a temporary name and renames it only once complete, so an interrupted build never
leaves a split a reader would take for complete. Records are stored in (identity, clip) order, so
record `i` of a split is clip `i % clips_per_identity` of its `i // clips_per_identity`-th identity:
readers find an identity's other clips without an index.
"""
import concurrent.futures
import dataclasses
import multiprocessing
import os

import numpy as np
import tensorflow_datasets as tfds
import threadpoolctl

from data_pipeline import face_crop, world
from data_pipeline.controls import num_controls
from data_pipeline.errors import InputError, require
from data_pipeline.template_head import build_template

SPLITS = ("train", "validation", "test")


@dataclasses.dataclass
class PortraitConfig(tfds.core.BuilderConfig):
  """A data config (configs/data/*.py) in the form TFDS stores with the dataset."""
  seed: int = 0
  height: int = 64
  width: int = 64
  num_frames: int = 17
  fps: float = 25.0
  supersample: int = 1
  identities: tuple = (32, 4, 4)  # train, validation, test
  clips_per_identity: int = 4
  regime_weights: tuple = (1.0, 1.0, 1.0, 1.0)  # phone, studio, viewsweep, dynamicsweep
  face_size: int = 0  # > 0: each frame's face crop rendered at this size (`face`)
  face_margin: float = 1.8
  face_parts: tuple = ()  # with face_size: close-ups of these parts too (`face_PART`, face_crop.PARTS)

  @classmethod
  def from_config(cls, config):
    """Builds the TFDS config from an ml-collections data config, checking it can work."""
    weights = tuple(float(config.regime_weights[r]) for r in world.REGIMES)
    require(all(w >= 0 for w in weights) and sum(weights) > 0,
            f"regime weights must be >= 0 with a positive sum, got {weights}")
    identities = tuple(int(config.identities[s]) for s in SPLITS)
    require(all(n >= 0 for n in identities) and identities[0] > 0,
            f"identity counts must be >= 0 and train > 0, got {identities}")
    require(config.clips_per_identity >= 1, "clips_per_identity must be >= 1")
    face = config.get("face", {"size": 0, "margin": 1.8})
    require(int(face["size"]) == 0 or int(face["size"]) >= 8, f"face.size must be 0 or >= 8, got {face['size']}")
    require(float(face["margin"]) > 0, f"face.margin must be positive, got {face['margin']}")
    parts = face_crop.check_parts(face.get("parts", ()))
    require(not parts or int(face["size"]) > 0, "face.parts need face.size > 0")
    world.ClipSpec(config.height, config.width, config.num_frames, config.fps, config.supersample)
    require(config.version == WORLD_VERSION,
            f"version {config.version} asked for, but this code renders world {WORLD_VERSION} "
            f"(data_pipeline/tfds_builder.py WORLD_VERSION)")
    return cls(name=config.name, version=config.version, seed=int(config.seed),
               height=int(config.height), width=int(config.width), num_frames=int(config.num_frames),
               fps=float(config.fps), supersample=int(config.supersample), identities=identities,
               clips_per_identity=int(config.clips_per_identity), regime_weights=weights,
               face_size=int(face["size"]), face_margin=float(face["margin"]), face_parts=parts,
               description=f"{config.name}: {config.height}x{config.width}, {config.num_frames} frames")

  @property
  def spec(self):
    return world.ClipSpec(self.height, self.width, self.num_frames, self.fps, self.supersample,
                          self.face_size, self.face_margin, self.face_parts)

  def split_identities(self, split):
    start = sum(self.identities[:SPLITS.index(split)])
    return range(start, start + self.identities[SPLITS.index(split)])

  def regime(self, identity, clip):
    weights = np.asarray(self.regime_weights) / sum(self.regime_weights)
    rng = np.random.default_rng([self.seed, identity, 2, clip])
    return world.REGIMES[rng.choice(len(world.REGIMES), p=weights)]


def _make_example(config, key):
  """(record key, clip) for `key = (identity, clip index)`."""
  identity, clip = key
  example = world.generate_clip(config.seed, identity, clip, config.regime(identity, clip), config.spec)
  return _record_key(config, identity, clip), example


def _record_key(config, identity, clip):
  # An integer key: with shuffling disabled, TFDS (local and Beam) writes records sorted by it.
  return identity * config.clips_per_identity + clip


def _make_examples_in_processes(config, keys, workers):
  """`_make_example` over `keys`, in order, rendered by `workers` spawned processes.

  Workers run `world.generate_clip` only, so they never import TensorFlow, and use one BLAS
  thread each, so their BLAS pools do not fight over the cores."""
  context = multiprocessing.get_context("spawn")
  with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=threadpoolctl.threadpool_limits,
                                              initargs=(1,)) as pool:
    clips = pool.map(world.generate_clip, *zip(*[(config.seed, identity, clip, config.regime(identity, clip),
                                                   config.spec) for identity, clip in keys]))
    for (identity, clip), example in zip(keys, clips):
      yield _record_key(config, identity, clip), example


# The world this code renders (FactorPortraitSynthetic.RELEASE_NOTES says what each version changed).
WORLD_VERSION = "1.7.0"
# The oldest world whose template draws faces as this code's does. Training and evaluation render
# from today's template beside a dataset's frames (normal maps, reference warps, expression twins,
# fresh people), so a dataset made before it would disagree with them (records.ClipRecords refuses it).
SAME_TEMPLATE_SINCE = "1.7.0"


class FactorPortraitSynthetic(tfds.core.GeneratorBasedBuilder):
  """Rendered portrait clips: four camera/motion regimes, known pose, expression and shape."""

  VERSION = tfds.core.Version(WORLD_VERSION)
  RELEASE_NOTES = {"1.0.0": "First release.",
                   "1.1.0": "Records in (identity, clip) order; identity layout in the metadata.",
                   "1.2.0": "`face`: each frame's face crop rendered at the crop's own resolution.",
                   "1.3.0": "`face`: crop boxes follow the head and camera, not the expression.",
                   "1.4.0": "The template's expressions twice as strong (blinks as before, cheek puff 1.5x).",
                   "1.5.0": "`face_PART`: close-ups of face parts (face.parts) beside each face crop.",
                   "1.6.0": "The demo's close-ups: each eye's own (`face_eye_l`, `face_eye_r`) and the mouth's.",
                   "1.7.0": "The nose wrinkle also lifts the nostril wings and the upper lip's centre."}
  BUILDER_CONFIGS = []  # configs come from configs/data/*.py, any name

  def __init__(self, *, use_beam=False, workers=0, **kwargs):
    self._use_beam = use_beam
    require(int(workers) >= 0, f"workers must be >= 0 (0: one a core), got {workers}")
    self._workers = int(workers) or os.cpu_count() or 1
    super().__init__(**kwargs)

  def _info(self):
    config = self.builder_config
    model = build_template()
    t, h, w = config.num_frames, config.height, config.width
    video = lambda *shape: tfds.features.Tensor(shape=shape, dtype=np.uint8, encoding="zlib")
    array = lambda *shape: tfds.features.Tensor(shape=shape, dtype=np.float32)
    views = ("face",) + tuple(f"face_{part}" for part in config.face_parts) if config.face_size else ()
    faces = {name: video(t, config.face_size, config.face_size, 3) for name in views}
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict(faces | {
            "frames": video(t, h, w, 3),
            "normals": video(t, h, w, 3),
            "mask": video(t, h, w),
            "intrinsics": array(t, 3, 3),
            "extrinsics": array(t, 3, 4),
            "head_pose": array(t, 3, 4),
            "head_scale": array(t),
            "expression": array(t, num_controls(model)),
            "shape": array(model.num_shape),
            "identity": tfds.features.Scalar(dtype=np.int64),
            "regime": tfds.features.ClassLabel(names=world.REGIMES),
            "camera_trajectory": tfds.features.Text(),
            "clip_id": tfds.features.Text(),
        }),
        description=__doc__,
        metadata=tfds.core.MetadataDict(
            fps=config.fps, seed=config.seed, clips_per_identity=config.clips_per_identity,
            face_margin=config.face_margin,
            first_identity={split: config.split_identities(split).start for split in SPLITS}),
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(split) for split in SPLITS
            if self.builder_config.identities[SPLITS.index(split)] > 0}

  def _generate_examples(self, split):
    config = self.builder_config
    keys = [(identity, clip) for identity in config.split_identities(split)
            for clip in range(config.clips_per_identity)]
    if self._use_beam:
      beam = tfds.core.lazy_imports.apache_beam
      return (beam.Create(keys) | beam.Reshuffle() | beam.Map(lambda key: _make_example(config, key)))
    if self._workers == 1:
      return (_make_example(config, key) for key in keys)
    return _make_examples_in_processes(config, keys, self._workers)


def make_builder(config, data_dir):
  return FactorPortraitSynthetic(
      config=PortraitConfig.from_config(config), data_dir=data_dir, file_format=config.file_format,
      use_beam=bool(config.beam), workers=int(config.get("workers", 0)))


def build(config, data_dir):
  """Generates the dataset for an ml-collections data config into `data_dir`."""
  builder = make_builder(config, data_dir)
  download_config = tfds.download.DownloadConfig(try_download_gcs=False)
  if config.beam:
    beam = tfds.core.lazy_imports.apache_beam
    download_config = tfds.download.DownloadConfig(
        try_download_gcs=False,
        beam_options=beam.options.pipeline_options.PipelineOptions(config.beam_options.split()))
  builder.download_and_prepare(download_config=download_config)
  return builder


def data_source(data_dir, name, split):
  """Random-access reader over a built split (numpy examples, no TensorFlow graph)."""
  try:
    return tfds.data_source(f"{FactorPortraitSynthetic.name}/{name}", split=split, data_dir=data_dir,
                            download=False)
  except (tfds.core.registered.DatasetNotFoundError, AssertionError, ValueError, KeyError) as error:
    raise InputError(f"no complete dataset {FactorPortraitSynthetic.name}/{name} (split {split}) "
                     f"under {data_dir}: {str(error).splitlines()[0]}") from None
