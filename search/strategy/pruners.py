"""The pruners a study file may name (registered in ``PRUNERS``), and the loss-curve guard (a GAN-aware Optuna
pruner) that wraps the chosen one."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.pruners import BasePruner
from optuna.trial import FrozenTrial

from search import attrs
from search.registries import PRUNERS
from search.spec.study_file import Guard, StudySpec
from search.store.storage import FinishedTrials, rdb_backend


def guard_reason(history: Sequence[dict[str, float]], guard: Guard) -> str | None:
    """Why a loss curve looks hopeless (NaN/inf, divergence, discriminator collapse), or None."""
    if not guard.enabled or not history:
        return None
    last = history[-1]
    for key in ("d_loss", "g_loss"):
        if not math.isfinite(last[key]):
            return f"guard: {key} is {last[key]} at {last['mark']} images"
        if abs(last[key]) > guard.max_loss:
            return f"guard: {key}={last[key]:.4g} above max_loss={guard.max_loss:g} at {last['mark']} images"
    k = guard.grow_evals
    if k and len(history) > k:
        tail = [h["g_loss"] for h in history[-(k + 1):]]
        if all(b > a for a, b in zip(tail, tail[1:], strict=False)) and tail[-1] > 2 * abs(tail[0]) + 1e-8:
            return f"guard: g_loss grew for {k} evaluations ({tail[0]:.4g} -> {tail[-1]:.4g}) at {last['mark']} images"
    k = guard.collapse_evals
    if k and len(history) >= k and all(abs(h["d_loss"]) < guard.collapse_loss for h in history[-k:]):
        return f"guard: discriminator collapse (d_loss < {guard.collapse_loss:g} for {k} evaluations)"
    return None


class LossGuardPruner(BasePruner):
    """Prunes on the trial's loss curve (stored as a user attribute), then asks the wrapped pruner."""

    def __init__(self, guard: Guard, wrapped: BasePruner | None = None) -> None:
        self.guard = guard
        self.wrapped = wrapped
        self._finished: FinishedTrials | None = None  # the study's finished trials, each loaded once

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        if guard_reason(trial.user_attrs.get(attrs.LOSSES, []), self.guard) is not None:
            return True
        if self.wrapped is None:
            return False
        if isinstance(self.wrapped, optuna.pruners.PercentilePruner):  # (the median pruner too) reads COMPLETE only
            rdb = rdb_backend(study)
            if rdb is not None:
                if self._finished is None or not self._finished.reads(study):
                    self._finished = FinishedTrials(study, rdb)
                return self.wrapped.prune(self._finished, trial)  # type: ignore[arg-type]
        return self.wrapped.prune(study, trial)


# ---------------------------------------------------------------- pruners: (spec, args) -> BasePruner
@PRUNERS.register("median")
def _median(spec: StudySpec, args: dict[str, Any]) -> BasePruner:
    return optuna.pruners.MedianPruner(**args)


@PRUNERS.register("percentile")
def _percentile(spec: StudySpec, args: dict[str, Any]) -> BasePruner:
    return optuna.pruners.PercentilePruner(**{"percentile": 50.0, **args})


@PRUNERS.register("successive_halving")
def _successive_halving(spec: StudySpec, args: dict[str, Any]) -> BasePruner:
    return optuna.pruners.SuccessiveHalvingPruner(**args)


@PRUNERS.register("hyperband")
def _hyperband(spec: StudySpec, args: dict[str, Any]) -> BasePruner:
    return optuna.pruners.HyperbandPruner(**{"min_resource": spec.train.eval_every_images,
                                             "max_resource": spec.train.budget_images, **args})


@PRUNERS.register("threshold")
def _threshold(spec: StudySpec, args: dict[str, Any]) -> BasePruner:
    return optuna.pruners.ThresholdPruner(**args)


@PRUNERS.register("wilcoxon")
def _wilcoxon(spec: StudySpec, args: dict[str, Any]) -> BasePruner:
    """A paired test of the trial's curve against the best trial's at the same image counts."""
    return optuna.pruners.WilcoxonPruner(**args)


@PRUNERS.register("none")
def _nop(spec: StudySpec, args: dict[str, Any]) -> BasePruner:
    return optuna.pruners.NopPruner(**args)


def build_pruner(spec: StudySpec) -> LossGuardPruner:
    """The study's pruner (optionally patient), wrapped by the loss-curve guard."""
    inner = PRUNERS.get(spec.pruner["name"])(spec, dict(spec.pruner.get("args", {})))
    if not isinstance(inner, BasePruner):
        raise TypeError(f"pruner {spec.pruner['name']!r} returned {type(inner).__name__}, not an Optuna pruner")
    if spec.pruner.get("patience"):
        inner = optuna.pruners.PatientPruner(inner, patience=spec.pruner["patience"])
    return LossGuardPruner(spec.guard, inner)
