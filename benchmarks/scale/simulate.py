"""The search at cluster scale, simulated in virtual time with the service's own sampler, pruner and scheduler.

    python -m benchmarks.scale.simulate --workers 1 4 16 64 256 --seeds 0 1 2 --target 8.0
    python -m benchmarks.scale.simulate --loo          # how well the surrogate predicts recorded trials it was not fitted on

N simulated workers share one in-memory Optuna study built from the study file (``studies/mnist-dcgan.yaml``):
each free worker takes a waiting trial or lets the study's scheduler make the next one (``search.strategy.study.take_waiting``,
``search.strategy.schedulers``), opens it as a worker does (``search.execution.worker.open_trial``:
the sampler seeded per trial, TPE's
constant liar seeing the trials still running), draws its parameters (``search.spec.study_file.suggest_values``), then at each
evaluation reports to the study's pruner (``search.strategy.pruners.build_pruner``: the loss guard around the median,
successive-halving... pruner) and is pruned or completed exactly as a real trial. No training: each evaluation
takes ``trial_seconds / evaluations`` of virtual time, and its FID comes from a surrogate of the MNIST trials
recorded with the real trainer (``benchmarks/results/search-mnist-2026-11-26.json``: 137 trials, 92 complete, 4 evaluations
each at 16k-64k images): the inverse-distance-weighted mean, in log FID, of the 5 nearest recorded curves in the
searched space (log-scaled rates, a differing category counts 1), times a per-trial seed factor
exp(N(0, sigma)) with sigma = the spread of one config over seeds (0.12: the StyleGAN2 preset gave 5.2-6.7).

Printed: per strategy and worker count, the best FID against simulated hours, the hours to reach ``--target``
(median over seeds) and the speedup of N workers over 1 to reach it (ideal: N). With ``--loo``: leave-one-out
predictions of every complete recorded trial's final FID (Spearman rank correlation and median relative error).
PBT runs through the service's ``PopulationBased`` scheduler (see ``simulate``: a member's state is its seed factor).
"""

from __future__ import annotations

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

from benchmarks._common import parser as bench_parser
from benchmarks._common import write_result
from search.execution.replay import Curves
from search.execution.worker import open_trial
from search.spec.study_file import StudySpec, suggest_values
from search.strategy.pruners import build_pruner
from search.strategy.scale import for_workers
from search.strategy.schedulers import scheduler_for
from search.strategy.study import take_waiting

ROOT = Path(__file__).resolve().parents[2]
STRATEGIES: dict[str, dict[str, Any]] = {
    "tpe+median": {},
    "random+median": {"sampler": {"name": "random"}},
    "tpe+halving": {"pruner": {"name": "successive_halving", "args": {"min_resource": 16000, "reduction_factor": 2}}},
    "tpe+none": {"pruner": {"name": "none"}},
    # PBT: the MNIST study's budget in 4 generations, over the values it can change mid-run (the others fixed at
    # the pytorch-dcgan preset's: bce, batch 64; with EMA, no spectral norm, as studies/mnist-pbt.yaml)
    "pbt": {"scheduler": {"name": "pbt", "interval_images": 16000}, "space": ("lr_g", "lr_d", "beta1"),
            "train": {"loss": "bce", "batch_size": 64, "ema_decay": 0.999, "spectral_norm": False}},
}


