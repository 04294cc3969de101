"""Which trial is best: the one rule that ``status``, the progress line, the gallery and ``export`` share.

* Trials whose constraints hold (``constraints:`` in the study file) come before those that miss; among the
  latter, the smaller the total violation the better.
* One objective: by value, in the study's direction.
* Promotion by continuation: a trial of a higher rung (``attrs.RUNG``: it trained more images, up to the production
  budget) goes before every trial of a lower rung; the rule above orders each rung.
* Several objectives: by Pareto front (non-dominated sorting); within a front, nearest to the ideal point
  after each objective is scaled to [0, 1] over that front (the "knee": no objective is given up for a small
  gain in another). The first trial of the first front is the one exported.

Under promotion by continuation the export races the finalists (the trials of the top rung, already trained to
the production budget) on fresh seeds: a config gets another seed only while its mean is within one standard
error (of the difference of means, from the pooled seed noise) of the leader's (``still_racing``).

Seed confirmations (``export --confirm``) rank their configs by the same rule, on the means of their seeds, but
for one point, both in which configs they re-run (``candidates``) and in how the confirmed ones rank
(``export.confirmation_table``): those that miss their constraints come by Pareto front on (total violation,
objectives), not by violation alone, so that a near miss with a good objective goes before a config that only
misses less. A constraint measured at the trial budget predicts the production budget
weakly (on MNIST the rarest digit's share moves 6-8% with the seed at 192k images), the objective more strongly.

With ``constraints_at: export`` in the study file the sampler is not told the constraints (they are kept in a
user attribute, shown by ``status``, and ``ranked`` still puts the trials that hold them first), and the configs
confirmed are the best by the objectives alone: the constraints choose among them, judged on every seed.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from search import attrs
from search.errors import StudyError


def signs(study: optuna.Study) -> list[float]:
    """+1 for each minimised objective, -1 for each maximised one (smaller signed value is better)."""
    return [1.0 if d == optuna.study.StudyDirection.MINIMIZE else -1.0 for d in study.directions]


def primary(trial: FrozenTrial) -> float | None:
    """The trial's first objective (its value in a single-objective study)."""
    return float(trial.values[0]) if trial.values else None


def search_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Complete trials of the search itself (seed-confirmation trials excluded)."""
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if attrs.CONFIRM not in t.user_attrs and t.values is not None]


def violation(trial: FrozenTrial) -> float:
    """How far the trial misses its constraints at its end (0: every one holds, or the study has none); from
    Optuna's ``trial.constraints``, or with ``constraints_at: export`` from the user attribute kept instead."""
    misses = trial.constraints or trial.user_attrs.get(attrs.CONSTRAINT_MISSES) or {}
    return sum(math.inf if v is None else max(0.0, v) for v in misses.values())


