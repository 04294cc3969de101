"""Replay workers: the service's real path with recorded curves in place of training, to measure coordination.

A replay worker runs ``search.execution.worker``'s own loop: it claims trials under the study lock (or lets the
scheduler create the next one), asks the study's sampler for parameters, sends heartbeats, records the
trial's config and loss history as user attributes, reports each evaluation, asks the pruner, writes its
checkpoint to the artifact store in the two alternating slots a real trial uses, and ends the trial the way a
real one ends (``record_outcome``). A retry of a killed replay trial resumes from the dead trial's last
checkpoint artifact, as a real retry does. The only difference: instead of training, each evaluation sleeps
``trial_seconds / evaluations / compress`` and takes its value from the recorded curve nearest to the
trial's parameters (``Curves``), e.g. the MNIST search benchmark's 137 trials in
``benchmarks/results/search-mnist-2026-11-26.json``.

Nothing here imports torch (``tests/search/execution/test_replay.py`` checks it), so 256 of them fit on a small
machine. ``benchmarks/scale/cluster.py`` runs them as threads (``search.execution.launch.replay_workers``), each with its own
storage client (engine, connections, ``Study`` and sampler objects): the database sees 256 independent clients,
as it would from 256 machines. What threads do not reproduce is CPU: samplers of one process share its
interpreter lock, so the sampler's compute is serialised within a process (the benchmark spreads threads over
processes and reports the ask time separately).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.trial import TrialState

from search import attrs
from search._optuna import contains
from search.spec.study_file import Param, StudySpec, apply_params, suggest_values
from search.store.retry import replaced_numbers, resumes_from

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Curve:
    params: dict[str, Any]
    points: tuple[tuple[float, float], ...]  # (fraction of the trial's budget, objective value), in order


class Curves:
    """Recorded objective curves, looked up by the nearest parameters (each searched value scaled to [0, 1],
    log-scaled where the space is; a differing categorical counts 1)."""

    def __init__(self, curves: list[Curve]) -> None:
        if not curves:
            raise ValueError("Curves needs at least one recorded curve, but got none.")
        self.curves = curves

    @classmethod
    def load(cls, path: str | Path) -> Curves:
        """Read a search benchmark's results (``{"results": {arm: {"trials": [{"params", "curve"}]}}}``) or a JSON
        list of ``{"params": {...}, "curve": {"images": value, ...}}``."""
        raw = json.loads(Path(path).read_text())
        rows = raw if isinstance(raw, list) else [t for arm in raw["results"].values() for t in arm.get("trials", [])]
        # fractions of the trial budget (the row's config says it; else the longest recording): a pruned trial's
        # curve stops before 1.0
        longest = max((int(k) for row in rows for k in (row.get("curve") or {})), default=1)
        curves = []
        for row in rows:
            marks = sorted((int(k), float(v)) for k, v in (row.get("curve") or {}).items() if v is not None
                           and math.isfinite(float(v)))
            if marks:
                budget = int((row.get("config") or {}).get("budget_images") or longest)
                curves.append(Curve(dict(row["params"]), tuple((m / budget, v) for m, v in marks)))
        return cls(curves)

    def nearest(self, params: dict[str, Any], space: tuple[Param, ...]) -> Curve:
        return min(self.curves, key=lambda c: self._distance(params, c.params, space))

    def predict(self, params: dict[str, Any], space: tuple[Param, ...], fraction: float, k: int = 5,
                exclude: Curve | None = None) -> float:
        """A surrogate: the inverse-distance-weighted mean of the ``k`` nearest recorded curves that reach
        ``fraction`` (each read as ``value_at``), in the log of the objective (FID spans orders of magnitude)."""
        ranked = sorted(((self._distance(params, c.params, space), c) for c in self.curves
                         if c is not exclude and c.points[-1][0] >= fraction - 1e-9), key=lambda x: x[0])[:k]
        if not ranked:
            ranked = [(0.0, self.nearest(params, space))]
        weights = [1.0 / (d + 1e-3) for d, _ in ranked]
        logs = [math.log(max(self.value_at(c, fraction), 1e-9)) for _, c in ranked]
        return math.exp(sum(w * v for w, v in zip(weights, logs, strict=True)) / sum(weights))

    @staticmethod
    def _distance(a: dict[str, Any], b: dict[str, Any], space: tuple[Param, ...]) -> float:
        total = 0.0
        for p in space:
            x, y = a.get(p.name), b.get(p.name)
            if p.type == "categorical" or x is None or y is None:
                total += 0.0 if x == y else 1.0
                continue
            lo, hi, fx, fy = float(p.low or 0), float(p.high or 0), float(x), float(y)
            if p.log:
                lo, hi, fx, fy = (math.log(max(v, 1e-300)) for v in (lo, hi, fx, fy))
            total += ((fx - fy) / (hi - lo)) ** 2 if hi > lo else 0.0
        return math.sqrt(total)

    def value_at(self, curve: Curve, fraction: float) -> float:
        """The curve's value at ``fraction`` of the budget: the last recorded point at or before it (a pruned
        recording holds its last value)."""
        value = curve.points[0][1]
        for f, v in curve.points:
            if f <= fraction + 1e-9:
                value = v
        return value


@dataclass(frozen=True)
class Replay:
    """What a replay worker replays: the recorded curves, a trial's nominal duration and how much to compress it."""

    curves: Curves
    trial_seconds: float = 60.0  # a whole trial's duration, uncompressed
    compress: float = 1.0  # sleep trial_seconds / compress in all

    def __post_init__(self) -> None:
        if self.trial_seconds < 0 or self.compress <= 0:
            raise ValueError(f"trial_seconds must be >= 0 and compress > 0, but got {self.trial_seconds=}, "
                             f"{self.compress=}.")


