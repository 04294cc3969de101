"""Population-based training on the Optuna storage: segments as trials, exploit and explore, lineage, schedule.

A member advances in segments of ``interval_images``; each segment is one Optuna trial (so the dashboard,
``status``, heartbeats, retries and K workers all work as for any trial), enqueued with fixed parameters and
these user attributes (``attrs.PBT``): member, generation, parent member and parent trial (whose checkpoint
it starts from) and, after an exploit, the old and new values. Generation 0 starts from scratch (member m:
the study file's m-th warm start, else values drawn from the space; training seed ``train.seed + m``).

When the last segment of a generation completes, the worker that next finds nothing to claim (under the
study lock, so exactly once) ranks the generation: the bottom ``quantile`` copy the checkpoint of a random
top-``quantile`` member (exploit) and take its values, each multiplied by a factor from ``perturb`` or, with
``resample_probability``, drawn afresh (explore); the others continue from their own checkpoint. Decisions
are drawn from a generator seeded with (sampler seed, generation): a study replays the same decisions.

The export follows the best segment's lineage back to generation 0: its values per segment become
piecewise-constant schedules in ``config.yaml`` (``TrainConfig.schedules``), which ``gan-search train``
replays from scratch with the lineage's training seed.
"""

from __future__ import annotations

import logging
import math
import uuid
from typing import Any

import numpy as np
import optuna
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.trial import FrozenTrial, TrialState

from search import attrs
from search.spec.study_file import Param, Pbt, StudySpec
from trainer import TrainConfig

log = logging.getLogger(__name__)


def segment_of(trial: optuna.Trial | FrozenTrial) -> dict[str, Any] | None:
    value = trial.user_attrs.get(attrs.PBT)
    return dict(value) if isinstance(value, dict) else None


def generations(spec: StudySpec) -> int:
    assert spec.scheduler is not None
    return spec.train.budget_images // spec.scheduler.interval_images


def plan_population(study: optuna.Study, spec: StudySpec) -> int:
    """Enqueue generation 0 (once): ``population`` members; returns how many were enqueued now."""
    assert spec.scheduler is not None
    present = {s["member"] for t in study.get_trials(deepcopy=False) if (s := segment_of(t)) and s["generation"] == 0}
    added = 0
    for m in range(spec.scheduler.population):
        if m in present:
            continue
        rng = np.random.default_rng([int(spec.sampler.get("seed") or 0), 0, m])
        params = dict(spec.warm_start[m]) if m < len(spec.warm_start) else {p.name: _draw(p, rng) for p in spec.space}
        decision = {"member": m, "generation": 0, "parent_member": None, "parent_trial": None, "exploit": False}
        study.enqueue_trial(params, user_attrs={attrs.PBT: decision, attrs.SEED_OVERRIDE: spec.train.seed + m})
        added += 1
    return added


def segment_config(cfg: TrainConfig, trial: optuna.Trial, spec: StudySpec) -> TrainConfig:
    """A segment trains its member up to the end of its generation."""
    seg = segment_of(trial)
    if seg is None or spec.scheduler is None:
        return cfg
    return cfg.replace(budget_images=(int(seg["generation"]) + 1) * spec.scheduler.interval_images)


def next_generation(study: optuna.Study, spec: StudySpec, store: Any) -> int:
    """Exploit and explore once the newest generation is complete; enqueue the next. Call under the study lock.

    Returns the number of segments enqueued (0: the generation is still running, or the schedule is done).
    """
    pbt = spec.scheduler
    assert pbt is not None
    segs = [(s, t) for t in study.get_trials(deepcopy=False) if (s := segment_of(t)) is not None]
    if not segs:
        return 0
    g = max(int(s["generation"]) for s, _ in segs)
    current = [(s, t) for s, t in segs if s["generation"] == g]
    if any(t.state in (TrialState.WAITING, TrialState.RUNNING) for _, t in current):
        return 0  # still running (a failed segment's retry included)
    if g + 1 >= generations(spec):  # the last generation is done: its sources are nobody's any more
        _remove_checkpoints(segs, g - 1, store)
        return 0
    done = {int(s["member"]): t for s, t in current if t.state == TrialState.COMPLETE and t.value is not None}
    if not done:
        log.warning("pbt generation %d: no segment completed; the population stops here", g)
        return 0
    sign = 1.0 if spec.direction == "minimize" else -1.0
    order = sorted(done, key=lambda m: sign * float(done[m].value))  # type: ignore[arg-type]
    n = max(1, int(math.floor(pbt.population * pbt.quantile)))
    top = order[:n]
    bottom = set(order[-n:]) | (set(range(pbt.population)) - set(done))  # a diverged member always exploits
    rng = np.random.default_rng([int(spec.sampler.get("seed") or 0), g + 1])
    for m in range(pbt.population):
        source = done.get(m)
        old = dict(source.params) if source is not None else {}
        if m in bottom or source is None:
            src = int(rng.choice(top))
            source = done[src]
            params = explore(dict(source.params), spec.space, pbt, rng)
            decision: dict[str, Any] = {"member": m, "generation": g + 1, "parent_member": src,
                                        "parent_trial": source.number, "exploit": True, "old": old, "new": params}
            log.info("pbt generation %d: member %d copies member %d (%.4g): %s", g + 1, m, src,
                     float(source.value or 0), ", ".join(f"{k} {old.get(k)!r} -> {v!r}" for k, v in params.items()))
        else:
            params = old
            decision = {"member": m, "generation": g + 1, "parent_member": m, "parent_trial": source.number,
                        "exploit": False}
        study.enqueue_trial(params, user_attrs={
            attrs.PBT: decision, attrs.SEED_OVERRIDE: source.user_attrs[attrs.SEED],
            attrs.PBT_SOURCE: source.user_attrs[attrs.PBT_CHECKPOINT]})
    _remove_checkpoints(segs, g - 1, store)  # generation g-1's checkpoints are nobody's source any more
    return pbt.population


