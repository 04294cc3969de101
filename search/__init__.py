"""The search service: Optuna studies over the shared trainer (``search -> trainer``, never back).

``search.api`` is the Python API the CLI wraps (run, create, status, export); the modules below it hold one
concept each: spec (study files), study (creation and plan), worker (one worker), launch (K workers),
objective (a trial), pruners (samplers, pruners, the loss guard), storage, export, attrs (stored keys).
"""

from search import api
from search.errors import SpecError, StorageError, StudyError
from search.export import best_trial, export, write_report
from search.launch import run_workers
from search.objective import TrialRunner, suggest_config
from search.pruners import LossGuardPruner, build_pruner, build_sampler, guard_reason
from search.registries import PRUNERS, SAMPLERS
from search.spec import Guard, Param, StudySpec
from search.storage import artifact_store, make_storage, redact
from search.study import create_or_load_study, plan, progress
from search.worker import work

__all__ = [
    "PRUNERS", "SAMPLERS", "Guard", "LossGuardPruner", "Param", "SpecError", "StorageError", "StudyError", "StudySpec",
    "TrialRunner", "api", "artifact_store", "best_trial", "build_pruner", "build_sampler", "create_or_load_study",
    "export", "guard_reason", "make_storage", "plan", "progress", "redact", "run_workers", "suggest_config", "work",
    "write_report",
]
