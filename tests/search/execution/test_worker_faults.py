"""The claim loop's faults (search/execution/worker.py): a stop signal that meets a trial already failed elsewhere, a
trial told after another worker failed it, on the real worker loop (replay runner: no training)."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from search import StudySpec, attrs, create_or_load_study
from search._optuna import trial_id
from search.execution.replay import Curves, Replay
from search.execution.worker import record_outcome, work
from search.store.heartbeat import fail_and_retry
from search.store.storage import make_storage
from search.strategy.schedulers import scheduler_for
from tests.search.conftest import small_study, write_study
from tests.search.execution.test_replay import write_curves


def _planned(tmp_path: Path, name: str, n_trials: int) -> StudySpec:
    raw = small_study(name, tmp_path, budget={"n_trials": n_trials, "trial_images": 640, "eval_every_images": 320})
    spec = StudySpec.from_file(write_study(tmp_path, raw))
    scheduler_for(spec).plan(create_or_load_study(spec), spec.n_trials)
    return spec


def test_a_stop_signal_during_a_hand_back_of_a_trial_failed_elsewhere_ends_the_worker(tmp_path: Path) -> None:
    """Another worker fails the running trial as stale (its retry WAITING), then SIGTERM arrives: the hand-back meets
    UpdateFinishedTrialError. The worker must still stop (KeyboardInterrupt), not claim the retry and run on."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals reach the main thread only")
    spec = _planned(tmp_path, "swallow", 2)
    study = optuna.load_study(study_name="swallow", storage=make_storage(spec.storage))

    def other_worker_then_sigterm() -> None:
        deadline = time.time() + 60
        while time.time() < deadline:
            running = study.get_trials(states=(TrialState.RUNNING,))
            if running and attrs.CONFIG in running[0].user_attrs:  # mid-trial: in its first evaluation's sleep
                assert fail_and_retry(study, trial_id(running[0]), spec.max_retry)
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.05)

    before = signal.getsignal(signal.SIGTERM)
    helper = threading.Thread(target=other_worker_then_sigterm)
    helper.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            work("swallow", spec.storage, replay=Replay(Curves.load(write_curves(tmp_path)), trial_seconds=20))
    finally:
        helper.join()
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]  # the retry is left for a worker
    assert signal.getsignal(signal.SIGTERM) == before  # the worker's handler is gone with the worker


def test_telling_a_trial_another_worker_failed_does_not_kill_the_worker(tmp_path: Path) -> None:
    """The trial ends here after another worker failed it as stale: Optuna's tell raised ValueError, which killed the
    worker; the outcome is now dropped (the retry counts) and the worker goes on."""
    spec = _planned(tmp_path, "told", 1)
    study = optuna.load_study(study_name="told", storage=make_storage(spec.storage))
    study.enqueue_trial({"lr_g": 3e-4, "loss": "bce"})
    trial = study.ask()

    def finished_elsewhere_then_value() -> list[float]:
        assert fail_and_retry(study, trial._trial_id, spec.max_retry)  # noqa: SLF001
        return [1.0]

    record_outcome(study, trial, spec, finished_elsewhere_then_value)
    trials = study.get_trials()
    assert trials[0].state == TrialState.FAIL and trials[1].state == TrialState.WAITING
    assert trials[1].system_attrs[attrs.FAILED_TRIAL] == 0
