"""Training: the trainer, its tasks (vae, motion, dit), optimizer, checkpoints and metrics."""
