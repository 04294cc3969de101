"""The heartbeat and the stale sweep (search/store/heartbeat.py), on a real PostgreSQL."""

from __future__ import annotations

import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from search import StudySpec, attrs, create_or_load_study
from search.store.heartbeat import fail_stale, heartbeat, orphaned_trials
from search.store.storage import make_storage
from search.strategy.study import take_waiting
from tests.search.conftest import small_study


def test_a_claimed_trial_that_never_sent_a_heartbeat_is_failed_and_retried(tmp_path: Path, postgres_url: str) -> None:
    """A worker killed (or cut off) between its claim and its first heartbeat: Optuna's fail_stale_trials never
    judges such a trial; the sweep fails it after the grace period and re-enqueues it once."""
    raw = small_study("orphan", tmp_path)
    raw["storage"].update(url=postgres_url, heartbeat_interval=1, grace_period=2)
    spec = StudySpec.from_dict(raw)
    study = create_or_load_study(spec)
    study.enqueue_trial({"lr_g": 3e-4, "loss": "bce"})
    storage = make_storage(postgres_url, heartbeat_interval=1, grace_period=2)
    study = optuna.load_study(study_name="orphan", storage=storage)
    claimed_id = take_waiting(study)  # claimed, and its worker dies before beating
    assert claimed_id is not None and orphaned_trials(study, spec.grace_period) == []
    claimed = study._storage.get_trial(claimed_id)  # noqa: SLF001
    time.sleep(2.5)
    assert orphaned_trials(study, spec.grace_period) == [claimed._trial_id]
    fail_stale(study, spec.grace_period, spec.max_retry)
    trials = study.get_trials()
    assert trials[claimed.number].state == TrialState.FAIL
    retry = [t for t in trials if t.system_attrs.get(attrs.FAILED_TRIAL) == claimed.number]
    assert len(retry) == 1 and retry[0].state == TrialState.WAITING
    assert orphaned_trials(study, spec.grace_period) == []


def test_one_heartbeat_beats_on_a_database_and_through_attributes_alike(tmp_path: Path, postgres_url: str) -> None:
    """The same context manager writes Optuna's heartbeat table on an RDBStorage, and the heartbeat system attribute
    on any other storage (a proxy client); the sweep then reads the right one."""
    raw = small_study("beats", tmp_path)
    raw["storage"].update(url=postgres_url, heartbeat_interval=1, grace_period=2)
    spec = StudySpec.from_dict(raw)
    create_or_load_study(spec)
    rdb = make_storage(postgres_url, heartbeat_interval=1, grace_period=2)
    study = optuna.load_study(study_name="beats", storage=rdb)
    on_db = study.ask()
    with heartbeat(rdb, on_db._trial_id):  # noqa: SLF001
        time.sleep(2.5)
        fail_stale(study, spec.grace_period, spec.max_retry)  # beaten within the grace period: not stale
        assert study._storage.get_trial(on_db._trial_id).state == TrialState.RUNNING  # noqa: SLF001
    assert orphaned_trials(study, 0) == []  # it has a row in the heartbeat table

    memory = optuna.create_study()  # any non-RDB storage: beats go to the system attribute
    by_attr = memory.ask()
    with heartbeat(memory._storage, by_attr._trial_id, every=0.2):  # noqa: SLF001
        first = memory._storage.get_trial(by_attr._trial_id).system_attrs[attrs.PROXY_HEARTBEAT]  # noqa: SLF001
        time.sleep(0.5)
        later = memory._storage.get_trial(by_attr._trial_id).system_attrs[attrs.PROXY_HEARTBEAT]  # noqa: SLF001
    assert later > first
    fail_stale(memory, 60, 1)
    assert memory.trials[0].state == TrialState.RUNNING
    time.sleep(0.3)
    fail_stale(memory, 0.25, 1)  # the beats stopped over 0.25 s ago: stale, failed and re-enqueued once
    assert [t.state for t in memory.trials] == [TrialState.FAIL, TrialState.WAITING]
