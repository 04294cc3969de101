"""Which pruner settings fit GAN curves: replay complete, unpruned FID curves through Optuna's pruners.

    python -m benchmarks.quality.pruning --study studies/digits-quick.yaml --trials 30          # trains the curves
    python -m benchmarks.quality.pruning --curves runs/bench/search-mnist-2026-11-26.json                   # reuses a benchmark's
    python -m benchmarks.quality.pruning --leave-one-out --curves benchmarks/results/suite-*.json \
        benchmarks/results/search-mnist-2026-11-26.json          # the setting chosen on the other problems, per problem

Curves come from trials that were never pruned (random search, full budget): either trained here, or the
``random`` arm of ``benchmarks/quality/suite.py``. Each candidate setting is replayed through a real
Optuna study (in memory) over many random orders of the same curves; for each it prints the share of
training images saved, how often the best trial (by final value) survived, how many of the top quarter
were pruned, and the best final value the study kept (mean over orders). A setting is good when it saves
images without pruning the trials that would have ended best.

``--leave-one-out`` (several problems' curves: the suite's JSON holds one random arm per problem): steps become
thousandths of each trial's budget, so that one setting means the same on every problem; for each problem, the
setting that saves the most images on the *other* problems while keeping their best trial in >= 90% of orders is
chosen, then judged on the problem left out, beside the shipped default (median, startup 8, warm-up a quarter of
the budget, best-so-far reports).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import random
import statistics
from pathlib import Path
from typing import Any

import optuna

from search import StudySpec
from trainer import load_data, make_evaluator, train

Curve = list[tuple[int, float]]


def train_curves(spec: StudySpec, n: int, seed: int, raw_vs_ema: list[tuple[float, float, bool]]) -> list[Curve]:
    """``n`` random trials at full budget; for EMA trials, ``raw_vs_ema`` gets (raw, EMA) values per evaluation."""
    base = spec.train.replace(device="cpu")
    data = load_data(base)
    evaluator = make_evaluator(base, data)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    from search import suggest_config

    def score_raw(event: Any) -> None:
        if event.sample_raw is not None:
            raw_vs_ema.append((evaluator(event.sample_raw)[spec.objective], event.metrics[spec.objective], event.final))

    curves = []
    for _ in range(n):
        trial = study.ask()
        cfg = suggest_config(trial, spec).replace(device="cpu")
        try:
            result = train(cfg, data=data, evaluator=evaluator, callback=score_raw)
        except Exception as exc:  # a diverged trial has no complete curve; a pruner would not see it end
            logging.warning("trial %d: %s", trial.number, exc)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        curves.append([(h["mark"], float(h["metrics"][spec.objective])) for h in result.history])
        study.tell(trial, curves[-1][-1][1])
    return curves


def curves_from_benchmark(path: Path) -> list[Curve]:
    return [c for curves in problem_curves(path).values() for c in curves]


def problem_curves(path: Path) -> dict[str, list[Curve]]:
    """Complete curves of the never-pruned (random) arms, per problem: a suite JSON (``{results: {problem: {arms:
    ...}}}``) or a search-progress JSON (``{results: {arm: ...}}``: one problem, named by its study)."""
    results = json.loads(path.read_text())["results"]

    def random_curves(arms: dict[str, Any]) -> list[Curve]:
        return [[(int(k), float(v)) for k, v in t["curve"].items()] for key, r in arms.items()
                if key.startswith("random/") for t in r["trials"] if t["state"] == "COMPLETE" and t["curve"]]

    if results and all(isinstance(r, dict) and "arms" in r for r in results.values()):
        return {problem: random_curves(r["arms"]) for problem, r in results.items()}
    name = next((t["config"]["dataset"] for r in results.values() for t in r.get("trials", []) if t.get("config")),
                path.stem)
    return {name: random_curves(results)}


def per_mille(curves: list[Curve]) -> list[Curve]:
    """Steps as thousandths of each trial's budget (its last mark), so that one warm-up means the same everywhere."""
    return [[(max(1, round(1000 * m / c[-1][0])), v) for m, v in c] for c in curves]


