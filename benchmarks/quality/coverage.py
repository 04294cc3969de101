"""Coverage against FID alone: two study files at equal wall-clock, each export confirmed at the production budget.

    python -m benchmarks.quality.coverage --data-root ../shared/data/mnist --minutes 10 \
        --studies studies/mnist-dcgan.yaml studies/mnist-coverage.yaml --seeds 3 --images 192000

Each arm runs its study file as shipped (only storage, clock, sampler seed and ``share_samples``, the number of
generated images the class shares are counted on, changed: the same measurement in every arm) for ``--minutes`` of
wall-clock with ``--workers`` local workers, then exports with ``--confirm K --seeds S --images N`` (K: each
study file's ``export.confirm`` unless ``--confirm`` gives one for all or one per file): the top K configs re-run
with S fresh seeds at N images, ranked by the study's rule (feasible first, then mean FID), and the winner's run
exported. Printed side by side: per arm, the winner's FID, recall, coverage and smallest class
share under the domain classifier for each seed, beside the real held-out split's shares. JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna

from benchmarks._common import parser as bench_parser
from benchmarks._common import write_result
from search import StudySpec, api, create_or_load_study, run_workers
from search.strategy.schedulers import scheduler_for
from trainer import load_data
from trainer.io import cache_dir
from trainer.metrics import class_shares, domain_net, features
from trainer.precision import clear_memo

log = logging.getLogger("benchmarks.coverage")


def search(path: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Run one study file for the wall-clock budget (sampler seed, storage, clock and share_samples changed)."""
    raw = StudySpec.from_file(path).raw
    raw = {**raw, "train": {**raw["train"], "data_root": args.data_root, "share_samples": args.share_samples},
           "sampler": {**raw.get("sampler", {}), "seed": args.seed},
           "storage": {**raw.get("storage", {}), "url": f"sqlite:///{tmp / 'study.db'}", "artifacts": str(tmp / "art")}}
    spec = StudySpec.from_dict(raw, source=path).with_overrides(n_trials=100_000, timeout=args.minutes * 60)
    study = create_or_load_study(spec)
    scheduler_for(spec).plan(study, spec.n_trials)
    # every arm probes precision afresh: with the first arm's decisions cached, the second skipped ~5 probes of
    # ~25 s (commit 5abd5de: 15 search trials against 12 in the same 15 minutes, the same trials otherwise)
    shutil.rmtree(cache_dir() / "precision", ignore_errors=True)
    clear_memo()
    t0 = time.perf_counter()
    run_workers(spec.name, spec.storage, args.workers, artifacts=spec.artifacts, timeout=spec.timeout)
    trials = study.get_trials(deepcopy=False)
    states = [t.state.name for t in trials]
    return {"study": path, "name": spec.name, "storage": spec.storage, "search_seconds": round(time.perf_counter() - t0, 1),
            "trials": {s: states.count(s) for s in sorted(set(states))},
            "feasible_trials": sum(1 for t in trials if t.user_attrs.get("feasible")),
            "constraints": [str(c) for c in spec.constraints]}


