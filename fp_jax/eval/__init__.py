"""Evaluation on held-out identities and the benchmark report (`fp-eval`)."""
