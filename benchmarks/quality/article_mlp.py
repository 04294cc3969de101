"""The origin article's MLP GAN: which budget gives every digit, and what searching its settings gains.

    python -m benchmarks.quality.article_mlp --data-root ../shared/data/mnist --budgets 128000 768000 1536000 3072000 \
        --seeds 0 1 2 --search-trials 24 --final-budget 1536000

1. The article's own settings (``configs/article-mlp.yaml``: BCE, Adam 2e-4, beta1 0.5, batch 256) trained for
   each budget and seed: FID and mode coverage (the share of samples the domain classifier gives each digit).
2. ``studies/seed-mlp.yaml`` searched for ``--search-trials`` trials (its own short trial budget), then its best
   config trained at ``--final-budget`` with the same seeds: equal compute for the production run, against the
   article's settings at the same budget. The search's own cost is printed beside it.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from typing import Any

from benchmarks._common import parser as bench_parser
from benchmarks._common import write_result
from search import StudySpec, create_or_load_study, plan, run_workers
from search.results.export import best_trial
from trainer import TrainConfig, load_data, make_evaluator, resolve_device, train
from trainer.metrics import class_shares, feature_network, features, sampled
from trainer.noise import fixed_sampler


def score(cfg: TrainConfig, data: Any) -> dict[str, Any]:
    t0 = time.perf_counter()
    result = train(cfg, data=data, evaluator=make_evaluator(cfg, data, cfg.device))
    net, _ = feature_network(cfg, data, cfg.device)
    shares = class_shares(net, features(net, sampled(fixed_sampler(result.generator, cfg.seed + 1), cfg.eval_samples)))
    return {"fid": result.final_metrics["fid"], "class_min": min(shares), "class_max": max(shares),
            "shares": shares, "seconds": round(time.perf_counter() - t0, 1), "images_per_s": round(result.images_per_s)}


def summary(rows: list[dict[str, Any]]) -> str:
    fids = [r["fid"] for r in rows]
    spread = statistics.pstdev(fids) if len(fids) > 1 else 0.0
    return (f"FID {statistics.fmean(fids):7.2f} +- {spread:5.2f}   rarest digit {min(r['class_min'] for r in rows):.1%} "
            f"(mean {statistics.fmean(r['class_min'] for r in rows):.1%})   commonest {max(r['class_max'] for r in rows):.1%}"
            f"   {statistics.fmean(r['seconds'] for r in rows):.0f} s/run")


def main() -> None:
    parser = bench_parser(__doc__, "article-mlp")
    parser.add_argument("--config", default="configs/article-mlp.yaml")
    parser.add_argument("--study", default="studies/seed-mlp.yaml")
    parser.add_argument("--data-root", default="../shared/data/mnist")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--budgets", type=int, nargs="+", default=[128_000, 768_000, 1_536_000])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--search-trials", type=int, default=24)
    parser.add_argument("--final-budget", type=int, default=1_536_000)
    parser.add_argument("--trial-images", type=int, default=None, help="override the study's per-trial budget")
    args = parser.parse_args()

    device = resolve_device(args.device)
    article = TrainConfig.from_file(args.config, [f"data_root={args.data_root}", f"device={device}"])
    data = load_data(article, device)
    report: dict[str, Any] = {"article": {}, "search": {}}
    print(f"article settings ({args.config}), seeds {args.seeds}:")
    for budget in args.budgets:
        rows = [score(article.replace(budget_images=budget, eval_every_images=budget, seed=s), data) for s in args.seeds]
        report["article"][budget] = rows
        print(f"  {budget:>9} images: {summary(rows)}")

    spec = StudySpec.from_file(args.study)
    with tempfile.TemporaryDirectory() as tmp:
        raw = {**spec.raw, "train": {**spec.raw["train"], "data_root": args.data_root, "device": str(device)},
               "storage": {"url": f"sqlite:///{tmp}/mlp.db", "artifacts": f"{tmp}/art"}}
        if args.trial_images:
            raw["budget"] = {**raw["budget"], "trial_images": args.trial_images,
                             "eval_every_images": min(args.trial_images, raw["budget"]["eval_every_images"])}
            raw["pruner"] = {**raw["pruner"], "args": {**raw["pruner"].get("args", {}), "n_warmup_steps": 0}}
        spec = StudySpec.from_dict(raw, source=args.study).with_overrides(n_trials=args.search_trials)
        t0 = time.perf_counter()
        study = create_or_load_study(spec)
        plan(study, spec.n_trials, spec.warm_start)
        run_workers(spec.name, spec.storage, 1, artifacts=spec.artifacts)
        search_s = time.perf_counter() - t0
        best = best_trial(study)
        # images the search trained: each trial's last evaluation mark (pruned trials stop early)
        search_images = sum(max(t.intermediate_values, default=0) for t in study.get_trials(deepcopy=False))
    found = TrainConfig.from_dict(best.user_attrs["config"])
    print(f"{args.study}: {args.search_trials} trials, {search_images:,} images in {search_s:.0f} s; best trial {best.number} "
          f"(FID {best.value:.2f} at {found.budget_images} images): {best.params}")
    final = found.replace(budget_images=args.final_budget, eval_every_images=args.final_budget)
    rows = [score(final.replace(seed=s), data) for s in args.seeds]
    same = [score(article.replace(budget_images=args.final_budget, eval_every_images=args.final_budget, seed=s), data)
            for s in args.seeds] if args.final_budget not in args.budgets else report["article"][args.final_budget]
    report["search"] = {"seconds": search_s, "images": search_images, "best_params": best.params,
                        "best_value": best.value, "retrained": rows}
    print(f"at {args.final_budget} images (equal compute), seeds {args.seeds}:")
    print(f"  article settings: {summary(same)}")
    print(f"  searched config:  {summary(rows)}")
    write_result(args, report)


if __name__ == "__main__":
    main()
