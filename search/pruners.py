"""The loss-curve guard (a GAN-aware Optuna pruner) composed with the metric pruner; sampler/pruner factories."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
from optuna.pruners import BasePruner
from optuna.trial import FrozenTrial

from search import attrs
from search.registries import PRUNERS, SAMPLERS
from search.spec import Guard, StudySpec


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

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        if guard_reason(trial.user_attrs.get(attrs.LOSSES, []), self.guard) is not None:
            return True
        return self.wrapped.prune(study, trial) if self.wrapped is not None else False


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


# ---------------------------------------------------------------- samplers: (spec, kwargs) -> BaseSampler
@SAMPLERS.register("tpe")
def _tpe(spec: StudySpec, kwargs: dict[str, Any]) -> optuna.samplers.BaseSampler:
    return optuna.samplers.TPESampler(**{"constant_liar": True, **kwargs})


@SAMPLERS.register("random")
def _random(spec: StudySpec, kwargs: dict[str, Any]) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(**kwargs)


@SAMPLERS.register("cmaes")
def _cmaes(spec: StudySpec, kwargs: dict[str, Any]) -> optuna.samplers.BaseSampler:
    return optuna.samplers.CmaEsSampler(**kwargs)


@SAMPLERS.register("gp")
def _gp(spec: StudySpec, kwargs: dict[str, Any]) -> optuna.samplers.BaseSampler:
    return optuna.samplers.GPSampler(**kwargs)


@SAMPLERS.register("qmc")
def _qmc(spec: StudySpec, kwargs: dict[str, Any]) -> optuna.samplers.BaseSampler:
    return optuna.samplers.QMCSampler(**kwargs)


@SAMPLERS.register("grid")
def _grid(spec: StudySpec, kwargs: dict[str, Any]) -> optuna.samplers.BaseSampler:
    return optuna.samplers.GridSampler({p.name: list(p.choices) for p in spec.space}, **kwargs)


# Samplers whose random stream is drawn afresh for each trial (see build_sampler). QMC keeps one seed: its
# scrambled sequence is indexed by trial; grid keeps one seed: it already skips points that run elsewhere.
PER_TRIAL_SEED = ("tpe", "random", "cmaes", "gp")


def trial_seed(seed: int, number: int) -> int:
    """The sampler seed of trial ``number`` in a study seeded with ``seed`` (independent streams per trial)."""
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


def build_sampler(spec: StudySpec, trial_number: int | None = None) -> optuna.samplers.BaseSampler:
    """The study's sampler; with ``trial_number``, the sampler that proposes that trial's parameters.

    Every worker builds its own sampler. Seeded with the study's seed alone, K workers would draw the same
    random numbers and propose the same parameters K times; seeded with (study seed, trial number), each
    trial gets its own stream, whichever worker runs it, and a one-worker study stays reproducible. TPE's
    ``constant_liar`` (on by default) also keeps running trials' parameters from being proposed again.
    """
    name, args = spec.sampler["name"], dict(spec.sampler.get("args", {}))
    seed = spec.sampler.get("seed")
    if seed is not None and trial_number is not None and name in PER_TRIAL_SEED:
        seed = trial_seed(int(seed), trial_number)
    sampler = SAMPLERS.get(name)(spec, {"seed": seed, **args} if seed is not None else args)
    if not isinstance(sampler, optuna.samplers.BaseSampler):
        raise TypeError(f"sampler {name!r} returned {type(sampler).__name__}, not an Optuna sampler")
    return sampler
