"""The search at cluster scale, simulated in virtual time with the service's own sampler, pruner and scheduler.

    python benchmarks/simulate.py --workers 1 4 16 64 256 --seeds 0 1 2 --target 8.0
    python benchmarks/simulate.py --loo          # how well the surrogate predicts recorded trials it was not fitted on

N simulated workers share one in-memory Optuna study built from the study file (``studies/mnist-dcgan.yaml``):
each free worker takes a waiting trial or lets the study's scheduler make the next one (``search.study.take_waiting``,
``search.schedulers``), opens it as a worker does (``search.worker.open_trial``: the sampler seeded per trial, TPE's
constant liar seeing the trials still running), draws its parameters (``search.spec.suggest_values``), then at each
evaluation reports to the study's pruner (``search.pruners.build_pruner``: the loss guard around the median,
successive-halving... pruner) and is pruned or completed exactly as a real trial. No training: each evaluation
takes ``trial_seconds / evaluations`` of virtual time, and its FID comes from a surrogate of the MNIST trials
recorded with the real trainer (``benchmarks/results/search-mnist.json``: 137 trials, 92 complete, 4 evaluations
each at 16k-64k images): the inverse-distance-weighted mean, in log FID, of the 5 nearest recorded curves in the
searched space (log-scaled rates, a differing category counts 1), times a per-trial seed factor
exp(N(0, sigma)) with sigma = the spread of one config over seeds (0.12: the StyleGAN2 preset gave 5.2-6.7).

Printed: per strategy and worker count, the best FID against simulated hours, the hours to reach ``--target``
(median over seeds) and the speedup of N workers over 1 to reach it (ideal: N). With ``--loo``: leave-one-out
predictions of every complete recorded trial's final FID (Spearman rank correlation and median relative error).
Not simulated: PBT (its segments continue a member's weights; the surrogate knows curves of whole runs only).
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import statistics
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import yaml

from search.replay import Curves
from search.scale import for_workers
from search.schedulers import scheduler_for
from search.spec import StudySpec, suggest_values
from search.study import take_waiting
from search.worker import open_trial

ROOT = Path(__file__).resolve().parents[1]
STRATEGIES = {
    "tpe+median": {},
    "random+median": {"sampler": {"name": "random"}},
    "tpe+halving": {"pruner": {"name": "successive_halving", "args": {"min_resource": 16000, "reduction_factor": 2}}},
    "tpe+none": {"pruner": {"name": "none"}},
}


def make_spec(study_file: Path, strategy: str, seed: int, n_trials: int, workers: int, defaults: str) -> StudySpec:
    """The study file with the strategy's sampler/pruner, no warm starts (they reach a good FID in the first
    trials whatever the search does), and with ``defaults="scaled"`` the worker-dependent defaults of
    ``search.scale.for_workers`` in place of the file's startup counts."""
    raw = yaml.safe_load(study_file.read_text())
    change = STRATEGIES[strategy]
    raw["sampler"] = {**raw["sampler"], "seed": seed, **change.get("sampler", {})}
    if "pruner" in change:
        raw["pruner"] = {**raw["pruner"], **change["pruner"], "args": change["pruner"].get("args", {})}
    raw["budget"] = {**raw["budget"], "n_trials": n_trials}
    raw["name"] = f"sim-{strategy}"
    raw.pop("warm_start", None)
    if defaults == "scaled":
        for key in ("sampler", "pruner"):
            raw[key] = {**raw[key], "args": {k: v for k, v in raw[key].get("args", {}).items() if k != "n_startup_trials"}}
    spec = StudySpec.from_dict(raw, source="simulation")
    return for_workers(spec, workers) if defaults == "scaled" else spec


