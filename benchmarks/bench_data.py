"""The datasets the benchmarks read, built on first use."""
import sys

from configs.data import synthetic
from data_pipeline import tfds_builder
from data_pipeline.errors import InputError
from data_pipeline.records import ClipRecords


def ensure_dataset(name, data_dir):
  """Builds the `name` synthetic dataset (configs/data/synthetic.py) in `data_dir` if absent."""
  try:
    ClipRecords(data_dir, name, "train")
  except InputError:
    print(f"building the {name} dataset in {data_dir}", file=sys.stderr)
    tfds_builder.build(synthetic.get_config(name), data_dir)
