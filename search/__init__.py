"""The search service: Optuna studies over the shared trainer (``search -> trainer``, never back).

``search.api`` is the Python API the CLI wraps (run, create, status, export). Below it, one package per role,
each importing only the ones listed before it (tests/test_layout.py checks):

- ``store``: database URLs and pools, the study lock, outages, heartbeats, the storage proxy, artifacts;
- ``spec``: study files -> ``StudySpec``, warm-start presets;
- ``strategy``: samplers, pruners, schedulers (independent trials, PBT), per-worker defaults, the study plan;
- ``results``: selection of the best trial, export and report, galleries, progress;
- ``execution``: the worker's claim loop, launchers, one trial, replay.

``attrs`` (stored keys), ``errors``, ``registries`` and ``_optuna`` (every use of Optuna's private attributes) sit
under all of them. The names below load on first use (PEP 562), so that ``import search.execution.replay`` or
``search.spec`` does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from search._lazy import exports

_WHERE = {
    "api": "", "SpecError": "errors", "StorageError": "errors", "StudyError": "errors",
    "best_trial": "results.selection", "export": "results.export", "write_report": "results.export",
    "run_workers": "execution.launch", "TrialRunner": "execution.trial", "suggest_config": "execution.trial",
    "LossGuardPruner": "strategy.pruners", "build_pruner": "strategy.pruners", "guard_reason": "strategy.pruners",
    "PRUNERS": "registries", "SAMPLERS": "registries", "build_sampler": "strategy.samplers", "Guard": "spec.study_file",
    "Param": "spec.study_file", "StudySpec": "spec.study_file", "artifact_store": "store.artifacts",
    "make_storage": "store.storage", "redact": "store.storage", "create_or_load_study": "strategy.study",
    "plan": "strategy.study", "progress": "strategy.study", "work": "execution.worker",
}
__getattr__ = exports(__name__, _WHERE)

if TYPE_CHECKING:
    from search import api
    from search.errors import SpecError, StorageError, StudyError
    from search.execution.launch import run_workers
    from search.execution.trial import TrialRunner, suggest_config
    from search.execution.worker import work
    from search.registries import PRUNERS, SAMPLERS
    from search.results.export import export, write_report
    from search.results.selection import best_trial
    from search.spec.study_file import Guard, Param, StudySpec
    from search.store.artifacts import artifact_store
    from search.store.storage import make_storage, redact
    from search.strategy.pruners import LossGuardPruner, build_pruner, guard_reason
    from search.strategy.samplers import build_sampler
    from search.strategy.study import create_or_load_study, plan, progress

__all__ = [
    "Guard", "LossGuardPruner", "PRUNERS", "Param", "SAMPLERS", "SpecError", "StorageError", "StudyError",
    "StudySpec", "TrialRunner", "api", "artifact_store", "best_trial", "build_pruner", "build_sampler",
    "create_or_load_study", "export", "guard_reason", "make_storage", "plan", "progress", "redact", "run_workers",
    "suggest_config", "work", "write_report",
]
