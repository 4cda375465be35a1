"""A cached-latents dataset: the DiT's inputs encoded once, read instead of the clips.

Video-DiT training at scale spends much of its step in the frozen VAE and encoders; encoding
every training window once (`fp-cache-latents`) and reading the results removes that work.
Layout of a cache folder:

  metadata.json          counts, shapes, the window, the frozen weights used, file checksums,
                         whether it holds warped references (`warped_reference`) and
                         which warp made them (`warp_version`, reference_warp.WARP_VERSION)
  <split>.array_record   one record per window, a safetensors blob of
      latents [F, h, w, z]   normalised VAE latents of the window (F = 1 + (N - 1) / 4)
      normals [F, h, w, z]   normalised VAE latents of the window's normal maps
      references [T, h, w, z]  every frame of the clip encoded as an image (reference candidates;
                             with `warped_reference` in the metadata, every WARP_CANDIDATE_STRIDE-th)
      warped [R, F, h, w, z] with `warped_reference`: each reference candidate carried onto the
                             window through the mesh (data_pipeline/reference_warp.py), encoded
      expression [N, D]      expression codes of the window's driving crops
      head_pose [N, 10], intrinsics [N, 3, 3], extrinsics [N, 3, 4]
      identity, record, start_frame  (int64 scalars)

Records are safetensors (a JSON header, then the raw arrays): a demo record decodes in 0.06 ms
against 1.0 to 1.1 ms for the .npz records of caches made before `record_format`, which still read
(benchmarks/input_pipeline.py).
The folder is written under `<out>.partial` and renamed into place when complete, so a cache
is never half-written. This module never imports jax (it runs in Grain workers).
"""
import io
import json
import os
import shutil

import grain
import numpy as np
import safetensors.numpy
from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter

from data_pipeline import durable, examples, rays, reference_warp
from data_pipeline.checksums import sha256_file
from data_pipeline.errors import InputError, require

METADATA = "metadata.json"
BUILD_COMMAND = "fp-cache-latents --config=CONFIG --out={cache_dir}"
RECORD_FORMAT = "safetensors"  # caches whose metadata names none hold .npz records
# With warped references, every this-many-th frame of a clip is a reference candidate: each costs
# a warp and an encode of the whole window (a 17-frame clip keeps frames 0, 4, 8, 12 and 16).
WARP_CANDIDATE_STRIDE = 4


def _encode(arrays, record_format=RECORD_FORMAT):
  """A record's bytes; "npz" writes the records of earlier caches (benchmarks, tests)."""
  if record_format == "npz":
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()
  return safetensors.numpy.save({name: np.require(np.asarray(value), requirements="C")
                                 for name, value in arrays.items()})


def _decode(data, record_format=RECORD_FORMAT):
  if record_format == "npz":
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
      return {name: archive[name] for name in archive.files}
  return safetensors.numpy.load(data)


class CacheWriter:
  """Collects records per split; `commit(metadata)` makes the folder appear whole."""

  def __init__(self, cache_dir):
    require(not os.path.exists(cache_dir), f"{cache_dir} already exists; remove it or choose another --out")
    self.cache_dir = cache_dir
    self._partial = cache_dir.rstrip("/") + ".partial"
    shutil.rmtree(self._partial, ignore_errors=True)  # left by an earlier, interrupted run
    os.makedirs(self._partial)
    self._writers, self._counts = {}, {}

  def add(self, split, record):
    if split not in self._writers:
      path = os.path.join(self._partial, f"{split}.array_record")
      self._writers[split] = ArrayRecordWriter(path, "group_size:1")
      self._counts[split] = 0
    self._writers[split].write(_encode(record))
    self._counts[split] += 1

  def abort(self):
    for writer in self._writers.values():
      writer.close()
    shutil.rmtree(self._partial, ignore_errors=True)

  def commit(self, metadata):
    for writer in self._writers.values():
      writer.close()
    files = {split: f"{split}.array_record" for split in self._writers}
    metadata = dict(metadata, record_format=RECORD_FORMAT, counts=self._counts, files=files,
                    sha256={split: sha256_file(os.path.join(self._partial, name)) for split, name in files.items()})
    with open(os.path.join(self._partial, METADATA), "w") as f:
      json.dump(metadata, f, indent=1)
    durable.sync_tree(self._partial)
    durable.replace(self._partial, self.cache_dir)