def simulate(spec: StudySpec, curves: Curves, workers: int, hours: float, trial_seconds: float, sigma: float,
             seed: int) -> list[tuple[float, float]]:
    """(virtual hours, best FID so far) each time the best improves."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(study_name=spec.name, direction=spec.direction)
    scheduler = scheduler_for(spec)
    scheduler.plan(study, spec.n_trials)
    marks = list(range(spec.train.eval_every_images, spec.train.budget_images + 1, spec.train.eval_every_images))
    step = trial_seconds / len(marks)
    rng = np.random.default_rng(seed)
    events: list[tuple[float, int, int]] = []  # (virtual seconds, order, worker)
    running: dict[int, dict[str, Any]] = {}
    best, history, order, now = math.inf, [], 0, 0.0
    idle = list(range(workers))
    while now <= hours * 3600:
        while idle:
            frozen = take_waiting(study) or scheduler.refill(study, None)
            if frozen is None:
                break
            trial = open_trial(study, spec, frozen)
            params = {k: v for k, v in suggest_values(trial, spec).items() if k != "seed"}
            w = idle.pop()
            running[w] = {"trial": trial, "params": params, "i": 0, "best": math.inf,
                          "factor": math.exp(rng.normal(0.0, sigma))}
            heapq.heappush(events, (now + step, order, w))
            order += 1
        if not events:
            break
        now, _, w = heapq.heappop(events)
        run = running[w]
        trial, i = run["trial"], run["i"]
        mark = marks[i]
        value = curves.predict(run["params"], spec.space, mark / spec.train.budget_images) * run["factor"]
        run["best"] = min(run["best"], value)
        trial.report(run["best"] if spec.pruner["report"] == "best" else value, mark)
        ended = True
        if i + 1 == len(marks):
            study.tell(trial, value)
            if value < best:
                best = value
                history.append((now / 3600, value))
        elif trial.should_prune():
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            ended = False
            run["i"] += 1
            heapq.heappush(events, (now + step, order, w))
            order += 1
        if ended:
            del running[w]
            idle.append(w)
    return history


def hours_to(history: list[tuple[float, float]], target: float) -> float:
    return next((h for h, v in history if v <= target), math.inf)


def leave_one_out(curves: Curves, spec: StudySpec) -> dict[str, float]:
    complete = [c for c in curves.curves if c.points[-1][0] >= 1.0 - 1e-9]
    pairs = [(curves.value_at(c, 1.0), curves.predict(c.params, spec.space, 1.0, exclude=c)) for c in complete]
    true, pred = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    ranks = lambda a: np.argsort(np.argsort(a))  # noqa: E731
    rho = float(np.corrcoef(ranks(true), ranks(pred))[0, 1])
    rel = float(np.median(np.abs(pred - true) / true))
    top = set(np.argsort(true)[: max(1, len(true) // 10)])
    return {"recorded_complete": len(complete), "spearman": round(rho, 3), "median_rel_error": round(rel, 3),
            "top10pct_predicted_in_top_quarter": round(float(np.mean([r in set(np.argsort(pred)[: len(pred) // 4])
                                                                        for r in top])), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, nargs="*", default=[1, 4, 16, 64, 256])
    ap.add_argument("--strategies", nargs="*", default=list(STRATEGIES))
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    ap.add_argument("--hours", type=float, default=4.0, help="virtual hours simulated per run")
    ap.add_argument("--trial-seconds", type=float, default=60.0, help="virtual duration of an unpruned trial")
    ap.add_argument("--max-trials", type=int, default=600, help="the study's n_trials (bounds TPE's cost)")
    ap.add_argument("--sigma", type=float, default=0.12, help="seed-to-seed spread of log FID")
    ap.add_argument("--target", type=float, default=8.0)
    ap.add_argument("--study", type=Path, default=ROOT / "studies" / "mnist-dcgan.yaml")
    ap.add_argument("--curves", type=Path, default=ROOT / "benchmarks" / "results" / "search-mnist.json")
    ap.add_argument("--defaults", nargs="*", default=["file", "scaled"], choices=["file", "scaled"],
                    help="startup counts: the study file's, or search.scale.for_workers(N)'s")
    ap.add_argument("--loo", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    curves = Curves.load(args.curves)
    rows: list[dict[str, Any]] = []
    if args.loo:
        row = {"surrogate_loo": leave_one_out(curves, make_spec(args.study, "tpe+median", 0, 1, 1, "file"))}
        print(json.dumps(row), flush=True)
        rows.append(row)
    for strategy, defaults in [(s, d) for s in args.strategies for d in args.defaults]:
        base_hours: float | None = None
        for n in args.workers:
            per_seed = []
            finals = []
            for seed in args.seeds:
                spec = make_spec(args.study, strategy, seed, args.max_trials, n, defaults)
                history = simulate(spec, curves, n, args.hours, args.trial_seconds, args.sigma, seed)
                per_seed.append(hours_to(history, args.target))
                finals.append(history[-1][1] if history else math.inf)
            reach = statistics.median(per_seed)
            if n == args.workers[0]:
                base_hours = reach
            row = {"strategy": strategy, "defaults": defaults, "workers": n,
                   "hours_to_target": round(reach, 3) if math.isfinite(reach) else None,
                   "per_seed": [round(h, 3) if math.isfinite(h) else None for h in per_seed],
                   "best_after": round(statistics.median(finals), 2),
                   "speedup_vs_first": round(base_hours / reach, 2) if base_hours and math.isfinite(reach)
                   and math.isfinite(base_hours) else None}
            print(json.dumps(row), flush=True)
            rows.append(row)
    if args.out:
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
