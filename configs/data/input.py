r"""The training input pipeline: which clips, how they become examples, how they are batched.

Training configs embed it as `config.input`; it can also be run on its own:
  python benchmarks/input_pipeline.py --config=configs/data/input.py:demo
Variants `tiny` (tests), `demo` (make demo) and `pod` (TPU pods; the `pod` data config).
"""
import ml_collections


def get_config(arg="demo"):
  config = ml_collections.ConfigDict()
  config.data_dir = "outputs/demo/data"
  config.dataset = arg  # the data config it was built from: configs/data/synthetic.py:<dataset>
  config.split = "train"
  config.verify = "all"  # at start-up: "all" checks every record's hash, "count" only file lengths
  config.global_batch_size = 8  # split evenly over the JAX processes
  config.seed = 0
  config.shuffle = True
  config.num_epochs = 0  # 0: repeat forever
  config.window = ml_collections.ConfigDict(dict(num_frames=17, stride=1))
  config.reference = "same_clip"  # or "cross_clip": another clip (time, camera) of the same identity
  # source: "frames" (cut from the video, as sampling and evaluation do), "stored" (the dataset's
  # faces rendered at crop resolution, as a high-resolution driving video gives) or "mixed": either,
  # by a coin per example that falls "stored" with stored_share.
  # parts: close-ups cut beside each face crop (data_pipeline/face_crop.py PARTS); a training config
  # ties them to motion.expression_parts, the encoder that reads them (configs/common.py).
  config.face_crop = ml_collections.ConfigDict(dict(size=64, margin=1.8, source="frames", stored_share=0.5,
                                                    parts=()))
  # normals: "stored", or "render" again from pose and shape (size 0 = the video's; any encoding)
  config.normals = ml_collections.ConfigDict(
      dict(source="stored", height=0, width=0, supersample=1, encoding="uint8"))
  config.rays_dtype = "float32"
  # The reference carried onto every frame through the mesh (`warped`, data_pipeline/reference_warp.py):
  # what a DiT with model.warped_reference reads; the two go together.
  config.warped_reference = False
  # Motion training: this many frames of each window also rendered on another person and view
  # (0: none); rendering them is most of the motion input's cost.
  config.expression_twins = 0
  # "one": the twinned frames on one new person; "each": a new person for every twinned frame.
  # At the demo's 250 motion steps "each" with 8 twins did not beat "one" with 4 (held-out
  # expression R^2 -0.23 against -0.20, pose error 16.3 against 18.0 degrees; benchmarks/motion.py).
  config.twin_people = "one"
  # Motion training on people drawn anew for every example (one frame each, rendered in the
  # workers at the dataset's size, fps and crop settings): an epoch of this many people, none seen
  # twice in a run; 0 reads the dataset's clips. The encoders then cannot memorise the few dataset
  # identities (data_pipeline/fresh_people.py). Set global_batch_size to the crops a step wants.
  # Measured (benchmarks/motion.py --steps 800 --fresh_people 1000000 --batch 64, twins on, about
  # 3 s a step here, input-bound): held-out pose error 4.78 degrees (clips: 8.79 at 600 steps),
  # expression R^2 -0.01 (clips: -0.11), identity probe 0.68 (chance 0.25).
  config.fresh_people = 0
  # Each input worker keeps up to this many rendered fresh people in memory, so the later epochs
  # of a run on `fresh_people = N` people re-read them instead of rendering them again (0: off).
  # Two workers or more share what they keep through a temporary folder (about the same size
  # again on disk), so each person is rendered once per host, not once per worker.
  # A 64x64 crop is 12 KB: the tiny motion config's person (the face and three close-ups) 48 KB,
  # so its 30000 people 1.5 GB a worker, kept in slabs allocated once
  # (data_pipeline/kept_examples.py; kept one by one in a dict, a worker grew by 357 KB a
  # person: benchmarks/kept_examples.py). Measured (benchmarks/motion.py --steps 400
  # --fresh_people 10000 --fresh_people_cache 10000 --batch 128 --expression_twins 0, 6 min 21 s
  # in all, before the workers shared renders; input-bound for the first two epochs, as a repeat
  # could reach the other worker, then no wait): held-out pose error 5.02 degrees against 8.10
  # for the demo's clips with 4 twins at 400 steps; expression R^2 -0.05 against -0.11.
  config.fresh_people_cache = 0
  # Identity training (with fresh_people): each example one new person seen this many times, each
  # view with its own expression, head motion, camera, lighting and backdrop (0: off; else >= 2).
  config.identity_views = 0
  # A latent cache (fp-cache-latents) to read instead of the clips: dit task only; "" = off.
  config.cached_latents = ""
  # Classifier-free guidance: drop everything, the motion signals together, or one condition.
  config.drop = ml_collections.ConfigDict(
      dict(all=0.05, motion=0.05, reference=0.05, expression=0.1, pose=0.1, camera=0.1))
  config.workers = ml_collections.ConfigDict(dict(count=2, buffer_size=2, read_threads=1))
  config.device_prefetch = 2  # global batches placed on the devices ahead of the step
  if arg == "tiny":
    config.data_dir = "outputs/tiny/data"
    config.global_batch_size = 8
    config.window.num_frames = 5
    config.face_crop.size = 16
    config.workers.count = 0
  elif arg == "pod":
    config.data_dir = "/gcs/YOUR_BUCKET/factor_portrait"
    config.global_batch_size = 16
    config.window.num_frames = 81
    config.face_crop.size = 224
    config.rays_dtype = "float16"
    config.verify = "count"  # a full read of a pod dataset belongs in a separate job
    config.workers = ml_collections.ConfigDict(dict(count=16, buffer_size=2, read_threads=2))
  elif arg != "demo":
    raise ValueError(f"unknown variant {arg!r}: use tiny, demo or pod")
  return config
