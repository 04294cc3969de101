"""The samplers a study file may name (registered in ``SAMPLERS``), and the per-trial seeding that keeps K
workers from proposing the same parameters."""

from __future__ import annotations

from typing import Any

import numpy as np
import optuna

from search.registries import SAMPLERS
from search.spec.study_file import StudySpec


# ---------------------------------------------------------------- samplers: (spec, kwargs) -> BaseSampler
@SAMPLERS.register("tpe")
def _tpe(spec: StudySpec, kwargs: dict[str, Any]) -> optuna.samplers.BaseSampler:
    return optuna.samplers.TPESampler(**{"constant_liar": True, **kwargs})


@SAMPLERS.register("nsgaii")
def _nsgaii(spec: StudySpec, kwargs: dict[str, Any]) -> optuna.samplers.BaseSampler:
    return optuna.samplers.NSGAIISampler(**kwargs)


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
PER_TRIAL_SEED = ("tpe", "random", "cmaes", "gp", "nsgaii")


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
