"""Weights across frameworks: diffusers <-> ours, safetensors, the PyTorch mirror."""
