"""Search progress per wall-clock minute: gan-search's default study against what a user would write by hand.

    python -m benchmarks.quality.search_progress --study studies/digits-quick.yaml --minutes 3 --seeds 0 1 2 --workers 1 2 4
    python -m benchmarks.quality.search_progress --study studies/mnist-dcgan.yaml --data-root ../shared/data/mnist \
        --minutes 15 --seeds 0 --workers 1 2 4

Arms, side by side on this machine, each with the same wall-clock budget (trials are not started after it;
a trial counts once it has completed, and only if it completed within the budget):

- ``gan-search-Kw``: the study file as shipped (warm start, pruner, guard, sampler), K local workers;
- ``handwritten``: the Optuna script a user writes by hand: ``TPESampler(seed)`` + ``MedianPruner()``
  calling the same trainer on the same space and trial budget, one process, in-memory storage;
- ``random``: ``RandomSampler(seed)``, no pruning, otherwise as ``handwritten``;
- ``pbt`` (with ``--pbt-study``): population-based training, ``--pbt-workers`` local workers; its best
  config is the best member's whole schedule (what ``export`` writes), retrained from scratch like the others.

Printed: the best value against wall-clock (also written as HTML), the minutes each arm needs to reach the
hand-written script's best at the full budget, and each arm's best config retrained with fresh seeds
(mean and spread). Results go to ``--out`` as JSON (the complete per-trial curves too, which
``benchmarks/quality/pruning.py --curves`` replays).
"""

from __future__ import annotations

import logging
import os
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
import torch
from joblib import Parallel, delayed

from benchmarks._common import parser as bench_parser
from benchmarks._common import write_result
from search import StudySpec, create_or_load_study, run_workers, suggest_config
from search.strategy.schedulers import scheduler_for
from trainer import TrainConfig, load_data, make_evaluator, train

log = logging.getLogger("benchmarks.search")


# ---------------------------------------------------------------- arms
def gan_search_arm(spec: StudySpec, seed: int, workers: int, budget_s: float, tmp: Path) -> dict[str, Any]:
    """The shipped study file, only the sampler seed, the storage and the clock changed."""
    raw = {**spec.raw, "sampler": {**spec.raw.get("sampler", {}), "seed": seed}}
    raw["storage"] = {**raw.get("storage", {}), "url": f"sqlite:///{tmp / 'study.db'}", "artifacts": str(tmp / "art")}
    arm_spec = StudySpec.from_dict(raw, source="benchmark").with_overrides(n_trials=100_000, timeout=budget_s)
    start = datetime.now()
    study = create_or_load_study(arm_spec)
    scheduler_for(arm_spec).plan(study, arm_spec.n_trials)
    run_workers(arm_spec.name, arm_spec.storage, workers, artifacts=arm_spec.artifacts, timeout=budget_s)
    return _record(study, start, budget_s)


def pbt_arm(spec: StudySpec, seed: int, workers: int, budget_s: float, tmp: Path) -> dict[str, Any]:
    """The PBT study file (``--pbt-study``), K local workers; its best config is the best member's schedule."""
    from search.strategy.pbt import schedule_config

    raw = {**spec.raw, "sampler": {**spec.raw.get("sampler", {}), "seed": seed}}
    raw["storage"] = {**raw.get("storage", {}), "url": f"sqlite:///{tmp / 'study.db'}", "artifacts": str(tmp / "art")}
    arm_spec = StudySpec.from_dict(raw, source="benchmark").with_overrides(timeout=budget_s)
    start = datetime.now()
    study = create_or_load_study(arm_spec)
    scheduler_for(arm_spec).plan(study, arm_spec.n_trials)
    run_workers(arm_spec.name, arm_spec.storage, workers, artifacts=arm_spec.artifacts, timeout=budget_s)
    record = _record(study, start, budget_s)
    best = next((t for t in study.get_trials(deepcopy=False) if record["best_config"] and t.value == record["best"]
                 and t.state.name == "COMPLETE"), None)
    if best is not None:
        record["best_config"] = schedule_config(study, arm_spec, best).to_dict()
        record["pbt_decisions"] = [t.user_attrs.get("pbt") for t in study.get_trials(deepcopy=False)]
    return record


def _objective(spec: StudySpec, data: Any, evaluator: Any, prune: bool) -> Any:
    """The objective of the hand-written script: suggestions -> TrainConfig -> the same trainer."""

    def objective(trial: optuna.Trial) -> float:
        cfg = suggest_config(trial, spec).replace(device="cpu")
        trial.set_user_attr("config", cfg.to_dict())

        def report(event: Any) -> None:
            trial.report(event.metrics[spec.objective], event.images_seen)
            if prune and not event.final and trial.should_prune():
                raise optuna.TrialPruned()

        result = train(cfg, data=data, evaluator=evaluator, callback=report)
        return float(result.final_metrics[spec.objective])

    return objective


