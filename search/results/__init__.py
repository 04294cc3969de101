"""What a study found: the best trial and the configs to confirm (selection), the export and its report,
per-trial sample galleries, and live progress.

The names below load on first use (search/_lazy.py).
"""

from __future__ import annotations

from search._lazy import exports

_WHERE = {
    "best_trial": "selection", "candidates": "selection", "ranked": "selection", "export": "export", "write_report":
    "export", "Gallery": "gallery", "snapshot": "progress", "watch": "progress",
}
__getattr__ = exports(__name__, _WHERE)
__all__ = sorted(_WHERE)