def _remove_checkpoints(segs: list[tuple[dict[str, Any], FrozenTrial]], generation: int, store: Any) -> None:
    for s, t in segs:
        if s["generation"] == generation and (artifact := t.user_attrs.get(attrs.PBT_CHECKPOINT)):
            try:
                store.remove(artifact)
            except ArtifactNotFound:
                pass


def explore(params: dict[str, Any], space: tuple[Param, ...], pbt: Pbt, rng: np.random.Generator) -> dict[str, Any]:
    """Perturb each value by a factor from ``pbt.perturb`` (clipped to its range), or redraw it."""
    out = dict(params)
    for p in space:
        if p.type == "categorical" or rng.random() < pbt.resample_probability:
            out[p.name] = _draw(p, rng)
            continue
        value = float(out[p.name]) * float(rng.choice(pbt.perturb))
        value = min(max(value, float(p.low or 0)), float(p.high or 0))
        out[p.name] = int(round(value)) if p.type == "int" else value
    return out


def _draw(p: Param, rng: np.random.Generator) -> Any:
    """A value from the parameter's own Optuna distribution (Optuna's random sampler, seeded from ``rng``)."""
    sampler = optuna.samplers.RandomSampler(seed=int(rng.integers(2**32)))
    return sampler.sample_independent(None, None, p.name, p.distribution())  # type: ignore[arg-type]


def weights_digest(checkpoint: Any) -> str:
    """SHA-256 of the generator and discriminator weights in a ``train`` checkpoint file: what a segment starts
    from (``pbt_start_weights``) must equal what its parent ended with (``pbt_end_weights``)."""
    import hashlib

    import torch

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    digest = hashlib.sha256()
    for net in ("gen", "disc"):
        for key in sorted(state[net]):
            digest.update(key.encode())
            digest.update(state[net][key].contiguous().numpy().tobytes())
    return digest.hexdigest()[:32]


def new_checkpoint_id() -> str:
    return f"pbt-{uuid.uuid4().hex}"


def lineage(study: optuna.Study, trial: FrozenTrial) -> list[FrozenTrial]:
    """The segments whose training ``trial`` continues, generation 0 first, ``trial`` last."""
    trials = study.get_trials(deepcopy=False)
    chain = [trial]
    while (seg := segment_of(chain[-1])) is not None and seg.get("parent_trial") is not None:
        chain.append(trials[int(seg["parent_trial"])])
    return chain[::-1]


def schedule_config(study: optuna.Study, spec: StudySpec, trial: FrozenTrial) -> TrainConfig:
    """``trial``'s config with its lineage's values as piecewise-constant schedules, from scratch."""
    pbt = spec.scheduler
    assert pbt is not None
    chain = lineage(study, trial)
    cfg = TrainConfig.from_dict(trial.user_attrs[attrs.CONFIG])
    schedules: dict[str, list[list[Any]]] = {}
    for p in spec.space:
        points: list[list[Any]] = []
        for seg in chain:
            start = int(segment_of(seg)["generation"]) * pbt.interval_images  # type: ignore[index]
            value = TrainConfig.from_dict(seg.user_attrs[attrs.CONFIG]).to_dict()[p.name]
            if not points or points[-1][1] != value:
                points.append([start, value])
        if len(points) > 1:
            schedules[p.name] = points
    root = TrainConfig.from_dict(chain[0].user_attrs[attrs.CONFIG])
    first = {name: points[0][1] for name, points in schedules.items()}
    return cfg.replace(seed=root.seed, schedules=schedules, **first)


def describe(trial: FrozenTrial) -> str:
    """One line for ``status``: which member and generation, and what an exploit copied and changed."""
    seg = segment_of(trial)
    if seg is None:
        return ""
    text = f"pbt member {seg['member']} gen {seg['generation']}"
    if seg.get("exploit"):
        changes = ", ".join(f"{k} {_short(seg['old'].get(k))}->{_short(v)}" for k, v in seg["new"].items())
        text += f" <- copied member {seg['parent_member']} (trial {seg['parent_trial']}); {changes}"
    return text


def _short(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)