def optuna_arm(spec: StudySpec, seed: int, budget_s: float, random_search: bool) -> dict[str, Any]:
    start = datetime.now()
    base = spec.train.replace(device="cpu")
    data = load_data(base)
    evaluator = make_evaluator(base, data)
    sampler = optuna.samplers.RandomSampler(seed=seed) if random_search else optuna.samplers.TPESampler(seed=seed)
    pruner = optuna.pruners.NopPruner() if random_search else optuna.pruners.MedianPruner()
    study = optuna.create_study(direction=spec.direction, sampler=sampler, pruner=pruner)
    study.optimize(_objective(spec, data, evaluator, not random_search), timeout=budget_s, catch=(Exception,))
    return _record(study, start, budget_s)


def _record(study: optuna.Study, start: datetime, budget_s: float) -> dict[str, Any]:
    """Per trial: completion minute, state, value, curve and config; plus the best-so-far steps."""
    trials = []
    for t in study.get_trials(deepcopy=False):
        if t.datetime_complete is None:
            continue
        minute = (t.datetime_complete - start).total_seconds() / 60
        trials.append({"number": t.number, "state": t.state.name, "minute": round(minute, 3),
                       "in_budget": minute <= budget_s / 60, "value": t.value, "params": t.params,
                       "curve": {str(k): v for k, v in sorted(t.intermediate_values.items())},
                       "config": t.user_attrs.get("config")})
    trials.sort(key=lambda r: r["minute"])
    sign = 1.0 if study.direction == optuna.study.StudyDirection.MINIMIZE else -1.0
    best, steps, best_trial = None, [], None
    for r in trials:
        if r["state"] == "COMPLETE" and r["in_budget"] and r["value"] is not None:
            if best is None or sign * r["value"] < sign * best:
                best, best_trial = r["value"], r
                steps.append([r["minute"], best])
    states = {s: sum(r["state"] == s for r in trials if r["in_budget"]) for s in ("COMPLETE", "PRUNED", "FAIL")}
    return {"best": best, "best_config": best_trial["config"] if best_trial else None, "steps": steps,
            "trials": trials, "states": states}


def minutes_to_reach(steps: list[list[float]], target: float | None, sign: float) -> float | None:
    if target is None:
        return None
    return next((m for m, v in steps if sign * v <= sign * target), None)


# ---------------------------------------------------------------- retraining the winners
def _retrain(config: dict[str, Any], seed: int, metric: str) -> float:
    torch.set_num_threads(1)
    cfg = TrainConfig.from_dict({**config, "seed": seed, "device": "cpu"})
    data = load_data(cfg)
    result = train(cfg, data=data, evaluator=make_evaluator(cfg, data))
    return float(result.final_metrics[metric])


def retrain_all(results: dict[str, Any], seeds: int, metric: str, jobs: int) -> None:
    """Each arm's best config (per sampler seed) trained again with ``seeds`` fresh training seeds."""
    tasks = [(key, cfg, 1000 + i) for key, r in results.items() if (cfg := r["best_config"]) for i in range(seeds)]
    values = Parallel(n_jobs=jobs)(delayed(_retrain)(cfg, s, metric) for _, cfg, s in tasks)
    for (key, _, _), value in zip(tasks, values, strict=True):
        results[key].setdefault("retrained", []).append(value)


# ---------------------------------------------------------------- report
def summarise(results: dict[str, Any], arms: list[str], seeds: list[int], sign: float) -> list[dict[str, Any]]:
    rows = []
    for arm in arms:
        keys = [f"{arm}/seed{s}" for s in seeds]
        bests = [results[k]["best"] for k in keys if results[k]["best"] is not None]
        reach = []
        for s, k in zip(seeds, keys, strict=True):
            target = results[f"handwritten/seed{s}"]["best"]
            reach.append(minutes_to_reach(results[k]["steps"], target, sign))
        retrained = [v for k in keys for v in results[k].get("retrained", [])]
        per_seed = [statistics.fmean(results[k]["retrained"]) for k in keys if results[k].get("retrained")]
        rows.append({
            "arm": arm,
            "best_mean": statistics.fmean(bests) if bests else None,
            "bests": bests,
            "minutes_to_handwritten_best": reach,
            "trials_complete": sum(results[k]["states"]["COMPLETE"] for k in keys),
            "trials_pruned": sum(results[k]["states"]["PRUNED"] for k in keys),
            "retrained_mean": statistics.fmean(retrained) if retrained else None,
            "retrained_std": statistics.pstdev(retrained) if len(retrained) > 1 else None,
            "retrained_per_seed": per_seed,
        })
    return rows


