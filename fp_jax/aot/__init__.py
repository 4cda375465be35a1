"""Ahead-of-time compilation for TPU topologies on any host (`fp-aot`)."""
