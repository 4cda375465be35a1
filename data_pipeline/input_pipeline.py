"""The Grain input pipeline: one process's share of every global batch, as numpy.

  record indices -> this process's shard -> seeded shuffle (new order each epoch) -> repeat
  -> per-example map (read, window, rays, crops, drop flags) -> batch (drop remainder)
  -> iterator (read threads) -> multiprocessing workers with prefetch

Each of `process_count` processes reads a disjoint shard (records `process_index::process_count`)
and yields batches of `global_batch_size / process_count` examples. The randomness of an example
comes from the pipeline seed and its position, so the batches are the same for any number of
workers. The iterator's `get_state()` / `set_state()` resume it exactly (it goes into the
training checkpoint). Turning host batches into global `jax.Array`s is `fp_jax`'s job.
"""
from absl import flags
import grain

from data_pipeline import examples
from data_pipeline.errors import require
from data_pipeline.records import ClipRecords


def host_batch_size(config, process_count):
  require(process_count >= 1, f"process count must be >= 1, got {process_count}")
  require(config.global_batch_size >= 1, f"global_batch_size must be >= 1, got {config.global_batch_size}")
  require(config.global_batch_size % process_count == 0,
          f"global_batch_size {config.global_batch_size} is not divisible by the "
          f"{process_count} processes")
  return config.global_batch_size // process_count


def make_dataset(config, process_index=0, process_count=1):
  """The pipeline for one process, as a `grain.IterDataset` of host batches (dicts of numpy)."""
  batch_size = host_batch_size(config, process_count)
  require(0 <= process_index < process_count, f"process index {process_index} not in [0, {process_count})")
  records = ClipRecords(config.data_dir, config.dataset, config.split, config.verify)
  examples.check_config(config, records)
  require(config.workers.count >= 0, f"workers.count must be >= 0, got {config.workers.count}")
  require(config.num_epochs >= 0, f"num_epochs must be >= 0 (0 repeats forever), got {config.num_epochs}")
  dataset = grain.MapDataset.range(len(records))[process_index::process_count]
  require(len(dataset) > 0, f"process {process_index} of {process_count} gets no clips of "
                           f"{records.name}/{config.split} ({len(records)} in all)")
  require(not config.num_epochs or len(dataset) * config.num_epochs >= batch_size,
          f"{config.num_epochs} epoch(s) of the {len(dataset)} clips of process {process_index} "
          f"do not fill one batch of {batch_size}")
  dataset = dataset.seed(config.seed)
  if config.shuffle:
    dataset = dataset.shuffle()
  dataset = dataset.repeat(config.num_epochs or None)
  dataset = dataset.random_map(examples.MakeExample(records, config))
  dataset = dataset.batch(batch_size, drop_remainder=True)
  dataset = dataset.to_iter_dataset(grain.ReadOptions(
      num_threads=config.workers.read_threads, prefetch_buffer_size=config.workers.buffer_size))
  if config.workers.count > 0:
    if not flags.FLAGS.is_parsed():  # used as a library, outside an absl app: Grain reads its flags
      flags.FLAGS.mark_as_parsed()
    dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=config.workers.count, per_worker_buffer_size=config.workers.buffer_size))
  return dataset


def make_iterator(config, process_index=0, process_count=1):
  """A checkpointable iterator of host batches (`get_state`, `set_state`, `close`)."""
  return iter(make_dataset(config, process_index, process_count))
