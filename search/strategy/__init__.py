"""How a study searches: samplers and pruners (their registries' built-ins and the loss guard), schedulers
(independent trials, population-based training), per-worker-count defaults, and the study-wide plan.

The names below load on first use (search/_lazy.py).
"""

from __future__ import annotations

from search._lazy import exports

_WHERE = {
    "build_sampler": "samplers", "build_pruner": "pruners", "LossGuardPruner": "pruners", "guard_reason": "pruners",
    "Scheduler": "schedulers", "Independent": "schedulers", "PopulationBased": "schedulers", "scheduler_for":
    "schedulers", "for_workers": "scale", "create_or_load_study": "study", "stored_spec": "study", "plan": "study",
    "progress": "study", "trials_summary": "study", "pbt": "",
}
__getattr__ = exports(__name__, _WHERE)
__all__ = sorted(_WHERE)
