"""Warm start from a finished study: ``warm_start: [{study: NAME, storage: URL, top: K}]``.

Users tune families of GANs on new data, and their last study is the best prior they have. Before this study is
created, each reference is replaced by the source study's K best configs (complete search trials, not seed
confirmations, in the order of the one ranking rule the caller passes: ``search.results.selection.ranked``, so a
trial that misses its constraints never goes before one that holds them), each fitted to this study's space:
keys this space does not search are dropped, numbers are clipped into its ranges and onto its ``step`` grid (ints
rounded), categorical values it does not allow are dropped, and a config that keeps no key, or that the trainer
would refuse, is skipped.
Each fitted config says where it came from (``from: study NAME trial N``) and what was changed, in one log line.
An unknown study, or a storage without it, is a one-line ``SpecError`` before anything is written.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from search.errors import SpecError
from search.spec.study_file import Param, StudySpec, WarmFrom, apply_params
from search.store.storage import load_study, make_storage, redact
from trainer.errors import ConfigError, GanSearchError

log = logging.getLogger(__name__)


Ranking = Callable[[optuna.Study], list[FrozenTrial]]


def resolve(spec: StudySpec, ranked: Ranking) -> StudySpec:
    """``spec`` with every study reference in its ``warm_start`` replaced by that study's fitted configs, taken in
    the order ``ranked`` gives the source study's search trials (best first)."""
    if not spec.warm_from:
        return spec
    refs = dict(spec.warm_from)
    entries: list[Any] = []
    for index, entry in enumerate(spec.raw.get("warm_start", [])):
        entries += _configs(spec, index, refs[index], ranked) if index in refs else [entry]
    return spec.with_warm_start(entries)


def _configs(spec: StudySpec, index: int, ref: WarmFrom, ranked: Ranking) -> list[dict[str, Any]]:
    key = f"warm_start[{index}]"
    url = ref.storage or spec.storage
    try:
        source = load_study(ref.study, make_storage(url))
    except GanSearchError as exc:  # no such study there, no database file, a bad URL: one line, nothing written
        raise SpecError(f"study {spec.name}: {key}.study: cannot read study {ref.study!r} from {redact(url)}: "
                        f"{str(exc).splitlines()[0]}") from None
    fitted: list[dict[str, Any]] = []
    seen: set[str] = set()
    for trial in ranked(source):
        values, notes = fit(trial.params, spec.space)
        try:
            apply_params(spec.train, values)
        except ConfigError as exc:
            notes.append(f"skipped: {exc}")
            values = {}
        if not values:
            log.warning("%s: study %s trial %d not used (%s)", key, ref.study, trial.number, "; ".join(notes) or "no key")
            continue
        if repr(sorted(values.items())) in seen:
            continue
        seen.add(repr(sorted(values.items())))
        if notes:
            log.warning("%s: study %s trial %d: %s", key, ref.study, trial.number, "; ".join(notes))
        fitted.append({"from": f"study {ref.study} trial {trial.number}", **values})
        if len(fitted) == ref.top:
            break
    if not fitted:
        raise SpecError(f"study {spec.name}: {key}.study: study {ref.study!r} has no complete trial whose parameters "
                        "fit this study's space.")
    log.info("%s: %d configs of study %s (%s)", key, len(fitted), ref.study, redact(url))
    return fitted


def fit(params: dict[str, Any], space: tuple[Param, ...]) -> tuple[dict[str, Any], list[str]]:
    """``params`` of another study fitted to ``space``: the values kept (clipped where needed) and notes on what
    was dropped or changed."""
    by_name = {p.name: p for p in space}
    values: dict[str, Any] = {}
    dropped: list[str] = []
    notes: list[str] = []
    for name, value in params.items():
        p = by_name.get(name)
        if p is None:
            dropped.append(name)
            continue
        if p.type == "categorical":
            if value in p.choices:
                values[name] = value
            else:
                notes.append(f"dropped {name}={value!r} (not among {list(p.choices)})")
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            notes.append(f"dropped {name}={value!r} (not a number)")
            continue
        low, high = float(p.low or 0), float(p.high or 0)
        clipped: float | int = min(max(float(value), low), high)
        if p.step:  # onto the grid low, low + step, ... (never past high)
            steps = math.floor((high - low) / p.step + 1e-9)
            clipped = low + min(max(round((clipped - low) / p.step), 0), steps) * p.step
            clipped = round(clipped, 12)
        if p.type == "int":
            clipped = int(round(clipped))
        values[name] = clipped
        if clipped != value:
            notes.append(f"clipped {name} {value:g} -> {clipped:g}")
    if dropped:
        notes.insert(0, f"dropped {', '.join(sorted(dropped))} (not searched here)")
    return values, notes


__all__ = ["fit", "resolve"]
