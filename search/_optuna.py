"""Every use of Optuna's private attributes and modules, in one place (optuna is bounded in pyproject.toml: on the
next Optuna upgrade, this is the file to check).

Optuna keeps a study's storage, its id and a trial's id private; the service needs them to claim trials by id
under its own lock, to write heartbeats and grids from a worker thread, and to read the trials table with narrow
queries instead of loading every trial's body.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import optuna
from optuna.trial import FrozenTrial


def storage_of(study: optuna.Study) -> Any:
    """The study's own storage object (Optuna's cached wrapper around RDBStorage, or a proxy client)."""
    return study._storage  # noqa: SLF001


def study_id(study: optuna.Study) -> int:
    return int(study._study_id)  # noqa: SLF001


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    return int(trial._trial_id)  # noqa: SLF001


def backend_of(storage: Any) -> Any:
    """The storage under Optuna's trial cache (``_CachedStorage._backend``), or ``storage`` itself."""
    return getattr(storage, "_backend", storage)


def refresh_trials(study: optuna.Study) -> None:
    """Tell Optuna's trial cache to read the trials table again (it learns of trials claimed behind its back)."""
    refresh = getattr(storage_of(study), "_read_trials_from_remote_storage", None)
    if refresh is not None:
        refresh(study_id(study))


def rdb_trials(rdb: Any, study_id: int, states: Any, included: set[int], greater_than: int) -> list[FrozenTrial]:
    """RDBStorage's own loader for exactly the trials ``included`` (plus those above ``greater_than``)."""
    return list(rdb._get_trials(study_id, states=states, included_trial_ids=included,  # noqa: SLF001
                                trial_id_greater_than=greater_than))


def models() -> ModuleType:
    """Optuna's SQLAlchemy models of the trials tables (``optuna.storages._rdb.models``)."""
    from optuna.storages._rdb import models as rdb_models

    return rdb_models


def contains(distribution: Any, value: Any) -> bool:
    """Whether ``value`` lies in ``distribution`` (Optuna's own check, ``BaseDistribution._contains``)."""
    try:
        return bool(distribution._contains(distribution.to_internal_repr(value)))  # noqa: SLF001
    except (ValueError, TypeError):
        return False


def start_column(trial_model: Any) -> Any:
    """The trials table's start time column (naive UTC in optuna 5.0)."""
    return trial_model._datetime_start_utc  # noqa: SLF001


__all__ = ["backend_of", "contains", "models", "rdb_trials", "refresh_trials", "start_column", "storage_of", "study_id",
           "trial_id"]