def read_metadata(cache_dir):
  path = os.path.join(cache_dir, METADATA)
  require(os.path.isfile(path), f"no latent cache in {cache_dir} (no {METADATA}); build one with "
          + BUILD_COMMAND.format(cache_dir=cache_dir))
  try:
    with open(path) as f:
      return json.load(f)
  except ValueError as error:
    raise InputError(f"{path} is not valid JSON: {error}") from None


class LatentRecords:
  """Random access to one split of a latent cache (a Grain data source; picklable)."""

  def __init__(self, cache_dir, split, verify="count"):
    self.metadata = read_metadata(cache_dir)
    require(split in self.metadata["files"],
            f"the latent cache {cache_dir} has no split {split!r} (it has {sorted(self.metadata['files'])})")
    self.path = os.path.join(cache_dir, self.metadata["files"][split])
    self.count = int(self.metadata["counts"][split])
    self.record_format = self.metadata.get("record_format", "npz")
    require(self.record_format in ("npz", RECORD_FORMAT),
            f"the latent cache {cache_dir} holds {self.record_format!r} records, which this version cannot read")
    require(os.path.isfile(self.path), f"latent cache file missing: {self.path}")
    if verify == "all":
      require(sha256_file(self.path) == self.metadata["sha256"][split],
              f"latent cache file {self.path} does not match its checksum: rebuild the cache")
    self._reader = None

  def __len__(self):
    return self.count

  def __getitem__(self, index):
    if self._reader is None:
      self._reader = ArrayRecordReader(self.path)
    try:
      return _decode(self._reader.read([int(index)])[0], self.record_format)
    except Exception as error:  # pylint: disable=broad-except
      raise InputError(f"corrupt record {int(index)} of {self.path}: {str(error).splitlines()[0]}") from None

  def __getstate__(self):
    return dict(self.__dict__, _reader=None)  # readers do not travel to workers; each opens its own


def check_config(config, records):
  """The input config must ask for the windows the cache holds."""
  window = records.metadata["window"]
  require(config.window.num_frames == window["num_frames"] and config.window.stride == window["stride"],
          f"the latent cache holds windows of {window['num_frames']} frames at stride {window['stride']}; "
          f"the input config asks for {config.window.num_frames} at stride {config.window.stride}")
  require(config.reference == "same_clip", "a latent cache offers same_clip references only")
  cached = bool(records.metadata.get("warped_reference", False))
  require(bool(config.get("warped_reference", False)) == cached,
          f"input.warped_reference={bool(config.get('warped_reference', False))}, but the latent cache "
          f"was made {'with' if cached else 'without'} warped references; make one with the same setting")
  made = int(records.metadata.get("warp_version", 1))
  require(not cached or made == reference_warp.WARP_VERSION,
          f"the latent cache's warped references were made by warp version {made}, this code makes version "
          f"{reference_warp.WARP_VERSION} (data_pipeline/reference_warp.py); make the cache again")


class MakeCachedExample(grain.transforms.RandomMap):
  """A cached window -> a DiT example: a random reference frame, the rays, the drop flags."""

  def __init__(self, records, config):
    self._records = records
    self._height, self._width = records.metadata["video_size"]
    self._rays_dtype = np.dtype(config.rays_dtype)
    self._drop_rates = config.drop.to_dict()

  def random_map(self, index, rng):
    record = self._records[int(index)]
    references = record["references"]
    choice = int(rng.integers(len(references)))
    example = {
        "latents": record["latents"],
        "reference_latent": references[choice],
        "normals_latents": record["normals"],
        "expression_codes": record["expression"],
        "rays": rays.latent_grid_rays(record["intrinsics"], record["extrinsics"], self._height, self._width
                                  ).astype(self._rays_dtype, copy=False),
        "head_pose": record["head_pose"],
        "identity": record["identity"],
        "record": record["record"],
        "start_frame": record["start_frame"],
    }
    if "warped" in record:
      example["warped_latents"] = record["warped"][choice]
    example.update(examples.draw_drop_flags(rng, self._drop_rates))
    return example
