"""Does the trial budget rank configs as the production budget does? The configs a suite's searches liked best,
and the study's literature presets, each trained once to the production budget with the service's FID at every
evaluation; then, for each fraction of the production budget taken as the trial budget, how well the ranking at
that fraction agrees with the ranking at the end, and what choosing by it costs.

    python -m benchmarks.quality.fidelity --suite benchmarks/results/suite-fashion-mnist-12min-2026-12-05.json \
        --top 6 --out auto                                            # ~8 production runs, both cores
    python -m benchmarks.quality.fidelity --table benchmarks/results/fidelity-*.json   # the leave-one-out table

Candidates: the ``--top`` distinct configs (the seed aside) with the best values at the trial budget among every
completed trial of every arm of the suite file, plus each literature preset of the problem's study file
(``preset/NAME``, as the suite's preset arm trains them). Each is
trained with seed ``--seed`` (1000: the suite's first production seed, a seed no trial used) to the production
budget, evaluated every ``eval_every_images`` (the trainer has no schedule tied to the budget, so the curve up to a
fraction f is exactly a run with trial budget f), and scored at the end by the independent scorer
(``benchmarks/quality/_scorer.py``) on a noise stream no evaluation used. Per fraction f: Spearman's rho between
the service FID at f and the scorer's FID at the end, and the regret of the pick: the scorer's FID at the end of
the config with the best service FID at f, minus the best scorer's FID at the end among the candidates.

``--table`` reads several such files (one per problem) and chooses the fraction leaving one problem out: on the
others, the smallest fraction whose mean relative regret is within ``--tolerance`` of the least; then shows that
fraction's regret on the problem left out; and export rules replayed on the runs (``export_rules``).
"""

from __future__ import annotations

import json
import logging
import os
import statistics
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from joblib import Parallel, delayed

from benchmarks._common import out_path, train_changes, write_result
from benchmarks._common import parser as bench_parser
from benchmarks.quality.suite import _config_id, _sample, preset_configs, problem_spec
from trainer import TrainConfig, load_data, make_evaluator, save_generator, train
from trainer.metrics import Evaluator, SampleFn

log = logging.getLogger("benchmarks.fidelity")


def candidates(record: dict[str, Any], presets: dict[str, dict[str, Any]], top: int) -> dict[str, dict[str, Any]]:
    """Every preset (``preset/NAME``), then the ``top`` distinct configs with the best trial-budget values over every
    arm's completed trials (named ``ARM/seedS#TRIAL``)."""
    trials = [(t["value"], f"{key}#{t['number']}", t["config"]) for key, arm in record["arms"].items()
              for t in arm["trials"] if t["state"] == "COMPLETE" and t["value"] is not None and t.get("config")]
    chosen: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    for name, cfg in presets.items():
        seen.add(_config_id({**cfg, "budget_images": 0}))
        chosen[f"preset/{name}"] = cfg
    picked = 0
    for value, name, cfg in sorted(trials, key=lambda t: t[0]):
        ident = _config_id({**cfg, "budget_images": 0})
        if ident in seen or picked >= top:
            continue
        seen.add(ident)
        chosen[name] = {**cfg, "_trial_value": value}
        picked += 1
    return chosen


@dataclass
class _TwoJudges(Evaluator):
    """The service's evaluator, plus the FID under a second judge (``fid_photometric``) on every evaluation."""

    second: Callable[[SampleFn], float] | None = None

    def __call__(self, sample: SampleFn) -> dict[str, float]:
        out = super().__call__(sample)
        if self.second is not None:
            out["fid_photometric"] = self.second(sample)
        return out


def run_one(config: dict[str, Any], seed: int, images: int, every: int, scorer: Any,
            second: Callable[[SampleFn], float] | None = None, save: Path | None = None) -> dict[str, Any]:
    torch.set_num_threads(1)
    cfg = TrainConfig.from_dict({**{k: v for k, v in config.items() if not k.startswith("_")}, "seed": seed,
                                 "device": "cpu", "budget_images": images, "eval_every_images": every})
    data = load_data(cfg)
    base = make_evaluator(cfg, data)
    evaluator = base if second is None or base is None else _TwoJudges(
        **{f.name: getattr(base, f.name) for f in fields(base)}, second=second)
    result = train(cfg, data=data, evaluator=evaluator)
    curve = {str(h["mark"]): float(h["metrics"][cfg.eval_metric]) for h in result.history}
    extra = {}
    if second is not None:
        extra["curve_photometric"] = {str(h["mark"]): float(h["metrics"]["fid_photometric"]) for h in result.history}
    if save is not None:  # the final generator, to score again later under another judge or sample count
        save_generator(result.generator, cfg, data.shape, save)
    final = {k: float(v) for k, v in result.final_metrics.items() if isinstance(v, (int, float))}
    return {"seed": seed, "curve": curve, **extra, "service": final, "seconds": result.seconds,
            **scorer(lambda n, start=0: _sample(result.generator, n, start))}


