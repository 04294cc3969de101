"""Warm start from a finished study: ``warm_start: [{study: NAME, storage: URL, top: K}]``.

Users tune families of GANs on new data, and their last study is the best prior they have. Before this study is
created, each reference is replaced by the source study's K best configs (complete search trials, not seed
confirmations; by its objective, the Pareto front first where it had several), each fitted to this study's space:
keys this space does not search are dropped, numbers are clipped into its ranges (ints rounded), categorical
values it does not allow are dropped, and a config that keeps no key, or that the trainer would refuse, is skipped.
Each fitted config says where it came from (``from: study NAME trial N``) and what was changed, in one log line.
An unknown study, or a storage without it, is a one-line ``SpecError`` before anything is written.
"""

from __future__ import annotations

import logging
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from search import attrs
from search.errors import SpecError
from search.spec.study_file import Param, StudySpec, WarmFrom, apply_params
from search.store.storage import load_study, make_storage, redact
from trainer.errors import ConfigError, GanSearchError

log = logging.getLogger(__name__)


def resolve(spec: StudySpec) -> StudySpec:
    """``spec`` with every study reference in its ``warm_start`` replaced by that study's fitted configs."""
    if not spec.warm_from:
        return spec
    refs = dict(spec.warm_from)
    entries: list[Any] = []
    for index, entry in enumerate(spec.raw.get("warm_start", [])):
        entries += _configs(spec, index, refs[index]) if index in refs else [entry]
    return spec.with_warm_start(entries)


def _configs(spec: StudySpec, index: int, ref: WarmFrom) -> list[dict[str, Any]]:
    key = f"warm_start[{index}]"
    url = ref.storage or spec.storage
    try:
        source = load_study(ref.study, make_storage(url))
    except GanSearchError as exc:  # no such study there, no database file, a bad URL: one line, nothing written
        raise SpecError(f"study {spec.name}: {key}.study: cannot read study {ref.study!r} from {redact(url)}: "
                        f"{str(exc).splitlines()[0]}") from None
    fitted: list[dict[str, Any]] = []
    seen: set[str] = set()
    for trial in _best_first(source):
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


def _best_first(study: optuna.Study) -> list[FrozenTrial]:
    """Complete search trials, best first: by the objective, or the Pareto front first (then by the first objective)."""
    trials = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
              if attrs.CONFIRM not in t.user_attrs and t.values]
    signs = [1.0 if d == optuna.study.StudyDirection.MINIMIZE else -1.0 for d in study.directions]
    front = {t.number for t in study.best_trials} if len(signs) > 1 else set()
    return sorted(trials, key=lambda t: (t.number not in front, signs[0] * t.values[0], t.number))


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
        if p.type == "int":
            clipped = int(round(clipped))
        values[name] = clipped
        if clipped != value:
            notes.append(f"clipped {name} {value:g} -> {clipped:g}")
    if dropped:
        notes.insert(0, f"dropped {', '.join(sorted(dropped))} (not searched here)")
    return values, notes


__all__ = ["fit", "resolve"]
