"""A built split, opened for training: checked at start-up, corrupt records named.

`ClipRecords` is a Grain random-access data source (`len`, `[index]`) over one split of the
TFDS dataset. Opening it checks that every ArrayRecord file is there, readable and as long as
the dataset says; reading a damaged record raises `InputError` naming the file and the record,
in whichever process (a Grain worker included) reads it. `verify='all'` also reads every
record's bytes once at start-up (ArrayRecord checks each chunk's hash), so damage anywhere is
reported before training starts: cheap on local disks, a full read on cloud storage.
"""
import os

from array_record.python.array_record_module import ArrayRecordReader
import tensorflow_datasets as tfds

from data_pipeline import face_crop, tfds_builder
from data_pipeline.errors import InputError, require, require_local_path

BUILD_COMMAND = "fp-data --config=configs/data/synthetic.py:{name} --data_dir={data_dir}"


VERIFY_MODES = ("count", "all")


def _check_file(path, expected, verify):
  """Opens one ArrayRecord file, checks its length and, with verify='all', every chunk's hash."""
  require(os.path.isfile(path), f"dataset file missing: {path}")
  try:
    reader = ArrayRecordReader(path)
    found = reader.num_records()
    reader.close()  # a truncated file fails here
  except Exception as error:  # pylint: disable=broad-except
    raise InputError(f"unreadable dataset file {path}: {str(error).splitlines()[0]}") from None
  require(found == expected, f"dataset file {path} holds {found} records, its dataset says {expected}")
  if verify == "all":
    _check_hashes(path, found)


def _check_hashes(path, count, block=64):
  reader = ArrayRecordReader(path)
  for start in range(0, count, block):  # raw bytes only, no decoding
    stop = min(count, start + block)
    try:
      reader.read(start, stop)
    except Exception:  # pylint: disable=broad-except
      for index in range(start, stop):  # find the record, to name it
        try:
          reader.read([index])
        except Exception as error:  # pylint: disable=broad-except
          raise InputError(f"corrupt record {index} of {path}: {str(error).splitlines()[0]}") from None
  reader.close()


class ClipRecords:
  """Random access to the clips of one split, with the layout the builder records."""

  def __init__(self, data_dir, name, split, verify="count"):
    require_local_path(data_dir, "input.data_dir")
    data_dir = os.path.abspath(data_dir)
    try:
      self._source = tfds_builder.data_source(data_dir, name, split)
    except InputError as error:
      raise InputError(f"{error}; build it with: "
                       f"{BUILD_COMMAND.format(name=name, data_dir=data_dir)}") from None
    info = self._source.dataset_info
    self.name, self.split = name, split
    metadata = info.metadata or {}
    require("clips_per_identity" in metadata,
            f"dataset {info.data_dir} predates version 1.1.0 (records not in identity order); "
            f"rebuild it with: {BUILD_COMMAND.format(name=name, data_dir=data_dir)}")
    self.clips_per_identity = int(metadata["clips_per_identity"])
    self.first_identity = int(metadata["first_identity"][split])
    self.fps = float(metadata["fps"])
    self.num_frames, self.height, self.width, _ = info.features["frames"].shape
    # Stored face crops (version 1.2.0 on, when built with face.size > 0): their size and margin.
    self.face_size = int(info.features["face"].shape[1]) if "face" in info.features else 0
    self.face_margin = float(metadata.get("face_margin", 0.0))
    # Close-ups of face parts beside the stored faces (version 1.5.0 on, when built with face.parts).
    self.face_parts = tuple(part for part in face_crop.PARTS if f"face_{part}" in info.features)
    # Training and evaluation render from today's template beside the frames (normal maps, warps,
    # twins, fresh people): a dataset of another template would disagree with them.
    self.version = str(info.version)
    rebuild = f"rebuild it with: {BUILD_COMMAND.format(name=name, data_dir=data_dir)}"
    since, newest = tfds_builder.SAME_TEMPLATE_SINCE, tfds_builder.WORLD_VERSION
    require(tfds.core.Version(self.version) >= since,
            f"dataset {info.data_dir} was rendered with an older template (version {self.version} < {since}: "
            f"{tfds_builder.FactorPortraitSynthetic.RELEASE_NOTES[since].rstrip('.')}); {rebuild}")
    require(tfds.core.Version(self.version) <= newest,
            f"dataset {info.data_dir} is of world {self.version}, newer than this code's {newest}; "
            f"update the code or {rebuild}")
    split_info = info.splits[split]
    self.files = [os.fspath(path) for path in split_info.filepaths]
    self.shard_lengths = [int(n) for n in split_info.shard_lengths]
    require(verify in VERIFY_MODES, f"verify must be one of {VERIFY_MODES}, got {verify!r}")
    for path, expected in zip(self.files, self.shard_lengths):
      _check_file(path, expected, verify)

  def __len__(self):
    return len(self._source)

  def locate(self, index):
    """(file, index within that file) of split record `index`."""
    for path, length in zip(self.files, self.shard_lengths):
      if index < length:
        return path, index
      index -= length
    raise IndexError(index)

  def __getitem__(self, index):
    index = int(index)
    try:
      record = self._source[index]
    except Exception as error:  # pylint: disable=broad-except
      path, offset = self.locate(index)
      raise InputError(f"corrupt record {offset} of {path}: {str(error).splitlines()[0]}") from None
    expected = self.identity_of(index)
    require(int(record["identity"]) == expected,
            f"record {self.locate(index)[1]} of {self.locate(index)[0]} holds identity "
            f"{int(record['identity'])}, expected {expected}: records are out of order")
    return record

  def identity_of(self, index):
    return self.first_identity + index // self.clips_per_identity

  def clips_of_identity(self, index):
    """Record indices of every clip of the identity of record `index`."""
    start = index - index % self.clips_per_identity
    return range(start, start + self.clips_per_identity)

  def __repr__(self):
    return f"ClipRecords({self.name}/{self.split}: {len(self)} clips, {self.num_frames} frames)"
