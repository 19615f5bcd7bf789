"""Helpers shared by the test suite and the benchmarks (real clusters, no fakes)."""