def make_spec(study_file: Path, strategy: str, seed: int, n_trials: int, workers: int, defaults: str,
              rates: tuple[float, float] | None = None) -> StudySpec:
    """The study file with the strategy's sampler/pruner, no warm starts (they reach a good FID in the first
    trials whatever the search does), and with ``defaults="scaled"`` the worker-dependent defaults of
    ``search.strategy.scale.for_workers`` in place of the file's startup counts."""
    raw = yaml.safe_load(study_file.read_text())
    change = STRATEGIES[strategy]
    raw["sampler"] = {**raw["sampler"], "seed": seed, **change.get("sampler", {})}
    if "sampler" in change:
        raw["sampler"]["args"] = change["sampler"].get("args", {})
    if "pruner" in change:
        raw["pruner"] = {**raw["pruner"], **change["pruner"], "args": change["pruner"].get("args", {})}
    if "scheduler" in change:
        raw["scheduler"] = dict(change["scheduler"])  # population: the file's default (4), or scaled to the workers
        raw["space"] = {k: v for k, v in raw["space"].items() if k in change["space"]}
        raw["train"] = {**raw["train"], **change["train"]}
    raw["budget"] = {**raw["budget"], "n_trials": n_trials}
    raw["name"] = f"sim-{strategy}"
    raw.pop("warm_start", None)
    if defaults == "scaled":
        for key in ("sampler", "pruner"):
            raw[key] = {**raw[key], "args": {k: v for k, v in raw[key].get("args", {}).items() if k != "n_startup_trials"}}
    spec = StudySpec.from_dict(raw, source="simulation")
    if defaults != "scaled":
        return spec
    return for_workers(spec, workers, *rates) if rates else for_workers(spec, workers)