def spearman(xs: list[float], ys: list[float]) -> float:
    """Spearman's rho (scipy's, ties averaged; scipy comes with scikit-learn); 0 where it is undefined."""
    from scipy.stats import spearmanr

    rho = float(spearmanr(xs, ys).statistic)
    return 0.0 if rho != rho else rho


def analyse(runs: dict[str, dict[str, Any]], images: int, curve: str = "curve") -> list[dict[str, Any]]:
    """Per evaluation mark: the fraction of the production budget, rho, the pick and its regret; ``curve``: the
    judge that picks (``curve``: the service's FID; ``curve_photometric``: the second judge's)."""
    names = list(runs)
    final = [runs[n]["fid_alt"] for n in names]
    best_final = min(final)
    marks = sorted({int(m) for n in names for m in runs[n][curve]})
    rows = []
    for mark in marks:
        at = [runs[n][curve].get(str(mark)) for n in names]
        if any(v is None for v in at):
            continue
        pick = min(range(len(names)), key=lambda i: at[i])  # type: ignore[arg-type, return-value]
        # the same pick by the mean of the last two evaluations up to the mark (one evaluation's noise halved)
        before = [m for m in marks if m < mark]
        two = [(v + runs[n][curve].get(str(before[-1]), v)) / 2 if before else v
               for n, v in zip(names, at, strict=True)]  # type: ignore[operator]
        pick2 = min(range(len(names)), key=lambda i: two[i])
        rows.append({"images": mark, "fraction": round(mark / images, 4), "rho": spearman(at, final),  # type: ignore[arg-type]
                     "pick": names[pick], "regret": final[pick] - best_final,
                     "regret_rel": (final[pick] - best_final) / best_final,
                     "pick_mean2": names[pick2], "regret_rel_mean2": (final[pick2] - best_final) / best_final})
    return rows


SERVICE_RULES: dict[str, Any] = {  # a choice among configs by the service's own metrics at the production budget
    "FID": lambda m: m["fid"],
    "recall": lambda m: -m["recall"],
    "coverage": lambda m: -m["coverage"],
}