def print_table(rows: list[dict[str, Any]], minutes: float) -> None:
    def fmt(v: Any) -> str:
        return "-" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)

    print(f"{'arm':<16} {'best (mean)':>11} {'min to reach handwritten best':>30} {'complete':>8} {'pruned':>6} "
          f"{'retrained FID mean +- std':>26}")
    for r in rows:
        reach = ", ".join("never" if m is None else f"{m:.1f}" for m in r["minutes_to_handwritten_best"])
        retr = f"{fmt(r['retrained_mean'])} +- {fmt(r['retrained_std'])}"
        print(f"{r['arm']:<16} {fmt(r['best_mean']):>11} {reach:>30} {r['trials_complete']:>8} {r['trials_pruned']:>6} "
              f"{retr:>26}")
    print(f"(budget {minutes:g} min per arm; 'never' = not within the budget)")


def write_html(results: dict[str, Any], path: Path, title: str) -> None:
    import plotly.graph_objects as go

    fig = go.Figure()
    for key, r in results.items():
        if r["steps"]:
            xs = [m for m, _ in r["steps"]] + [r["budget_minutes"]]
            ys = [v for _, v in r["steps"]] + [r["steps"][-1][1]]
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", line_shape="hv", name=key))
    fig.update_layout(title=title, xaxis_title="wall-clock minutes", yaxis_title="best value so far", yaxis_type="log")
    path.write_text(fig.to_html(include_plotlyjs=True))


# ---------------------------------------------------------------- main
def main() -> None:
    parser = bench_parser(__doc__, "search-progress")
    parser.add_argument("--study", default="studies/digits-quick.yaml")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--minutes", type=float, default=3.0, help="wall-clock budget per arm")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="sampler seeds")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4], help="gan-search worker counts")
    parser.add_argument("--retrain-seeds", type=int, default=3)
    parser.add_argument("--pbt-study", default=None, help="also run this PBT study file as the arm 'pbt'")
    parser.add_argument("--pbt-workers", type=int, default=2)
    parser.add_argument("--arms", nargs="+", default=None,
                        help="run only these arms (gan-search-Kw, handwritten, random, pbt); default: all")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    log.setLevel(logging.INFO)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    spec = StudySpec.from_file(args.study)
    if args.data_root:
        spec = StudySpec.from_dict({**spec.raw, "train": {**spec.raw["train"], "data_root": args.data_root}},
                                   source=args.study)
    if spec.objective not in ("fid", "kid"):
        raise SystemExit("the benchmark compares FID/KID studies")
    sign = 1.0 if spec.direction == "minimize" else -1.0
    budget_s = args.minutes * 60
    base = spec.train.replace(device="cpu")
    make_evaluator(base, load_data(base))  # the feature network and real statistics are cached before any arm
    arms = [f"gan-search-{k}w" for k in args.workers] + ["handwritten", "random"]
    pbt_spec = None
    if args.pbt_study:
        pbt_spec = StudySpec.from_file(args.pbt_study)
        if args.data_root:
            pbt_spec = StudySpec.from_dict({**pbt_spec.raw, "train": {**pbt_spec.raw["train"],
                                                                      "data_root": args.data_root}}, source=args.pbt_study)
        arms.append("pbt")
    if args.arms:
        arms = [a for a in arms if a in args.arms or a == "handwritten"]  # the reference arm always runs
    results: dict[str, Any] = {}
    for seed in args.seeds:
        for arm in arms:
            t0 = time.perf_counter()
            with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
                if arm.startswith("gan-search"):
                    r = gan_search_arm(spec, seed, int(arm.split("-")[-1][:-1]), budget_s, Path(tmp))
                elif arm == "pbt":
                    assert pbt_spec is not None
                    r = pbt_arm(pbt_spec, seed, args.pbt_workers, budget_s, Path(tmp))
                else:
                    r = optuna_arm(spec, seed, budget_s, random_search=arm == "random")
            r["budget_minutes"] = args.minutes
            r["wall_minutes"] = round((time.perf_counter() - t0) / 60, 2)
            results[f"{arm}/seed{seed}"] = r
            log.info("%s seed %d: best %s after %d complete / %d pruned trials (%.1f min)", arm, seed, r["best"],
                     r["states"]["COMPLETE"], r["states"]["PRUNED"], r["wall_minutes"])
    if args.retrain_seeds:
        log.info("retraining each arm's best config with %d fresh seeds", args.retrain_seeds)
        retrain_all(results, args.retrain_seeds, spec.objective, jobs=min(2, os.cpu_count() or 1))
    rows = summarise(results, arms, args.seeds, sign)
    print(f"study {spec.name} ({args.study}), {spec.objective}, {os.cpu_count()} CPU cores, torch "
          f"{torch.__version__}, seeds {args.seeds}")
    print_table(rows, args.minutes)
    out = write_result(args, {"summary": rows, "results": results})
    if out is not None:
        write_html(results, out.with_suffix(".html"), f"{spec.name}: best {spec.objective} against wall-clock")
        print(f"wrote {out} and {out.with_suffix('.html')}")


if __name__ == "__main__":
    main()
