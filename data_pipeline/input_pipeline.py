"""The Grain input pipeline: one process's share of every global batch, as numpy.

  record indices -> seeded shuffle (new order each epoch) -> repeat
  -> per-example map (read, window, rays, crops, drop flags; lazy) -> batch (drop remainder)
  -> this process's share of the batches -> iterator (read threads) -> multiprocessing workers with prefetch

One global stream of examples is defined by the seed alone, cut into blocks of
`global_batch_size / P`; process `p` of `P` takes blocks `p, p + P, p + 2P, ...` (a disjoint
shard: within an epoch no example is read twice). Its k-th batch is thus the p-th block of the
k-th global batch, so the global batches, row for row, are the same for any number of processes,
which makes multi-host runs reproduce single-host ones. The map is lazy, so a process only reads and
processes its own examples. The randomness of an example comes from the seed and its position in
the stream, so the batches are also the same for any number of workers. The iterator's `get_state()` / `set_state()` resume it exactly (it goes into the
training checkpoint). Turning host batches into global `jax.Array`s is `fp_jax`'s job.
"""
import signal

from absl import flags
import grain

from data_pipeline import examples, fresh_people, latent_cache
from data_pipeline.errors import require
from data_pipeline.records import ClipRecords


def host_batch_size(config, process_count):
  require(process_count >= 1, f"process count must be >= 1, got {process_count}")
  require(config.global_batch_size >= 1, f"global_batch_size must be >= 1, got {config.global_batch_size}")
  require(config.global_batch_size % process_count == 0,
          f"global_batch_size {config.global_batch_size} is not divisible by the "
          f"{process_count} processes")
  return config.global_batch_size // process_count


def make_dataset(config, process_index=0, process_count=1, steps=None):
  """The pipeline for one process, as a `grain.IterDataset` of host batches (dicts of numpy);
  with `steps`, a run of that many batches is refused if `num_epochs` holds fewer."""
  batch_size = host_batch_size(config, process_count)
  require(0 <= process_index < process_count, f"process index {process_index} not in [0, {process_count})")
  if config.get("cached_latents"):  # a cached-latents dataset (data_pipeline/latent_cache.py)
    records = latent_cache.LatentRecords(config.cached_latents, config.split, config.verify)
    latent_cache.check_config(config, records)
    make_example = latent_cache.MakeCachedExample(records, config)
  elif config.get("fresh_people"):  # people drawn anew per example (the motion task)
    require(config.fresh_people > 0, f"fresh_people must be >= 0 (0: the dataset's people), got {config.fresh_people}")
    clips = ClipRecords(config.data_dir, config.dataset, config.split, config.verify)  # the world's size, fps
    records = range(int(config.fresh_people))
    make_example = fresh_people.MakeFreshExample(clips, config)
  else:
    records = ClipRecords(config.data_dir, config.dataset, config.split, config.verify)
    examples.check_config(config, records)
    make_example = examples.MakeExample(records, config)
  require(config.workers.count >= 0, f"workers.count must be >= 0, got {config.workers.count}")
  require(config.num_epochs >= 0, f"num_epochs must be >= 0 (0 repeats forever), got {config.num_epochs}")
  require(not config.num_epochs or len(records) * config.num_epochs >= config.global_batch_size,
          f"{config.num_epochs} epoch(s) of the {len(records)} records of {config.split} "
          f"do not fill one global batch of {config.global_batch_size}")
  if config.num_epochs and steps:
    batches = len(records) * config.num_epochs // config.global_batch_size
    require(steps <= batches, f"{steps} steps need more than the {batches} global batches of {config.num_epochs} "
            f"epoch(s) of the {len(records)} records of {config.split}: raise num_epochs, or 0 repeats forever")
  dataset = grain.MapDataset.range(len(records)).seed(config.seed)
  if config.shuffle:
    dataset = dataset.shuffle()
  dataset = dataset.repeat(config.num_epochs or None)
  dataset = dataset.random_map(make_example)
  if config.num_epochs:  # whole global batches only, so every process has as many batches
    dataset = dataset[:len(dataset) - len(dataset) % config.global_batch_size]
  # Host batch `kP + p` of the stream is process p's block of global batch k.
  dataset = dataset.batch(batch_size, drop_remainder=True)[process_index::process_count]
  dataset = dataset.to_iter_dataset(grain.ReadOptions(
      num_threads=config.workers.read_threads, prefetch_buffer_size=config.workers.buffer_size))
  if config.workers.count > 0:
    if not flags.FLAGS.is_parsed():  # used as a library, outside an absl app: Grain reads its flags
      flags.FLAGS.mark_as_parsed()
    dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=config.workers.count, per_worker_buffer_size=config.workers.buffer_size),
        worker_init_fn=leave_stopping_to_the_trainer)
  return dataset


def leave_stopping_to_the_trainer(worker_index, worker_count):
  """In each input worker: ignore SIGTERM and SIGINT. A preemption (or a Ctrl-C, or `timeout`)
  signals the whole process group; a worker that died of it would break the trainer's next batch
  before the trainer could save. The trainer stops its workers itself when it closes."""
  del worker_index, worker_count
  signal.signal(signal.SIGTERM, signal.SIG_IGN)
  signal.signal(signal.SIGINT, signal.SIG_IGN)


def make_iterator(config, process_index=0, process_count=1, steps=None):
  """A checkpointable iterator of host batches (`get_state`, `set_state`, `close`)."""
  return iter(make_dataset(config, process_index, process_count, steps))
