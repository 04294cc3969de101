"""Which pruner settings fit GAN curves: replay complete, unpruned FID curves through Optuna's pruners.

    python -m benchmarks.quality.pruning --study studies/digits-quick.yaml --trials 30          # trains the curves
    python -m benchmarks.quality.pruning --curves runs/bench/search-mnist-2026-11-26.json                   # reuses a benchmark's

Curves come from trials that were never pruned (random search, full budget): either trained here, or the
``random`` arm of ``benchmarks/quality/suite.py``. Each candidate setting is replayed through a real
Optuna study (in memory) over many random orders of the same curves; for each it prints the share of
training images saved, how often the best trial (by final value) survived, how many of the top quarter
were pruned, and the best final value the study kept (mean over orders). A setting is good when it saves
images without pruning the trials that would have ended best.
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
    results = json.loads(path.read_text())["results"]
    curves = []
    for key, r in results.items():
        if key.startswith("random/"):
            curves += [[(int(k), float(v)) for k, v in t["curve"].items()] for t in r["trials"]
                       if t["state"] == "COMPLETE" and t["curve"]]
    return curves


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
    parser.add_argument("--curves", type=Path, default=None, help="a benchmarks/quality/suite.py --study JSON")
    parser.add_argument("--orders", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", type=Path, default=None, help="write the curves here (JSON)")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    logging.basicConfig(level=logging.WARNING)

    if args.curves:
        curves = curves_from_benchmark(args.curves)
        source = str(args.curves)
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
