"""The one retry rule: a failed trial whose worker died or was stopped is re-enqueued as a WAITING copy of itself.

Built here once and used by the three places that fail a trial for good: the storage's stale-trial callback
(Optuna's ``fail_stale_trials``), the sweep of trials claimed but never beaten (``heartbeat.fail_and_retry``) and
a worker's hand-back on Ctrl-C or SIGTERM (``execution.worker.requeue``).

What it keeps that Optuna's ``RetryFailedTrialCallback`` does not:

- ``retry_history`` is the whole chain of failed trials (Optuna's too), and ``failed_trial`` names the *root* of the
  chain (Optuna keeps the first value it saw); a retry resumes from the *latest* failed trial of its chain
  (``resumes_from``), and the study plan counts a trial as replaced when any later retry names it
  (``replaced_numbers``), so a retry of a retry is not counted as a search trial.
- ``max_retry`` bounds crashes only (a worker that died, a heartbeat that stopped). An interruption (a hand-back on
  SIGTERM: scancel, preemption, a Slurm time limit) is the cluster's doing, not the trial's: it never uses up a
  retry, so a study runs for days under a short ``--time``.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from search import attrs

log = logging.getLogger(__name__)


def retry_history(system_attrs: Mapping[str, Any]) -> list[int]:
    """The numbers of the failed trials a trial replaces, oldest first ([] for a trial that is no retry)."""
    history = system_attrs.get(attrs.RETRY_HISTORY)
    if history:
        return [int(n) for n in history]
    first = system_attrs.get(attrs.FAILED_TRIAL)
    return [] if first is None else [int(first)]


def resumes_from(system_attrs: Mapping[str, Any]) -> int | None:
    """The failed trial a retry resumes from: the latest of its chain (None for a trial that is no retry)."""
    history = retry_history(system_attrs)
    return history[-1] if history else None


def replaced_numbers(trials: Iterable[FrozenTrial]) -> set[int]:
    """Numbers of failed trials that a retry replaces (each counted once in the study plan, by its last retry)."""
    return {n for t in trials for n in retry_history(t.system_attrs)}


class Retry:
    """Re-enqueue a failed trial as a WAITING copy (params, user attributes, intermediate values), unless it has
    crashed more than ``max_retry`` times. Callable as Optuna's ``heartbeat_stale_trial_callback``.

    ``interrupted=True`` (a hand-back) does not count as a crash. The copy's ``failed_trial`` is the chain's root,
    its ``retry_history`` the whole chain; its ``fail_reason`` is not inherited (it did not fail).
    """

    def __init__(self, max_retry: int, *, interrupted: bool = False) -> None:
        if max_retry < 0:
            raise ValueError(f"max_retry must be >= 0, but got {max_retry=}.")
        self.max_retry, self.interrupted = max_retry, interrupted

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.enqueue(study, trial)

    def enqueue(self, study: optuna.Study, trial: FrozenTrial) -> FrozenTrial | None:
        """The retry's frozen row as enqueued, or None when the trial has used up its retries."""
        history = [*retry_history(trial.system_attrs), trial.number]
        crashes = int(trial.system_attrs.get(attrs.CRASHES, 0)) + (0 if self.interrupted else 1)
        if crashes > self.max_retry:
            log.warning("trial %d failed and is not retried: %d crashes, max_retry=%d", trial.number, crashes,
                        self.max_retry)
            return None
        system = {**trial.system_attrs, attrs.FAILED_TRIAL: history[0], attrs.RETRY_HISTORY: history,
                  attrs.CRASHES: crashes}
        user = {k: v for k, v in trial.user_attrs.items() if k != attrs.FAIL_REASON}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = optuna.trial.create_trial(state=TrialState.WAITING, params=trial.params,
                                              distributions=trial.distributions, user_attrs=user,
                                              system_attrs=system, intermediate_values=trial.intermediate_values)
        study.add_trial(retry)
        log.warning("trial %d %s; re-enqueued (retry %d of its chain, crashes %d/%d)", trial.number,
                    "interrupted" if self.interrupted else "failed", len(history), crashes, self.max_retry)
        return retry


__all__ = ["Retry", "replaced_numbers", "resumes_from", "retry_history"]