def confirm(result: dict[str, Any], top_k: int, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Export the arm's study confirmed at the production budget (the top K configs, S fresh seeds each)."""
    t0 = time.perf_counter()
    exported = api.export(result["name"], tmp / "export", storage=result["storage"], confirm=top_k,
                          seeds=args.seeds, images=args.images, workers=args.confirm_workers, plotlyjs="cdn")
    rows = exported["confirmation"]
    trials = optuna.load_study(study_name=result["name"], storage=result["storage"]).get_trials(deepcopy=False)
    for row in rows:
        row["class_min_share_per_seed"] = [min(s) for s in row["class_shares"]] if row.get("class_shares") else None
        row["params"] = trials[row["trial"]].params  # the databases are temporary: keep what each config was
    return {**result, "confirmed_configs": top_k, "confirm_seconds": round(time.perf_counter() - t0, 1),
            "winner": rows[0] if rows else None,
            "confirmation": rows, "exported_run": exported["trial"]}


def real_shares(data_root: str, study: str) -> list[float]:
    """The real held-out split's class shares under the same domain classifier (what 'every digit' means)."""
    spec = StudySpec.from_file(study)
    cfg = spec.train.replace(data_root=data_root)
    data = load_data(cfg)
    net, _ = domain_net(data)
    held = data.holdout[:cfg.eval_samples]
    return class_shares(net, features(net, (held[i:i + 500] for i in range(0, len(held), 500))))


def show(results: list[dict[str, Any]], real: list[float], images: int, seeds: int) -> str:
    lines = [f"real held-out split, domain classifier: every digit {min(real):.1%}-{max(real):.1%} "
             f"({', '.join(f'{v:.1%}' for v in real)})", "",
             f"| study | search trials (feasible) | configs confirmed | winner | FID per seed at {images:,} | mean | "
             "recall | coverage | "
             "smallest class share per seed | every digit >= 7% |", "|---|---|---:|---|---|---:|---:|---:|---|---|"]
    for r in results:
        w = r["winner"]
        if w is None:
            lines.append(f"| {r['study']} | {r['trials']} | {r['confirmed_configs']} | - | no confirmation completed "
                         "| | | | | |")
            continue
        mins = w["class_min_share_per_seed"] or []
        runs = w["run_metrics"]
        recall = statistics.fmean(m["recall"] for m in runs)
        cover = statistics.fmean(m["coverage"] for m in runs)
        lines.append(f"| {Path(r['study']).name} | {sum(r['trials'].values())} ({r['feasible_trials']}) | "
                     f"{r['confirmed_configs']} | trial "
                     f"{w['trial']} | {', '.join(f'{v:.2f}' for v in w['seed_values'])} | {w['mean']:.2f} +- "
                     f"{w['std']:.2f} | {recall:.3f} | {cover:.3f} | {', '.join(f'{v:.1%}' for v in mins)} | "
                     f"{'yes' if mins and min(mins) >= 0.07 else 'no'} |")
    return "\n".join(lines)


def main() -> None:
    parser = bench_parser(__doc__, "coverage-mnist", out="auto")
    parser.add_argument("--studies", nargs="+", default=["studies/mnist-dcgan.yaml", "studies/mnist-coverage.yaml"])
    parser.add_argument("--data-root", default="../shared/data/mnist")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0, help="sampler seed of every arm")
    parser.add_argument("--confirm", type=int, nargs="+",
                        help="configs confirmed per arm: one number for every arm, or one per study file "
                             "(default: each study file's export.confirm, else 2)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--images", type=int, default=192_000)
    parser.add_argument("--confirm-workers", type=int, default=2)
    parser.add_argument("--share-samples", type=int, default=10_000,
                        help="generated images the class shares are counted on, in every arm (the measurement)")
    args = parser.parse_args()
    if args.confirm is None:
        top_ks = [StudySpec.from_file(path).export.confirm or 2 for path in args.studies]
    elif len(args.confirm) in (1, len(args.studies)):
        top_ks = args.confirm * len(args.studies) if len(args.confirm) == 1 else args.confirm
    else:
        parser.error(f"--confirm takes one number or one per study ({len(args.studies)}), but got {args.confirm}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    real = real_shares(args.data_root, args.studies[0])
    tmps = [Path(tempfile.mkdtemp(prefix="coverage-")) for _ in args.studies]
    try:  # every search first (the timed part, nothing else running), then the confirmations (untimed)
        searched = [search(path, args, tmp) for path, tmp in zip(args.studies, tmps, strict=True)]
        print(json.dumps(searched, indent=1), flush=True)
        results = []
        for result, top_k, tmp in zip(searched, top_ks, tmps, strict=True):
            results.append(confirm(result, top_k, args, tmp))
            print(show(results, real, args.images, args.seeds), flush=True)
    finally:
        for tmp in tmps:
            shutil.rmtree(tmp, ignore_errors=True)
    written = write_result(args, {"real_shares": real, "arms": results})
    print(f"\nwritten: {written}")


if __name__ == "__main__":
    main()
