"""Defaults that depend on how many workers run a study at once, set from the simulation (benchmarks/simulate.py,
BENCHMARKS.md "The search at scale") and applied only where the study file leaves them unset.

With N workers, the first N trials are proposed before any has ended. TPE's startup (random) trials and the
pruner's startup trials are counted in ended trials, so with one worker's values a 256-worker study runs TPE
on a handful of results, every running trial lied about as the worst, and prunes against the median of a few
curves. ``for_workers`` scales both with N, and PBT's population (when the file sets none) so that a
generation runs in one wave.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from search.spec import StudySpec

log = logging.getLogger(__name__)

STARTUP_PER_WORKER = 1.0  # TPE's random startup trials: at least this many per worker
PRUNER_STARTUP_PER_WORKER = 0.25  # the median/percentile pruner's startup trials: at least this many per worker
POPULATION_PER_WORKER = 1.0  # PBT's population: at least this many members per worker (a generation in one wave)
SCALED_PRUNERS = ("median", "percentile")


def for_workers(spec: StudySpec, workers: int) -> StudySpec:
    """``spec`` with the worker-dependent defaults for ``workers`` concurrent workers where its file sets none."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, but got {workers=}.")
    sampler, pruner = dict(spec.sampler), dict(spec.pruner)
    s_args: dict[str, Any] = dict(sampler.get("args", {}))
    p_args: dict[str, Any] = dict(pruner.get("args", {}))
    if sampler["name"] == "tpe" and "n_startup_trials" not in s_args:
        s_args["n_startup_trials"] = max(10, round(STARTUP_PER_WORKER * workers))  # 10: Optuna's own default
    if pruner["name"] in SCALED_PRUNERS and "n_startup_trials" not in p_args:
        p_args["n_startup_trials"] = max(5, round(PRUNER_STARTUP_PER_WORKER * workers))  # 5: Optuna's own default
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