def order(points: Sequence[Sequence[float]], sign: Sequence[float]) -> list[int]:
    """Indices of ``points`` (one value per objective) best first: by Pareto front, then nearest the ideal."""
    signed = [[s * v for s, v in zip(sign, p, strict=True)] for p in points]
    if len(sign) == 1:
        return sorted(range(len(points)), key=lambda i: (signed[i][0], i))
    n = len(points)  # fast non-dominated sort (Deb et al. 2002): each pair compared once
    beaten_by = [0] * n
    beats: list[list[int]] = [[] for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            if _dominates(signed[i], signed[j]):
                beats[i].append(j)
                beaten_by[j] += 1
            elif _dominates(signed[j], signed[i]):
                beats[j].append(i)
                beaten_by[i] += 1
    front, out = [i for i in range(n) if beaten_by[i] == 0], []
    while front:
        dims = range(len(sign))
        lows = [min(signed[i][k] for i in front) for k in dims]
        spans = [max(signed[i][k] for i in front) - lows[k] for k in dims]
        out += sorted(front, key=lambda i: (_from_ideal(signed[i], lows, spans), signed[i], i))
        following = []
        for i in front:
            for j in beats[i]:
                beaten_by[j] -= 1
                if beaten_by[j] == 0:
                    following.append(j)
        front = following
    return out


def _from_ideal(point: list[float], lows: list[float], spans: list[float]) -> float:
    """Distance of ``point`` from the front's ideal point (``lows``), each objective scaled by its span."""
    return math.hypot(*((v - low) / span if span > 0 else 0.0 for v, low, span in zip(point, lows, spans, strict=True)))


def _dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(x < y for x, y in zip(a, b, strict=True))


def _split(trials: list[FrozenTrial]) -> tuple[list[FrozenTrial], list[FrozenTrial]]:
    """(trials whose constraints hold, trials that miss some)."""
    return [t for t in trials if violation(t) == 0.0], [t for t in trials if violation(t) > 0.0]


def ranked(study: optuna.Study) -> list[FrozenTrial]:
    """The study's search trials, best first (feasible before infeasible; see the module's rule). Under promotion
    by continuation a trial of a higher rung (more images trained) goes before every trial of a lower one."""
    feasible, missing = _split(search_trials(study))
    out: list[FrozenTrial] = []
    for rung in sorted({_rung(t) for t in feasible}, reverse=True):
        group = [t for t in feasible if _rung(t) == rung]
        out += [group[i] for i in order([t.values for t in group], signs(study))]
    return out + sorted(missing, key=lambda t: (violation(t), t.number))


def _rung(trial: FrozenTrial) -> int:
    return int(trial.user_attrs.get(attrs.RUNG, 0))


def candidates(study: optuna.Study, constraints_at: str = "search") -> list[FrozenTrial]:
    """The configs to confirm at the production budget, best first: the feasible trials as ``ranked`` orders
    them, then the rest by Pareto front on (total violation, objectives), nearest the front's ideal first. With
    ``constraints_at: export`` by the objectives alone, as the same study without constraints would confirm them:
    the constraints are then judged on the confirmations only."""
    trials, sign = search_trials(study), signs(study)
    if constraints_at == "export":
        return [trials[i] for i in order([t.values for t in trials], sign)]
    feasible, missing = _split(trials)
    return ([feasible[i] for i in order([t.values for t in feasible], sign)]
            + [missing[i] for i in order([[violation(t), *t.values] for t in missing], [1.0, *sign])])


def seed_noise(runs: Mapping[int, Sequence[float]]) -> float | None:
    """The seed noise of one run's value: the pooled within-config standard deviation of ``runs`` (config ->
    values of its runs on different seeds), from the configs with two runs or more; None while none has two."""
    pooled = [(len(v) - 1, statistics.variance(v)) for v in runs.values() if len(v) >= 2]
    dof = sum(d for d, _ in pooled)
    return math.sqrt(sum(d * var for d, var in pooled) / dof) if dof else None


def still_racing(runs: Mapping[int, Sequence[float]], sign: float, noise: float | None, z: float = 1.0) -> list[int]:
    """The configs that can still beat the leader (the best mean; ``sign`` +1 minimises), the leader first: a config
    is dropped once its mean is worse than the leader's by more than ``z`` standard errors of the difference of the
    two means (``noise`` per run); with no noise measured yet, none is dropped."""
    means = {c: statistics.fmean(v) for c, v in runs.items() if v}
    if not means:
        return []
    leader = min(means, key=lambda c: (sign * means[c], c))
    alive = [leader]
    for c in sorted(means, key=lambda c: (sign * means[c], c)):
        if c == leader:
            continue
        gap = sign * (means[c] - means[leader])
        if noise is None or gap <= z * noise * math.sqrt(1 / len(runs[c]) + 1 / len(runs[leader])):
            alive.append(c)
    return alive


def best_trial(study: optuna.Study) -> FrozenTrial:
    trials = ranked(study)
    if not trials:
        raise StudyError(f"study {study.study_name!r} has no complete trial to export; run more trials first.")
    return trials[0]


__all__ = ["best_trial", "candidates", "order", "primary", "ranked", "search_trials", "seed_noise", "signs",
           "still_racing", "violation"]