class ReplayRunner:
    """Stands in for ``search.execution.trial.TrialRunner``: one claimed trial, replayed (no torch)."""

    def __init__(self, spec: StudySpec, store: Any, replay: Replay) -> None:
        self.spec, self.store, self.curves = spec, store, replay.curves
        self.trial_seconds, self.compress = replay.trial_seconds, replay.compress
        self.device = f"replay@{socket.gethostname()}:{os.getpid()}"  # where it ran: which process to kill in tests

    def __call__(self, trial: optuna.Trial) -> list[float]:
        spec, store = self.spec, self.store
        start = time.perf_counter()
        values = suggest_values(trial, spec)
        cfg = apply_params(spec.train, values)
        trial.set_user_attr(attrs.CONFIG, cfg.to_dict())
        trial.set_user_attr(attrs.SEED, cfg.seed)
        trial.set_user_attr(attrs.DEVICE, self.device)
        curve = self.curves.nearest(dict(trial.params), spec.space)
        frozen = trial.study.get_trials(deepcopy=False)[trial.number]
        reported = set(frozen.intermediate_values)
        done_marks = self._resume(trial, resumes_from(frozen.system_attrs))
        slots = [f"checkpoint-{uuid.uuid4().hex}" for _ in range(2)]
        inherited = trial.user_attrs.get(attrs.CHECKPOINT_SLOTS, [])
        trial.set_user_attr(attrs.CHECKPOINT_SLOTS, slots)
        budget, every = cfg.budget_images, cfg.eval_every_images
        marks = [min(i * every, budget) for i in range(1, math.ceil(budget / every) + 1)]
        pause = self.trial_seconds / len(marks) / self.compress
        losses: list[dict[str, float]] = list(trial.user_attrs.get(attrs.LOSSES, []))
        best = math.inf if spec.direction == "minimize" else -math.inf
        value = math.nan
        try:
            for index, mark in enumerate(marks, start=1):
                value = self.curves.value_at(curve, mark / budget)
                better = value < best if spec.direction == "minimize" else value > best
                best = value if better else best
                if mark <= done_marks:
                    continue  # a retry skips what the dead trial's checkpoint already holds
                time.sleep(pause)
                losses = [h for h in losses if h["mark"] < mark] + [{"mark": mark, "d_loss": 1.0, "g_loss": 1.0,
                                                                     spec.objective: value}]
                trial.set_user_attr(attrs.LOSSES, losses)
                trial.set_user_attr(attrs.IMAGES_SEEN, mark)
                final = mark == budget
                if not final:  # what a retry resumes from, in the slot a real trial would write
                    slot = slots[index % 2]
                    store.write(slot, _bytes({"mark": mark}))
                    trial.set_user_attr(attrs.CHECKPOINT, slot)
                if mark not in reported:
                    trial.report(best if spec.pruner["report"] == "best" else value, mark)
                    reported.add(mark)
                if not final and attrs.CONFIRM not in trial.user_attrs and trial.should_prune():
                    reason = f"{spec.pruner['name']} pruner: {spec.objective}={value:.4g} at {mark} images"
                    trial.set_user_attr(attrs.PRUNE_REASON, reason)
                    raise optuna.TrialPruned(reason)
        finally:
            trial.set_user_attr(attrs.WALL_SECONDS, round(time.perf_counter() - start, 3))
            trial.set_user_attr(attrs.FINAL_VALUE, value)
            for artifact in (*slots, *inherited):
                try:
                    store.remove(artifact)
                except ArtifactNotFound:
                    pass
        return [value]

    def _resume(self, trial: optuna.Trial, failed: int | None) -> int:
        """The mark the dead trial's last checkpoint artifact holds (0: from the start), as a real retry reads it."""
        if failed is None:
            return 0
        dead = trial.study.get_trials(deepcopy=False)[failed]
        artifact = dead.user_attrs.get(attrs.CHECKPOINT)
        if artifact is None:
            return 0
        try:
            with self.store.open_reader(artifact) as fh:
                mark = int(json.loads(fh.read())["mark"])
        except (ArtifactNotFound, ValueError, KeyError) as exc:
            log.warning("trial %d: the checkpoint of trial %d is unreadable (%s); replaying from the start",
                        trial.number, failed, type(exc).__name__)
            return 0
        trial.set_user_attr(attrs.RESUMED_FROM, failed)
        return mark