SHIPPED = {"name": "median", "startup": 8, "warmup": 250, "patience": 0, "report": "best"}  # studies/*.yaml, per mille


def leave_one_out(by_problem: dict[str, list[Curve]], orders: int, seed: int) -> list[dict[str, Any]]:
    """Per problem: the setting chosen on the others (most images saved, their best trial kept in >= 90% of
    orders on every one of them), judged on the problem left out, beside the shipped default."""
    settings: list[dict[str, Any]] = [SHIPPED]
    for startup, warmup, patience, report in itertools.product((4, 8), (0, 250, 500), (0, 1), ("last", "best")):
        setting = {"name": "median", "startup": startup, "warmup": warmup, "patience": patience, "report": report}
        if setting != SHIPPED:
            settings.append(setting)
    curves = {p: per_mille(c) for p, c in by_problem.items()}
    table = {p: [replay(c, s, orders, seed) for s in settings] for p, c in curves.items()}
    rows = []
    for held in curves:
        others = [p for p in curves if p != held]
        fits = [i for i in range(len(settings)) if all(table[p][i]["best_survived"] >= 0.9 for p in others)]
        pick = max(fits, key=lambda i: statistics.fmean(table[p][i]["saved"] for p in others)) if fits else None
        row: dict[str, Any] = {"held_out": held, "curves": len(curves[held]), "shipped": table[held][0]}
        if pick is not None:
            row |= {"chosen": settings[pick], "chosen_on_others_saved": statistics.fmean(table[p][pick]["saved"]
                                                                                         for p in others),
                    "held_out_result": table[held][pick]}
        rows.append(row)
    return rows


def make_pruner(setting: dict[str, Any]) -> optuna.pruners.BasePruner:
    if setting["name"] == "none":
        return optuna.pruners.NopPruner()
    pruner: optuna.pruners.BasePruner = optuna.pruners.MedianPruner(
        n_startup_trials=setting["startup"], n_warmup_steps=setting["warmup"])
    if setting["patience"]:
        pruner = optuna.pruners.PatientPruner(pruner, patience=setting["patience"])
    return pruner


