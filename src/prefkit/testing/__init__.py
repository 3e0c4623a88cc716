"""Tiny random checkpoints and toy data, made offline, for tests, the demo and benchmarks."""
