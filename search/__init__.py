"""The search service: Optuna studies over the shared trainer (``search -> trainer``, never back).

``search.api`` is the Python API the CLI wraps (run, create, status, export); the modules below it hold one
concept each: spec (study files), study (creation and plan), schedulers (independent trials, PBT), worker
(one worker), launch (K workers), objective (a trial), replay (a trial replayed from recorded curves),
samplers and pruners (their registries' built-ins and the loss guard), storage, export (and the report),
attrs (stored keys).

The names below load on first use (PEP 562), so that ``import search.replay`` or ``search.spec`` does not
import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_WHERE = {
    "api": "", "SpecError": "errors", "StorageError": "errors", "StudyError": "errors", "best_trial": "export",
    "export": "export", "write_report": "export", "run_workers": "launch", "TrialRunner": "objective",
    "suggest_config": "objective", "LossGuardPruner": "pruners", "build_pruner": "pruners", "guard_reason": "pruners",
    "PRUNERS": "registries", "SAMPLERS": "registries", "build_sampler": "samplers", "Guard": "spec", "Param": "spec",
    "StudySpec": "spec", "artifact_store": "storage", "make_storage": "storage", "redact": "storage",
    "create_or_load_study": "study", "plan": "study", "progress": "study", "work": "worker",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'search' has no attribute {name!r}")
    if not _WHERE[name]:
        return importlib.import_module(f"search.{name}")
    return getattr(importlib.import_module(f"search.{_WHERE[name]}"), name)


if TYPE_CHECKING:
    from search import api
    from search.errors import SpecError, StorageError, StudyError
    from search.export import best_trial, export, write_report
    from search.launch import run_workers
    from search.objective import TrialRunner, suggest_config
    from search.pruners import LossGuardPruner, build_pruner, guard_reason
    from search.registries import PRUNERS, SAMPLERS
    from search.samplers import build_sampler
    from search.spec import Guard, Param, StudySpec
    from search.storage import artifact_store, make_storage, redact
    from search.study import create_or_load_study, plan, progress
    from search.worker import work

__all__ = [
    "Guard", "LossGuardPruner", "PRUNERS", "Param", "SAMPLERS", "SpecError", "StorageError", "StudyError",
    "StudySpec", "TrialRunner", "api", "artifact_store", "best_trial", "build_pruner", "build_sampler",
    "create_or_load_study", "export", "guard_reason", "make_storage", "plan", "progress", "redact", "run_workers",
    "suggest_config", "work", "write_report",
]
