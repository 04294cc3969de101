"""The one retry rule (search/store/retry.py): chains of retries, crashes against hand-backs, the study plan."""

from __future__ import annotations

import logging
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from search import StudySpec, attrs, create_or_load_study
from search._optuna import trial_id
from search.store.heartbeat import fail_and_retry
from search.store.retry import resumes_from, retry_history
from search.store.storage import make_storage
from search.strategy.study import _planned_rows, planned_trials, progress, set_target, take_waiting
from tests.search.conftest import small_study


def _study(tmp_path: Path, url: str | None = None, max_retry: int = 2) -> optuna.Study:
    raw = small_study("chain", tmp_path)
    if url:
        raw["storage"]["url"] = url
    raw["storage"]["max_retry"] = max_retry
    spec = StudySpec.from_dict(raw)
    study = create_or_load_study(spec)
    set_target(study, 1)
    study.enqueue_trial({"lr_g": 3e-4, "loss": "bce"})
    return optuna.load_study(study_name="chain", storage=make_storage(spec.storage))


def _run_and_fail(study: optuna.Study, max_retry: int, interrupted: bool = False) -> bool:
    """Claim the waiting trial and fail it as a worker would (crash or hand-back); whether a retry was made."""
    tid = take_waiting(study)
    assert tid is not None
    before = len(study.get_trials())
    assert fail_and_retry(study, tid, max_retry, interrupted=interrupted)
    return len(study.get_trials()) > before


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_a_retry_of_a_retry_counts_once_and_resumes_from_the_latest_failed_trial(
        tmp_path: Path, db: str, request: pytest.FixtureRequest) -> None:
    """Trial 0 crashes, its retry 1 crashes, retry 2 waits: one planned trial, not two (Optuna's ``failed_trial``
    names 0 on both retries); retry 2 resumes from trial 1's checkpoint, not trial 0's."""
    study = _study(tmp_path, request.getfixturevalue("postgres_url") if db == "postgres" else None)
    assert _run_and_fail(study, 2) and _run_and_fail(study, 2)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL, TrialState.WAITING]
    assert retry_history(trials[2].system_attrs) == [0, 1] and trials[2].system_attrs[attrs.FAILED_TRIAL] == 0
    assert resumes_from(trials[2].system_attrs) == 1
    assert planned_trials(study) == 1 and _planned_rows(study) == 1  # narrow queries and trial bodies agree
    assert progress(study)["failed"] == 0 and progress(study)["waiting"] == 1


def test_hand_backs_do_not_use_up_max_retry_and_crashes_do(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """With max_retry=1: three hand-backs (SIGTERM, time limits) are each retried; then one crash is retried and the
    second is not, and no "re-enqueued" line is logged for it."""
    study = _study(tmp_path, max_retry=1)
    for _ in range(3):
        assert _run_and_fail(study, 1, interrupted=True)
    assert _run_and_fail(study, 1)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert not _run_and_fail(study, 1)
    assert "re-enqueued" not in caplog.text and "not retried" in caplog.text
    last = study.get_trials()[-1]
    assert last.state == TrialState.FAIL and last.system_attrs[attrs.CRASHES] == 1
    assert retry_history(last.system_attrs) == [0, 1, 2, 3]


def test_a_retry_does_not_inherit_the_fail_reason(tmp_path: Path) -> None:
    study = _study(tmp_path)
    tid = take_waiting(study)
    assert tid is not None
    study._storage.set_trial_user_attr(tid, attrs.FAIL_REASON, "interrupted")  # noqa: SLF001
    fail_and_retry(study, tid, 2, interrupted=True)
    retry = study.get_trials()[-1]
    assert retry.state == TrialState.WAITING and attrs.FAIL_REASON not in retry.user_attrs
    assert trial_id(retry) != tid
