"""Device side (jax/flax): models, diffusion, parallelism, training, sampling, export."""
