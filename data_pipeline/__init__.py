"""Host-side data: template head mesh, cameras, Plücker rays, renderer, synthetic world, TFDS.

Runs in Grain and Beam worker processes, so nothing here imports jax.
"""
