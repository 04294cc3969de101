"""Running trials: a worker's claim loop, K local workers / Dask / devices (launch), one trial (suggestions ->
TrainConfig -> train -> reports and artifacts), and its torch-free replay from recorded curves.

The names below load on first use (search/_lazy.py).
"""

from __future__ import annotations

from search._lazy import exports

_WHERE = {
    "work": "worker", "WorkerReport": "worker", "run_workers": "launch", "replay_workers": "launch", "TrialRunner":
    "trial", "TrialSession": "trial", "suggest_config": "trial", "Replay": "replay", "ReplayRunner": "replay",
}
__getattr__ = exports(__name__, _WHERE)
__all__ = sorted(_WHERE)
