"""Sampling: a portrait, a driving video and cameras in, a video out (`fp-sample`)."""
