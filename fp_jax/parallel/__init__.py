"""Meshes, logical-axis sharding, distributed start-up and the device side of the input."""
