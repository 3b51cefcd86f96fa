"""Benchmarks: ours against the named anchor in the same run (``python -m benchmarks``)."""
