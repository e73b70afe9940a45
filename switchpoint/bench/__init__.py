"""Benchmarks: `switchpoint bench ...`."""
