"""Side-by-side measurements, run as modules from the repository root (``python -m benchmarks.speed.throughput``):

- ``speed``: training throughput, evaluation cost, packing (trials per device);
- ``quality``: search progress against plain Optuna, random search and presets; pruning, warm starts, coverage,
  the article's MLP, DCGAN parity;
- ``scale``: many workers on one database (cluster), and the search in virtual time (simulate).

Each takes ``--out`` (default: ``benchmarks/results/<name>-<date>.json``) and records the machine and commit
beside its figures (``benchmarks/_common.py``).
"""
