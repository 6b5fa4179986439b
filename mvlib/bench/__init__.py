"""Benchmarks of the mvlib training step (run as ``python -m mvlib.bench.<name>``)."""
