r"""fp-data: builds the synthetic portrait dataset with TFDS (locally or through Apache Beam).

  fp-data --config=configs/data/synthetic.py:demo --data_dir=DIR [--config.beam=True]
"""
import sys

from absl import flags
from ml_collections import config_flags

from data_pipeline import cli, tfds_builder
from data_pipeline.errors import require

_CONFIG = config_flags.DEFINE_config_file("config", None, "Data config: configs/data/NAME.py[:variant].")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Where TFDS writes the dataset.")


def main(argv):
  del argv
  require(_CONFIG.value is not None, "--config is required, e.g. --config=configs/data/synthetic.py:demo")
  data_dir = cli.writable_directory(_DATA_DIR.value, "data_dir")
  builder = tfds_builder.build(_CONFIG.value, data_dir)
  splits = ", ".join(f"{name}: {info.num_examples}" for name, info in builder.info.splits.items())
  print(f"dataset: {builder.data_dir} ({splits} clips)")


def run():
  cli.run(main)


if __name__ == "__main__":
  sys.exit(run())