def service_picks(runs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Which config each of the service's metrics at the production budget ranks first, and its regret under the
    scorer; ``FID + coverage ranks``: the least sum of the two ranks (ties to the better FID)."""
    names = [n for n in runs if runs[n].get("service")]
    final = {n: runs[n]["fid_alt"] for n in names}
    best = min(final.values())
    rank = {rule: {n: i for i, n in enumerate(sorted(names, key=lambda n, f=f: f(runs[n]["service"])))}
            for rule, f in SERVICE_RULES.items()}
    picks = {rule: min(names, key=rank[rule].__getitem__) for rule in SERVICE_RULES}
    picks["FID + coverage ranks"] = min(names, key=lambda n: (rank["FID"][n] + rank["coverage"][n], rank["FID"][n]))
    return {rule: {"pick": n, "regret_rel": (final[n] - best) / best} for rule, n in picks.items()}


def export_rules(runs: dict[str, dict[str, Any]], mark: int, k: int = 3, curve: str = "curve") -> dict[str, dict[str, Any]]:
    """Export rules replayed on these runs, choosing at the trial budget ``mark``: the pick of each (a confirmation
    picks by the service's FID at the production budget) and its regret under the scorer. ``best at trial
    budget``: no confirmation (what the suite's arms export); ``confirm top K``: the shipped rule; ``confirm top
    K-1 + best preset``: one of the K confirmations kept for the literature preset that did best at the trial
    budget. (The replay confirms on the same seed the truth is measured on; real confirmations use fresh seeds.)"""
    names = list(runs)
    final = {n: runs[n]["fid_alt"] for n in names}
    best_final = min(final.values())
    at = {n: runs[n][curve][str(mark)] for n in names}
    end = {n: list(runs[n][curve].values())[-1] for n in names}
    by_trial = sorted(names, key=at.__getitem__)
    presets = [n for n in by_trial if n.startswith("preset/")]
    searched = [n for n in by_trial if not n.startswith("preset/")]
    pools = {"best at trial budget": by_trial[:1], f"confirm top {k}": by_trial[:k],
             f"confirm top {k - 1} + best preset": searched[:k - 1] + presets[:1], "confirm all": names}
    out = {}
    for rule, pool in pools.items():
        pick = min(pool, key=end.__getitem__)
        out[rule] = {"pick": pick, "regret": final[pick] - best_final, "regret_rel": (final[pick] - best_final) / best_final}
    return out


GRID = (1 / 12, 1 / 6, 1 / 4, 1 / 3, 1 / 2, 2 / 3, 5 / 6, 1.0)  # trial budgets as fractions of production


def at_fraction(record: dict[str, Any], f: float) -> float | None:
    """The relative regret at trial budget ``f``: at the last evaluation within it (a trial ends on one)."""
    within = [r for r in record["fractions"] if r["images"] <= f * record["production_images"] + 0.5]
    return within[-1]["regret_rel"] if within else None


def loo_table(files: list[Path], tolerance: float) -> str:
    """Per problem, the regret at each trial budget; the budget chosen leaving each problem out (on the others,
    the smallest whose mean regret is within ``tolerance`` of the least) and its regret on the problem left out;
    then the export rules replayed at one third (the shipped trial budget)."""
    per: dict[str, dict[float, float | None]] = {}
    records: dict[str, Any] = {}
    for file in files:
        for problem, record in json.loads(file.read_text())["results"].items():
            record["fractions"] = analyse(record["runs"], record["production_images"])  # (a file cut off: its runs)
            records[problem] = record
            per[problem] = {f: at_fraction(record, f) for f in GRID}
    fractions = [f for f in GRID if all(per[p][f] is not None for p in per)]
    head = ["| problem | " + " | ".join(f"{f:.3f}" for f in fractions) + " |", "| --- |" + " ---: |" * len(fractions)]
    head += [f"| {p} | " + " | ".join(f"{per[p][f]:+.1%}" for f in fractions) + " |" for p in per]
    lines = ["| left out | trial budget chosen on the others | its regret there | regret at 1/3 (shipped) |",
             "| --- | ---: | ---: | ---: |"]
    for left in per if len(per) > 1 else []:
        others = [p for p in per if p != left]
        mean = {f: statistics.fmean(float(per[p][f] or 0.0) for p in others) for f in fractions}
        least = min(mean.values())
        chosen = min(f for f in fractions if mean[f] <= least + tolerance)
        lines.append(f"| {left} | {chosen:.3f} | {per[left][chosen]:+.1%} | {per[left][1 / 3]:+.1%} |")
    rules: dict[str, dict[str, Any]] = {}
    for problem, record in records.items():
        third = max(r["images"] for r in record["fractions"] if r["images"] <= record["production_images"] / 3 + 0.5)
        rules[problem] = export_rules(record["runs"], third)
    names = list(next(iter(rules.values())))
    export = ["| problem | " + " | ".join(names) + " |", "| --- |" + " ---: |" * len(names)]
    export += [f"| {p} | " + " | ".join(f"{r[n]['regret_rel']:+.1%} (`{r[n]['pick']}`)" for n in names) + " |"
               for p, r in rules.items()]
    export += [""] + rule_loo(rules, "confirm top 3")
    smooth = ["| problem | regret at 1/3, last evaluation | at 1/3, mean of the last two | at 1, last | at 1, mean of two |",
              "| --- | ---: | ---: | ---: | ---: |"]
    for p, record in records.items():
        third = [r for r in record["fractions"] if r["images"] <= record["production_images"] / 3 + 0.5][-1]
        end = record["fractions"][-1]
        smooth.append(f"| {p} | {third['regret_rel']:+.1%} | {third['regret_rel_mean2']:+.1%} | "
                      f"{end['regret_rel']:+.1%} | {end['regret_rel_mean2']:+.1%} |")
    picks = {p: service_picks(r["runs"]) for p, r in records.items() if any("service" in v for v in r["runs"].values())}
    service = []
    if picks:
        rules_ = list(next(iter(picks.values())))
        service = ["| problem | " + " | ".join(f"by service {r}" for r in rules_) + " |", "| --- |" + " ---: |" * len(rules_)]
        service += [f"| {p} | " + " | ".join(f"{v[r]['regret_rel']:+.1%} (`{v[r]['pick']}`)" for r in rules_) + " |"
                    for p, v in picks.items()]
    return "\n".join(head + [""] + lines + [""] + export + [""] + smooth + [""] + service + [""] + judge_table(records))


def rule_loo(rules: dict[str, dict[str, dict[str, Any]]], shipped: str) -> list[str]:
    """Export rules chosen leaving one problem out: on the others, the rule with the least mean regret (ties to the
    cheaper rule, in the order given: no confirmation first); its regret on the problem left out beside the
    shipped rule's."""
    if len(rules) < 2:
        return []
    lines = [f"| left out | export rule chosen on the others | its regret there | `{shipped}` (shipped) there |",
             "| --- | --- | ---: | ---: |"]
    for left, mine in rules.items():
        others = [r for p, r in rules.items() if p != left]
        mean = {rule: statistics.fmean(o[rule]["regret_rel"] for o in others) for rule in mine}
        chosen = min(mean, key=lambda rule: (round(mean[rule], 6), list(mine).index(rule)))
        lines.append(f"| {left} | {chosen} | {mine[chosen]['regret_rel']:+.1%} | {mine[shipped]['regret_rel']:+.1%} |")
    return lines


def judge_table(records: dict[str, Any]) -> list[str]:
    """Where the runs carry the second judge's curve: the two judges side by side, each picking on its own FID
    (at 1/3, confirming the top 3 at the production budget, at the production budget) and its rank agreement with
    the scorer at the end; regrets under the scorer."""
    rows = ["| problem | judge | rho with the scorer at the end | pick at 1/3 | confirm top 3 | pick at 1 |",
            "| --- | --- | ---: | ---: | ---: | ---: |"]
    for problem, record in records.items():
        if not all("curve_photometric" in r for r in record["runs"].values()):
            continue
        for name, curve in (("service", "curve"), ("photometric", "curve_photometric")):
            fr = analyse(record["runs"], record["production_images"], curve)
            third = [r for r in fr if r["images"] <= record["production_images"] / 3 + 0.5][-1]
            confirm = export_rules(record["runs"], third["images"], curve=curve)["confirm top 3"]
            end = fr[-1]
            rows.append(f"| {problem} | {name} | {end['rho']:.2f} | {third['regret_rel']:+.1%} (`{third['pick']}`) | "
                        f"{confirm['regret_rel']:+.1%} (`{confirm['pick']}`) | {end['regret_rel']:+.1%} (`{end['pick']}`) |")
    return rows if len(rows) > 2 else []


def _at_trial_budget(config: dict[str, Any], seed: int) -> float:
    torch.set_num_threads(1)
    cfg = TrainConfig.from_dict({**{k: v for k, v in config.items() if not k.startswith("_")}, "seed": seed,
                                 "device": "cpu"})
    data = load_data(cfg)
    return float(train(cfg, data=data, evaluator=make_evaluator(cfg, data)).final_metrics[cfg.eval_metric])


def trial_noise(args: Any, problem: str, configs: dict[str, dict[str, Any]], jobs: int) -> None:
    """The seed spread of a trial's value: each config at its trial budget with seeds 0, 1, ... (the search trains
    every trial with the study's seed; another seed is another draw of the same config's value)."""
    tasks = [(name, seed) for name in configs for seed in range(args.noise_seeds)]
    values = Parallel(n_jobs=jobs)(delayed(_at_trial_budget)(configs[n], s) for n, s in tasks)
    out: dict[str, list[float]] = {}
    for (name, _), value in zip(tasks, values, strict=True):
        out.setdefault(name, []).append(value)
    print(f"{problem}: the service's FID at the trial budget, seeds 0-{args.noise_seeds - 1}")
    for name, vals in out.items():
        print(f"  {name:<28} {statistics.fmean(vals):7.2f} +- {statistics.pstdev(vals):5.2f}   "
              + " ".join(f"{v:.2f}" for v in vals))
    write_result(args, {"results": {problem: {"trial_noise": out,
                                              "budget_images": {n: c["budget_images"] for n, c in configs.items()}}}})


def _run_dir(root: Path, name: str) -> Path:
    return root / name.replace("/", "_").replace("#", "-")


def _rescore_one(gen_dir: Path, cfg: TrainConfig, data: Any, streams: int,
                 second: Callable[[SampleFn], float] | None) -> dict[str, list[float]]:
    from trainer import load_generator
    from trainer.noise import fixed_sampler

    torch.set_num_threads(1)
    gen = load_generator(gen_dir)
    evaluator = make_evaluator(cfg, data)
    assert evaluator is not None
    out: dict[str, list[float]] = {"fid": [], "fid_photometric": []}
    for s in range(streams):  # noise streams no evaluation of the run and not the scorer's (424242) used
        sample = fixed_sampler(gen, 7000 + s)
        out["fid"].append(evaluator(sample)[cfg.eval_metric])
        if second is not None:
            out["fid_photometric"].append(second(sample))
    return out


def rescore(args: Any, problem: str, path: Path, data: Any, jobs: int) -> None:
    """The final generators kept by ``--save``, scored again by the service's FID with ``--samples`` images over
    ``--streams`` noise streams: how much of the service's disagreement with the scorer is its own sampling noise
    (a trial's evaluation uses ``eval_samples``, 2,000 in the shipped files) rather than its features."""
    record = json.loads(path.read_text())["results"][problem]
    runs, configs = record["runs"], record["configs"]
    names = [n for n in runs if _run_dir(args.save, n).is_dir()]
    truth = {n: runs[n]["fid_alt"] for n in names}
    best = min(truth.values())
    second, net = None, None
    if args.photometric:
        from benchmarks.quality.judges import photometric_fid, photometric_net

        net = photometric_net(data)  # trained once, its reference statistics per sample count
    report: dict[str, Any] = {}
    for n_samples in args.samples:
        cfg = TrainConfig.from_dict({**configs[names[0]], "device": "cpu", "eval_samples": n_samples, "share_samples": 0})
        make_evaluator(cfg, data)  # real statistics cached before the workers start
        if net is not None:
            second = photometric_fid(data, n_samples, net)
        scores = Parallel(n_jobs=jobs)(delayed(_rescore_one)(_run_dir(args.save, n), cfg, data, args.streams, second)
                                       for n in names)
        per = dict(zip(names, scores, strict=True))
        report[str(n_samples)] = per
        print(f"{problem}: the service's FID on {n_samples} samples, {args.streams} noise streams, "
              f"at {record['production_images']} images")
        for judge in ("fid", "fid_photometric") if args.photometric else ("fid",):
            mean = {n: statistics.fmean(per[n][judge]) for n in names}
            for n in sorted(names, key=truth.__getitem__):
                print(f"  {judge:<16} {n:<28} scorer {truth[n]:7.2f}   {mean[n]:7.2f} +- {statistics.pstdev(per[n][judge]):5.2f}")
            one = [spearman([per[n][judge][s] for n in names], [truth[n] for n in names]) for s in range(args.streams)]
            pick = min(names, key=mean.__getitem__)
            print(f"  {judge}: rho with the scorer {spearman(list(mean.values()), list(truth.values())):.2f} (mean of streams),"
                  f" {statistics.fmean(one):.2f} (one stream); pick {pick}, regret {(truth[pick] - best) / best:+.1%}")
        write_result(args, {"results": {problem: {"rescore": report, "streams": args.streams}}})  # each count kept


def main() -> None:
    ap = bench_parser(__doc__, "fidelity")
    ap.add_argument("--suite", help="a suite result file (one problem) holding the arms' trials and the presets")
    ap.add_argument("--top", type=int, default=6)
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--table", nargs="+", type=Path, metavar="JSON")
    ap.add_argument("--tolerance", type=float, default=0.05)
    ap.add_argument("--resume", action="store_true", help="keep the runs already in --out; run the rest")
    ap.add_argument("--trial-noise", nargs="+", metavar="NAME",
                    help="instead: these candidates at the trial budget with --noise-seeds seeds (0, 1, ...) each")
    ap.add_argument("--noise-seeds", type=int, default=4)
    ap.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                    help="with --trial-noise: train keys set on every candidate (YAML values), e.g. ema_warmup=false")
    ap.add_argument("--rescore", type=Path, metavar="JSON",
                    help="instead: score the generators --save kept for this fidelity file again (--samples, --streams)")
    ap.add_argument("--samples", nargs="+", type=int, default=[2000, 10000])
    ap.add_argument("--streams", type=int, default=3)
    ap.add_argument("--save", type=Path, metavar="DIR", help="keep each run's final generator under DIR/NAME")
    ap.add_argument("--photometric", action="store_true",
                    help="also the FID under the photometric domain network at every evaluation (a second judge)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    if args.table:
        print(loo_table(args.table, args.tolerance))
        return
    if not args.suite:
        raise SystemExit("--suite must name a suite result file (or use --table FILE...)")
    if args.set and not args.trial_noise:
        raise SystemExit("--set goes with --trial-noise (it changes the candidates trained at the trial budget)")
    from benchmarks.quality._scorer import make_scorer

    records = json.loads(Path(args.suite).read_text())["results"]
    if len(records) != 1:
        raise SystemExit(f"--suite must hold one problem, but {args.suite} holds {', '.join(records)}")
    (problem, record), = records.items()
    configs = candidates(record, preset_configs(problem_spec(problem, args.data_root)), args.top)
    if args.data_root:
        configs = {k: {**c, "data_root": args.data_root} for k, c in configs.items()}
    images = int(record["production_images"])
    base = TrainConfig.from_dict({**next(iter(configs.values())), "device": "cpu"})
    every = base.eval_every_images
    data = load_data(base)
    make_evaluator(base, data)  # feature network and real statistics cached before the workers start
    scorer = make_scorer(data)
    jobs = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if args.trial_noise:
        changes = train_changes(args.set)
        trial_noise(args, problem, {n: {**configs[n], **changes} for n in args.trial_noise}, jobs)
        return
    if args.rescore:
        if not args.save:
            raise SystemExit("--rescore needs --save DIR (where the fidelity run kept its generators)")
        rescore(args, problem, args.rescore, data, jobs)
        return
    second = None
    if args.photometric:
        from benchmarks.quality.judges import photometric_fid

        second = photometric_fid(data, base.eval_samples)  # trained once here, shipped to the workers
    path = out_path(args.out, args.benchmark)
    done: dict[str, Any] = {}
    if args.resume and path is not None and path.exists():
        done = json.loads(path.read_text())["results"][problem]["runs"]
    todo = [name for name in configs if name not in done]
    log.info("%s: %d candidates (%d to run) to %d images, eval every %d, %d jobs", problem, len(configs), len(todo),
             images, every, jobs)

    def save(runs: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        write_result(args, {"results": {problem: {
            "production_images": images, "runs": runs, "fractions": rows,
            "configs": {k: {kk: vv for kk, vv in c.items() if not kk.startswith("_")} for k, c in configs.items()}}}})

    runs = dict(done)
    results = Parallel(n_jobs=jobs, return_as="generator")(
        delayed(run_one)(configs[name], args.seed, images, every, scorer, second,
                         _run_dir(args.save, name) if args.save else None) for name in todo)
    for name, run in zip(todo, results, strict=True):  # saved as each finishes: --resume carries on
        runs[name] = {**run, "trial_value": configs[name].get("_trial_value")}
        save(runs, [])
    runs = {name: runs[name] for name in configs}
    rows = analyse(runs, images)
    print(f"{problem}: {len(runs)} configs at {images} images (seed {args.seed})")
    for name, run in sorted(runs.items(), key=lambda kv: kv[1]["fid_alt"]):
        tv = run["trial_value"]
        print(f"  {name:<28} scorer FID {run['fid_alt']:7.2f}  service FID at end {list(run['curve'].values())[-1]:7.2f}"
              f"  search's trial value {'-' if tv is None else f'{tv:.2f}'}")
    print(f"{'images':>8} {'fraction':>8} {'rho':>6} {'regret':>8} {'rel':>7}  pick")
    for r in rows:
        print(f"{r['images']:>8} {r['fraction']:>8.3f} {r['rho']:>6.2f} {r['regret']:>8.2f} {r['regret_rel']:>7.1%}  "
              f"{r['pick']}")
    save(runs, rows)


if __name__ == "__main__":
    main()