def replay(curves: list[Curve], setting: dict[str, Any], orders: int, seed: int) -> dict[str, float]:
    """Mean over ``orders`` random orders: images saved, best survived, top quarter pruned, best kept."""
    finals = [c[-1][1] for c in curves]
    best_index = min(range(len(curves)), key=finals.__getitem__)
    top = set(sorted(range(len(curves)), key=finals.__getitem__)[: max(1, len(curves) // 4)])
    total = sum(c[-1][0] for c in curves)
    rng = random.Random(seed)
    saved, survived, top_pruned, kept = [], [], [], []
    for _ in range(orders):
        order = list(range(len(curves)))
        rng.shuffle(order)
        study = optuna.create_study(pruner=make_pruner(setting))
        used, pruned = 0, set()
        for i in order:
            trial = study.ask()
            best = float("inf")
            for mark, value in curves[i]:
                best = min(best, value)
                trial.report(best if setting["report"] == "best" else value, mark)
                if mark < curves[i][-1][0] and trial.should_prune():
                    pruned.add(i)
                    break
            used += mark
            if i in pruned:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            else:
                study.tell(trial, curves[i][-1][1])
        saved.append(1 - used / total)
        survived.append(float(best_index not in pruned))
        top_pruned.append(len(top & pruned) / len(top))
        kept.append(min(finals[i] for i in range(len(curves)) if i not in pruned))
    return {"saved": statistics.fmean(saved), "best_survived": statistics.fmean(survived),
            "top_quarter_pruned": statistics.fmean(top_pruned), "best_kept": statistics.fmean(kept)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", default="studies/digits-quick.yaml")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--trials", type=int, default=30, help="curves to train (without --curves)")
    parser.add_argument("--curves", type=Path, nargs="+", default=None,
                        help="benchmarks/quality/suite.py JSON (suite or --study); several with --leave-one-out")
    parser.add_argument("--leave-one-out", action="store_true", help="choose on the other problems, judge on each")
    parser.add_argument("--orders", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", type=Path, default=None, help="write the curves here (JSON)")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    logging.basicConfig(level=logging.WARNING)

    if args.leave_one_out:
        by_problem: dict[str, list[Curve]] = {}
        for path in args.curves or []:
            for problem, found in problem_curves(path).items():
                by_problem.setdefault(problem, []).extend(found)
        by_problem = {p: c for p, c in by_problem.items() if len(c) >= 4}
        print("curves per problem:", {p: len(c) for p, c in by_problem.items()})

        def fmt(r: dict[str, float]) -> str:
            return f"saved {r['saved']:.1%}, best kept {r['best_survived']:.0%}, best value {r['best_kept']:.4g}"

        for row in leave_one_out(by_problem, args.orders, args.seed):
            print(f"{row['held_out']} ({row['curves']} curves): shipped {fmt(row['shipped'])}")
            if "chosen" in row:
                s = row["chosen"]
                print(f"  chosen on the others: startup={s['startup']} warmup={s['warmup']}/1000 "
                      f"patience={s['patience']} report={s['report']} (saves {row['chosen_on_others_saved']:.1%} "
                      f"there) -> here {fmt(row['held_out_result'])}")
            else:
                print("  no setting keeps the others' best trial in >= 90% of orders")
        return
    if args.curves:
        curves = [c for path in args.curves for c in curves_from_benchmark(path)]
        source = ", ".join(map(str, args.curves))
    else:
        spec = StudySpec.from_file(args.study)
        if args.data_root:
            spec = StudySpec.from_dict({**spec.raw, "train": {**spec.raw["train"], "data_root": args.data_root}},
                                       source=args.study)
        pairs: list[tuple[float, float, bool]] = []
        curves = train_curves(spec, args.trials, args.seed, pairs)
        source = f"{args.trials} random trials of {args.study}"
        for label, chosen in (("all evaluations", pairs), ("final evaluations", [p for p in pairs if p[2]])):
            ratios = [ema / raw for raw, ema, _ in chosen]
            if ratios:
                print(f"EMA vs raw generator, {label} of EMA trials ({len(ratios)}): EMA better at "
                      f"{sum(r < 1 for r in ratios) / len(ratios):.0%}; EMA/raw {spec.objective}: median "
                      f"{statistics.median(ratios):.3f}, best {min(ratios):.3f}, worst {max(ratios):.3f}")
    if args.save:
        args.save.write_text(json.dumps(curves))
    marks = sorted({m for c in curves for m, _ in c})
    print(f"{len(curves)} complete curves from {source}; evaluations at {marks}")
    finals = sorted(c[-1][1] for c in curves)
    print(f"final values: best {finals[0]:.4g}, median {statistics.median(finals):.4g}; "
          f"curves whose best point is not the last: {sum(min(v for _, v in c) < c[-1][1] for c in curves)}")

    settings: list[dict[str, Any]] = [{"name": "none", "startup": 0, "warmup": 0, "patience": 0, "report": "last"}]
    for startup, warm, patience, report in itertools.product((4, 8), range(len(marks) - 1), (0, 1), ("last", "best")):
        settings.append({"name": "median", "startup": startup, "warmup": marks[warm] - 1 if warm else 0,
                         "patience": patience, "report": report})
    print(f"{'pruner':<44} {'images saved':>12} {'best survived':>13} {'top 1/4 pruned':>14} {'best kept':>9}")
    rows = []
    for s in settings:
        r = replay(curves, s, args.orders, args.seed)
        rows.append((s, r))
        name = "none" if s["name"] == "none" else (f"median startup={s['startup']} warmup={s['warmup']} "
                                                    f"patience={s['patience']} report={s['report']}")
        print(f"{name:<44} {r['saved']:>12.1%} {r['best_survived']:>13.0%} {r['top_quarter_pruned']:>14.0%} "
              f"{r['best_kept']:>9.4g}")
    safe = [(s, r) for s, r in rows if r["best_survived"] >= 0.95 and s["name"] != "none"]
    if safe:
        s, r = max(safe, key=lambda sr: sr[1]["saved"])
        print(f"most images saved with the best trial kept in >= 95% of orders: {s} ({r['saved']:.1%} saved)")


if __name__ == "__main__":
    main()
