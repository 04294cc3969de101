"""Benchmarks: scale (see benchmarks/__init__.py)."""
