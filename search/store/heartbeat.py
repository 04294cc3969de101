"""A running trial's heartbeat and the sweep that fails trials whose worker died, whatever the storage is.

On a database (``RDBStorage``) the beat is Optuna's own (``record_heartbeat``) and the sweep is Optuna's
``fail_stale_trials`` plus one for trials claimed but never beaten (their worker died between the claim and its
first beat, which Optuna does not judge). Through a storage proxy, which has no heartbeats, the beat is the
wall-clock time in the trial's ``attrs.PROXY_HEARTBEAT`` system attribute (search/store/proxy.py says why).
Either way a stale trial is failed and re-enqueued exactly once: the state change is atomic in the database, so
of two workers that see the same stale trial one wins and the other gets ``UpdateFinishedTrialError``.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import optuna
from optuna.storages import RDBStorage, fail_stale_trials
from optuna.trial import TrialState
from sqlalchemy import select

from search import attrs
from search._optuna import models, start_column, storage_of, study_id, trial_id
from search.store.retry import Retry
from search.store.storage import rdb_backend

log = logging.getLogger(__name__)


@contextmanager
def heartbeat(storage: Any, trial: int, every: float = 0) -> Iterator[None]:
    """Beat for trial id ``trial`` from a thread while the block runs: every ``storage.get_heartbeat_interval()``
    seconds on a database, every ``every`` seconds through a proxy; nothing where the interval is 0."""
    beat: Callable[[], Any]
    if isinstance(storage, RDBStorage):
        interval = float(storage.get_heartbeat_interval() or 0)
        beat = lambda: storage.record_heartbeat(trial)  # noqa: E731
    else:
        interval = float(every)
        beat = lambda: storage.set_trial_system_attr(trial, attrs.PROXY_HEARTBEAT, time.time())  # noqa: E731
    if not interval:
        yield
        return
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval):
            try:
                beat()
            except optuna.exceptions.UpdateFinishedTrialError:
                return
            except Exception:  # a transient database error must not kill the trial
                log.warning("heartbeat of trial id %d failed", trial, exc_info=True)

    beat()
    thread = threading.Thread(target=loop, daemon=True, name=f"heartbeat-{trial}")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def fail_stale(study: optuna.Study, grace_period: float, max_retry: int) -> None:
    """Fail the RUNNING trials whose worker stopped beating over ``grace_period`` seconds ago and re-enqueue each
    once (its retry resumes from its checkpoint). Every worker calls this before it claims."""
    if rdb_backend(study) is None:
        _fail_stale_by_attribute(study, grace_period, max_retry)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        fail_stale_trials(study)
    for tid in orphaned_trials(study, grace_period):
        if fail_and_retry(study, tid, max_retry):
            log.warning("trial id %d was claimed but never sent a heartbeat; failed", tid)


def _fail_stale_by_attribute(study: optuna.Study, grace_period: float, max_retry: int) -> None:
    now = time.time()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        # a retry inherits its dead trial's system attributes (Optuna's RetryFailedTrialCallback), heartbeat included:
        # a beat from before the trial started is the dead trial's, not this one's
        started = t.datetime_start.timestamp() if t.datetime_start else now
        last = max(float(t.system_attrs.get(attrs.PROXY_HEARTBEAT, started)), started)
        if now - last > grace_period and fail_and_retry(study, trial_id(t), max_retry):
            log.warning("trial %d: its worker stopped sending heartbeats; failed", t.number)


def fail_and_retry(study: optuna.Study, trial: int, max_retry: int, *, interrupted: bool = False) -> bool:
    """Fail RUNNING trial id ``trial`` and re-enqueue it once (``search.store.retry``; ``interrupted``: a hand-back,
    which uses up no retry); False when another worker ended it first."""
    storage = storage_of(study)
    try:
        if not storage.set_trial_state_values(trial, state=TrialState.FAIL):
            return False
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
    Retry(max_retry, interrupted=interrupted)(study, storage.get_trial(trial))
    return True


def orphaned_trials(study: optuna.Study, older_than: float) -> list[int]:
    """Ids of RUNNING trials that never recorded a heartbeat and started over ``older_than`` seconds ago: their
    worker died, or lost the database, between claiming and its first beat. Optuna's ``fail_stale_trials`` judges
    only trials with a heartbeat, so without this sweep such a row stayed RUNNING forever. [] without an RDB."""
    rdb = rdb_backend(study)
    if rdb is None or not rdb.get_heartbeat_interval():
        return []
    m = models()
    query = (select(m.TrialModel.trial_id, start_column(m.TrialModel))
             .outerjoin(m.TrialHeartbeatModel, m.TrialHeartbeatModel.trial_id == m.TrialModel.trial_id)
             .where(m.TrialModel.study_id == study_id(study), m.TrialModel.state == TrialState.RUNNING,
                    m.TrialHeartbeatModel.trial_id.is_(None)))
    cutoff = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=older_than)
    with rdb.engine.connect() as conn:
        return [int(i) for i, start in conn.execute(query) if start is not None and start < cutoff]


__all__ = ["fail_and_retry", "fail_stale", "heartbeat", "orphaned_trials"]
