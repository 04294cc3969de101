"""Promotion by continuation: asynchronous successive halving whose top rung is the production budget.

Rung 0 is ``budget.trial_images``; rungs 1.. are ``promotion.rungs`` (the last: the production budget). When a
worker finds nothing waiting, it looks for a promotion first (under the study lock, highest rung first, as ASHA's
``get_job`` does): a COMPLETE trial of rung r that ranks among the top ``floor(n / eta)`` of the n trials that
completed rung r, not promoted yet, gets a continuation: a WAITING trial with the same parameters and seed that
starts from the trial's final checkpoint (``attrs.RUNG_CHECKPOINT``) and trains on to rung r + 1. It inherits the
trial's intermediate values and loss history, so the dashboard and ``status`` show one curve across the rungs. Its
decision (rank, of how many, the cutoff value) is stored on it (``attrs.PROMOTION``). Continuations are not search
trials (they do not count towards ``n_trials``), are not pruned by the study's pruner (the rungs are the pruning),
and a continuation that dies is retried from its own checkpoint like any trial.

The study lock makes each decision once: two workers never promote the same trial. Optuna itself cannot resume a
trial (SuccessiveHalvingPruner's docstring); here a continuation is a new trial that resumes the old one's run.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from search import attrs
from search.spec.study_file import StudySpec

log = logging.getLogger(__name__)


def rung_of(trial: FrozenTrial | optuna.Trial) -> int:
    return int(trial.user_attrs.get(attrs.RUNG, 0))


def ladder(spec: StudySpec) -> list[int]:
    """Images of each rung: the trial budget, then ``promotion.rungs``."""
    assert spec.promotion is not None
    return [spec.train.budget_images, *spec.promotion.rungs]


def _better_first(spec: StudySpec, trials: list[FrozenTrial]) -> list[FrozenTrial]:
    sign = 1.0 if spec.direction == "minimize" else -1.0
    return sorted(trials, key=lambda t: (sign * float(t.value), t.number))  # type: ignore[arg-type]


def decide(study: optuna.Study, spec: StudySpec) -> FrozenTrial | None:
    """The continuation to run next, enqueued WAITING (under the study lock), or None when no trial is promotable."""
    assert spec.promotion is not None
    eta, top_rung = spec.promotion.eta, len(spec.promotion.rungs)
    trials = study.get_trials(deepcopy=False)
    promoted = {int(t.user_attrs[attrs.CONTINUES]) for t in trials if attrs.CONTINUES in t.user_attrs}
    # a retry copies its trial's user attributes, CONTINUES included: a chain counts once, by its parent's number
    complete = [t for t in trials if t.state == TrialState.COMPLETE and attrs.CONFIRM not in t.user_attrs
                and t.value is not None]
    for rung in reversed(range(top_rung)):
        at_rung = _better_first(spec, [t for t in complete if rung_of(t) == rung])
        top = len(at_rung) // eta
        for rank, t in enumerate(at_rung[:top], start=1):
            if t.number in promoted or not t.user_attrs.get(attrs.RUNG_CHECKPOINT):
                continue
            decision = {"rung": rung + 1, "rank": rank, "of": len(at_rung), "top": top, "value": t.value,
                        "cutoff": at_rung[top - 1].value}
            return _enqueue(study, t, decision)
    return None


def _enqueue(study: optuna.Study, parent: FrozenTrial, decision: dict[str, Any]) -> FrozenTrial:
    user = {k: v for k, v in parent.user_attrs.items() if k == attrs.LOSSES}  # one loss curve across the rungs
    user |= {attrs.RUNG: decision["rung"], attrs.CONTINUES: parent.number, attrs.PROMOTION: decision,
             attrs.SEED_OVERRIDE: parent.user_attrs.get(attrs.SEED)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        continuation = optuna.trial.create_trial(state=TrialState.WAITING, params=parent.params,
                                                 distributions=parent.distributions, user_attrs=user,
                                                 intermediate_values=parent.intermediate_values)
    study.add_trial(continuation)
    log.info("trial %d promoted to rung %d (rank %d of %d, top %d): it continues from its checkpoint",
             parent.number, decision["rung"], decision["rank"], decision["of"], decision["top"])
    return continuation


def describe(trial: FrozenTrial) -> str:
    if attrs.CONTINUES not in trial.user_attrs:
        return f"rung {rung_of(trial)}" if attrs.RUNG in trial.user_attrs else ""
    d = trial.user_attrs.get(attrs.PROMOTION) or {}
    return (f"rung {rung_of(trial)}: continues trial {trial.user_attrs[attrs.CONTINUES]} "
            f"(rank {d.get('rank')} of {d.get('of')})")


__all__ = ["decide", "describe", "ladder", "rung_of"]