class RecordedProposals(optuna.samplers.BaseSampler):
    """Proposals that cost no CPU: trial n takes the parameters of recorded trial n (mod their number).

    For measuring coordination at cluster scale apart from the sampler's own compute: a cluster's workers each run
    their sampler on their own machine, while one host running 256 replay workers would have to supply 256
    samplers' CPU (TPE with constant liar reads every running trial). The trial still goes through the real
    claim, suggest, heartbeat, report, prune and record path. In a study file (a plug-in by import path)::

        sampler: {name: "search.execution.replay:recorded_proposals", args: {curves: results.json}}
    """

    def __init__(self, curves: str | Path) -> None:
        self.proposals = _recorded_params(str(curves))

    def infer_relative_search_space(self, study: optuna.Study, trial: Any) -> dict[str, Any]:
        return {}

    def sample_relative(self, study: optuna.Study, trial: Any, search_space: dict[str, Any]) -> dict[str, Any]:
        return {}

    def sample_independent(self, study: optuna.Study, trial: Any, param_name: str,
                           param_distribution: optuna.distributions.BaseDistribution) -> Any:
        value = self.proposals[trial.number % len(self.proposals)].get(param_name)
        dist = param_distribution
        if value is not None and contains(dist, value):
            return value
        if isinstance(dist, optuna.distributions.CategoricalDistribution):
            return dist.choices[trial.number % len(dist.choices)]
        return dist.low  # type: ignore[attr-defined]  # (float and int distributions)


@functools.lru_cache(maxsize=8)
def _recorded_params(path: str) -> tuple[dict[str, Any], ...]:
    """The recorded trials' parameters, read once per process (every trial builds its sampler afresh)."""
    return tuple(c.params for c in Curves.load(path).curves)


def recorded_proposals(spec: StudySpec, kwargs: dict[str, Any]) -> RecordedProposals:
    """The sampler factory a study file names (``args: {curves: PATH}``; a ``seed`` is ignored)."""
    if "curves" not in kwargs:
        raise ValueError("sampler.args.curves must name a recorded-curves JSON file for recorded_proposals.")
    return RecordedProposals(kwargs["curves"])


def _bytes(data: dict[str, Any]) -> Any:
    import io

    return io.BytesIO(json.dumps(data).encode())


def lost_and_duplicated(study: optuna.Study) -> dict[str, int]:
    """What a run must never leave: RUNNING or WAITING rows, planned trials that never ended, one slot run twice.

    ``lost``: search trials (retries replace the failed trial they retry) that did not end COMPLETE or PRUNED;
    ``duplicated``: search trials beyond the plan, or two ended trials that are one retry chain (surplus rows of
    lock-free claims, failed before they ran anything, are not trials).
    """
    trials = study.get_trials(deepcopy=False)
    retried = replaced_numbers(trials)
    ended = [t for t in trials if t.number not in retried and attrs.CONFIRM not in t.user_attrs
             and not t.system_attrs.get(attrs.SURPLUS)]
    chains = [t.system_attrs.get(attrs.FAILED_TRIAL) for t in ended if t.system_attrs.get(attrs.FAILED_TRIAL)]
    target = int(study.user_attrs.get(attrs.N_TRIALS, 0))
    good = sum(1 for t in ended if t.state in (TrialState.COMPLETE, TrialState.PRUNED))
    return {"trials": len(trials), "ended": good, "running": sum(t.state == TrialState.RUNNING for t in trials),
            "waiting": sum(t.state == TrialState.WAITING for t in trials),
            "lost": max(0, target - good), "duplicated": max(0, len(ended) - target) + len(chains) - len(set(chains))}


__all__ = ["Curve", "Curves", "RecordedProposals", "Replay", "ReplayRunner", "lost_and_duplicated", "recorded_proposals"]
