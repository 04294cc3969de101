"""Defaults that depend on how many workers run a study at once, set from the simulation (benchmarks/scale/simulate.py,
BENCHMARKS.md "The search at scale") and applied only where the study file leaves them unset.

With N workers, the first N trials are proposed before any has ended. TPE's startup (random) trials and the
pruner's startup trials count ended trials; ``for_workers`` grows both slowly with N (the simulation showed that
growing them in proportion to N turns a 256-worker study into random search), and PBT's population (when the
file sets none) to N, so that a generation runs in one wave.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from search.spec.study_file import StudySpec

log = logging.getLogger(__name__)

# From benchmarks/scale/simulate.py (BENCHMARKS.md, "The search at scale"): one random startup trial per worker (256 at
# 256 workers) or 0.25 (64) never reached the target FID in 300 trials; 0.1 and 0.05 reached it in the second wave
# of trials at 64 and 256 workers, as the file's constant 6 did. TPE's constant liar already spreads concurrent
# trials, so the startup grows slowly with N: max(10, N/10).
STARTUP_PER_WORKER = 0.1  # TPE's random startup trials per worker (at least Optuna's default, 10)
PRUNER_STARTUP_PER_WORKER = 0.1  # the median/percentile pruner's startup trials per worker (at least 5)
POPULATION_PER_WORKER = 1.0  # PBT's population: at least this many members per worker (a generation in one wave)
SCALED_PRUNERS = ("median", "percentile")


def for_workers(spec: StudySpec, workers: int, startup_per_worker: float = STARTUP_PER_WORKER,
                pruner_startup_per_worker: float = PRUNER_STARTUP_PER_WORKER) -> StudySpec:
    """``spec`` with the worker-dependent defaults for ``workers`` concurrent workers where its file sets none
    (the rates are parameters for the simulation that chooses them)."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, but got {workers=}.")
    sampler, pruner = dict(spec.sampler), dict(spec.pruner)
    s_args: dict[str, Any] = dict(sampler.get("args", {}))
    p_args: dict[str, Any] = dict(pruner.get("args", {}))
    if sampler["name"] == "tpe" and "n_startup_trials" not in s_args:
        s_args["n_startup_trials"] = max(10, round(startup_per_worker * workers))  # 10: Optuna's own default
    if pruner["name"] in SCALED_PRUNERS and "n_startup_trials" not in p_args:
        p_args["n_startup_trials"] = max(5, round(pruner_startup_per_worker * workers))  # 5: Optuna's own default
    pbt, n_trials = spec.scheduler, spec.n_trials
    if pbt is not None and "population" not in spec.raw.get("scheduler", {}):
        population = max(pbt.population, round(POPULATION_PER_WORKER * workers))
        n_trials = n_trials // pbt.population * population  # population x generations
        pbt = dataclasses.replace(pbt, population=population)
    changed = (s_args != dict(spec.sampler.get("args", {}))) or (p_args != dict(spec.pruner.get("args", {}))) \
        or pbt != spec.scheduler
    if not changed:
        return spec
    log.info("defaults for %d workers: sampler %s, pruner %s, scheduler %s", workers, s_args, p_args, pbt)
    raw = {**spec.raw, "sampler": {**spec.raw.get("sampler", sampler), "args": s_args},
           "pruner": {**spec.raw.get("pruner", pruner), "args": p_args}}  # stored with the study: workers read it
    if pbt is not None:
        raw["scheduler"] = {**spec.raw.get("scheduler", {}), "population": pbt.population}
    return dataclasses.replace(spec, sampler={**sampler, "args": s_args}, pruner={**pruner, "args": p_args},
                               scheduler=pbt, n_trials=n_trials, raw=raw)


__all__ = ["for_workers"]
