"""Benchmarks run with pytest-ipw's fixtures; see README "How to add a benchmark"."""
