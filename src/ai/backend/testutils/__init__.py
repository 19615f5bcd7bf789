"""Helpers shared by the test suite and the benchmarks (real clusters, no fakes).

It lives under ``src`` because the benchmarks and the compatibility suite import it too; the built wheel leaves
it out (``[tool.setuptools.packages.find] exclude`` in pyproject.toml).
"""
