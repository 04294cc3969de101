"""The search service: Optuna studies over the shared trainer (``search -> trainer``, never back)."""

from search.errors import SpecError, StorageError, StudyError
from search.export import best_trial, export, write_report
from search.objective import TrialRunner, suggest_config
from search.pruners import LossGuardPruner, build_pruner, build_sampler, guard_reason
from search.spec import Guard, Param, StudySpec
from search.storage import artifact_store, make_storage, redact
from search.workers import create_or_load_study, plan, run_workers, work

__all__ = [
    "Guard", "LossGuardPruner", "Param", "SpecError", "StorageError", "StudyError", "StudySpec", "TrialRunner",
    "artifact_store", "best_trial", "build_pruner", "build_sampler", "create_or_load_study", "export",
    "guard_reason", "make_storage", "plan", "redact", "run_workers", "suggest_config", "work", "write_report",
]