def simulate(spec: StudySpec, curves: Curves, workers: int, hours: float, trial_seconds: float, sigma: float,
             seed: int, space: tuple[Any, ...]) -> list[tuple[float, float]]:
    """(virtual hours, best FID at the full trial budget so far) each time the best improves.

    PBT (``scheduler: pbt``) runs through the service's own ``PopulationBased`` scheduler and ``search.strategy.pbt`` rules:
    a segment trains its generation's evaluations; a completed segment leaves a checkpoint id (in a real, empty
    artifact store), and a member that exploits copies the source member's state. A member's state is its seed
    factor: its FID at I images under values v is the surrogate's FID of v at I images times that factor (the
    weights carry the member's luck, the values set the curve; the history of earlier values is forgotten).
    ``space``: the recorded trials' space; values a strategy does not search are the study's fixed train values."""
    import tempfile

    from optuna.artifacts import FileSystemArtifactStore

    from search import attrs

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    # the study's own pruner (until this was passed, every strategy ran Optuna's default median pruner)
    study = optuna.create_study(study_name=spec.name, direction=spec.direction,  # type: ignore[arg-type]
                                pruner=build_pruner(spec))
    scheduler = scheduler_for(spec)
    scheduler.plan(study, spec.n_trials)
    budget = spec.train.budget_images
    marks = list(range(spec.train.eval_every_images, budget + 1, spec.train.eval_every_images))
    step = trial_seconds / len(marks)
    rng = np.random.default_rng(seed)
    states: dict[str, float] = {}  # PBT checkpoint id -> the member's seed factor
    events: list[tuple[float, int, int]] = []  # (virtual seconds, order, worker)
    running: dict[int, dict[str, Any]] = {}
    best, history, order, now = math.inf, [], 0, 0.0
    idle = list(range(workers))
    with tempfile.TemporaryDirectory() as folder:
        store = FileSystemArtifactStore(folder)  # PBT removes old checkpoints through it; the simulation writes none
        while now <= hours * 3600:
            while idle:
                trial_id = take_waiting(study)
                trial_id = scheduler.refill(study, store) if trial_id is None else trial_id
                if trial_id is None:
                    break
                frozen = study._storage.get_trial(trial_id)  # noqa: SLF001
                trial = open_trial(study, spec, frozen)
                fixed = {p.name: getattr(spec.train, p.name) for p in space if hasattr(spec.train, p.name)}
                params = {**fixed, **{k: v for k, v in suggest_values(trial, spec).items() if k != "seed"}}
                source = trial.user_attrs.get(attrs.PBT_SOURCE)
                factor = states[source] if source else math.exp(rng.normal(0.0, sigma))
                end = scheduler.configure(trial, spec.train).budget_images  # a PBT segment ends at its generation's end
                start = end - spec.scheduler.interval_images if spec.scheduler is not None else 0
                trial.set_user_attr(attrs.SEED, int(trial.user_attrs.get(attrs.SEED_OVERRIDE, trial.number)))
                w = idle.pop()
                running[w] = {"trial": trial, "params": params, "marks": [m for m in marks if start < m <= end],
                              "i": 0, "best": math.inf, "factor": factor}
                heapq.heappush(events, (now + step, order, w))
                order += 1
            if not events:
                break
            now, _, w = heapq.heappop(events)
            run = running[w]
            trial, i = run["trial"], run["i"]
            mark = run["marks"][i]
            value = curves.predict(run["params"], space, mark / budget) * run["factor"]
            run["best"] = min(run["best"], value)
            trial.report(run["best"] if spec.pruner["report"] == "best" else value, mark)
            ended = True
            if i + 1 == len(run["marks"]):
                if spec.scheduler is not None:
                    trial.set_user_attr(attrs.PBT_CHECKPOINT, f"sim-{trial.number}")
                    states[f"sim-{trial.number}"] = run["factor"]
                study.tell(trial, value)
                if mark == budget and value < best:
                    best = value
                    history.append((now / 3600, value))
            elif scheduler.prunable(trial) and trial.should_prune():
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
    ap = bench_parser(__doc__, "simulate")
    ap.add_argument("--workers", type=int, nargs="*", default=[1, 4, 16, 64, 256])
    ap.add_argument("--strategies", nargs="*", default=list(STRATEGIES))
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    ap.add_argument("--hours", type=float, default=4.0, help="virtual hours simulated per run")
    ap.add_argument("--trial-seconds", type=float, default=60.0, help="virtual duration of an unpruned trial")
    ap.add_argument("--max-trials", type=int, default=600, help="the study's n_trials (bounds TPE's cost)")
    ap.add_argument("--sigma", type=float, default=0.12, help="seed-to-seed spread of log FID")
    ap.add_argument("--target", type=float, default=8.0)
    ap.add_argument("--study", type=Path, default=ROOT / "studies" / "mnist-dcgan.yaml")
    ap.add_argument("--curves", type=Path, default=ROOT / "benchmarks" / "results" / "search-mnist-2026-11-26.json")
    ap.add_argument("--defaults", nargs="*", default=["file", "scaled"], choices=["file", "scaled"],
                    help="startup counts: the study file's, or search.strategy.scale.for_workers(N)'s")
    ap.add_argument("--rates", type=float, nargs=2, action="append", default=None, metavar=("TPE", "PRUNER"),
                    help="with scaled defaults: startup trials per worker for TPE and the pruner (repeatable; "
                         "default search.strategy.scale's)")
    ap.add_argument("--loo", action="store_true")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    curves = Curves.load(args.curves)
    space = StudySpec.from_file(args.study).space
    rows: list[dict[str, Any]] = []
    if args.loo:
        row: dict[str, Any] = {"surrogate_loo": leave_one_out(curves, make_spec(args.study, "tpe+median", 0, 1, 1, "file"))}
        print(json.dumps(row), flush=True)
        rows.append(row)
    Run = tuple[str, str, tuple[float, float] | None]
    runs: list[Run] = [(s, d, None) for s in args.strategies for d in args.defaults if d == "file" or not args.rates]
    runs += [(s, "scaled", (r[0], r[1])) for s in args.strategies for r in (args.rates or []) if "scaled" in args.defaults]
    for strategy, defaults, rates in runs:
        base_hours: float | None = None
        for n in args.workers:
            per_seed = []
            finals = []
            for seed in args.seeds:
                spec = make_spec(args.study, strategy, seed, args.max_trials, n, defaults, rates)
                history = simulate(spec, curves, n, args.hours, args.trial_seconds, args.sigma, seed, space)
                per_seed.append(hours_to(history, args.target))
                finals.append(history[-1][1] if history else math.inf)
            reach = statistics.median(per_seed)
            if n == args.workers[0]:
                base_hours = reach
            row = {"strategy": strategy, "defaults": defaults if rates is None else f"scaled {rates[0]:g}/{rates[1]:g}",
                   "workers": n,
                   "hours_to_target": round(reach, 3) if math.isfinite(reach) else None,
                   "per_seed": [round(h, 3) if math.isfinite(h) else None for h in per_seed],
                   "best_after": round(statistics.median(finals), 2),
                   "speedup_vs_first": round(base_hours / reach, 2) if base_hours and math.isfinite(reach)
                   and math.isfinite(base_hours) else None}
            print(json.dumps(row), flush=True)
            rows.append(row)
    write_result(args, {"rows": rows})


if __name__ == "__main__":
    main()
