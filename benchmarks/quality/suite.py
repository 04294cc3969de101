"""The search benchmark: on several GAN problems, does the shipped study find a better config than the
alternatives, at equal wall-clock, judged at the production budget by a scorer the search never saw?

    python -m benchmarks.quality.suite --problems digits --minutes 2 --seeds 0 1          # minutes on 2 cores
    python -m benchmarks.quality.suite --problems digits mnist fashion-mnist stacked-mnist \
        --data-root ../shared/data/mnist --minutes 15 --seeds 0 1 --out auto             # hours
    taskset -c 0 python -m benchmarks.quality.suite --problems fashion-mnist --minutes 15 --seeds 0 1 \
        --out benchmarks/results/suite-fashion.json --resume    # one core, the other free; resumable
    python -m benchmarks.quality.suite --study studies/mnist-dcgan.yaml --data-root ../shared/data/mnist \
        --minutes 15 --seeds 0 --workers 1 2 4                                           # search progress only

Problems (``--problems``; each with its shipped study file, ``PROBLEMS``): digits (scikit-learn 8x8), MNIST,
Fashion-MNIST (Debian's dataset-fashion-mnist) and Stacked MNIST (1000 modes). Arms, each given the same
wall-clock (``--minutes``) to choose its config, one after another:

- ``shipped``: the problem's study file as a user gets it (warm starts, pruner, guard, TPE), one worker;
- ``plain``: Optuna as a user scripts it: ``TPESampler(seed)`` + ``MedianPruner()`` (Optuna's defaults), the same
  trainer, space and trial budget, no warm starts, no loss guard, a plain EMA (``ema_warmup: false``), its best trial
  retrained;
- ``random``: ``RandomSampler(seed)``, no pruning;
- ``preset``: no search: each literature preset the study file names, trained once per production seed at the
  production budget; the row is the best preset by the independent FID (an oracle pick, outside the clock);
- ``transfer``: the shipped study with ``warm_start: [{study: the previous problem's shipped study, top: 3}]``.

Every chosen config is then trained at the production budget (the study file's ``export.images``, or
``--production-images``) with ``--production-seeds`` fresh training seeds (1000, 1001, ...), outside the clock,
and scored by ``benchmarks/quality/_scorer.py``: FID, recall and coverage under a second classifier (another
architecture and seed, trained on the training split; reference: the held-out split), plus the service's own
FID and, on Stacked MNIST, modes and mode KL (26,000 samples). "min to preset": the first minute at which the
arm's best trial (service FID at the trial budget) is at least as good as the best preset's service FID at the
production budget. The table: problems x arms, mean +- std over sampler seeds x production seeds.

With ``--out``, the JSON is rewritten after every arm and production run and ``--resume`` carries on from it; the
shipped studies' databases are kept beside it (``NAME-studies/``), where a later run's transfer arm finds them
(``--transfer-from PROBLEM`` or ``--transfer-from PATH/study.db`` for the first problem of a run). Torch uses the
cores the process may run on.

``--study FILE`` keeps the older comparison of search progress only (``--workers``: gan-search with K workers,
``handwritten`` = plain, ``random``; each winner retrained at the trial budget; ``--pbt-study`` adds PBT).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
import torch
from joblib import Parallel, delayed

from benchmarks._common import machine, out_path, write_result
from benchmarks._common import parser as bench_parser
from search import StudySpec, create_or_load_study, run_workers, suggest_config
from search.results.selection import ranked
from search.spec.study_file import apply_params
from search.strategy.schedulers import scheduler_for
from search.strategy.transfer import resolve as resolve_warm_from
from trainer import TrainConfig, load_data, make_evaluator, train

log = logging.getLogger("benchmarks.suite")


# ---------------------------------------------------------------- arms
def gan_search_arm(spec: StudySpec, seed: int, workers: int, budget_s: float, tmp: Path,
                   artifacts: Path | None = None) -> dict[str, Any]:
    """The shipped study file, only the sampler seed, the storage and the clock changed."""
    raw = {**spec.raw, "sampler": {**spec.raw.get("sampler", {}), "seed": seed}}
    raw["storage"] = {**raw.get("storage", {}), "url": f"sqlite:///{tmp / 'study.db'}",
                      "artifacts": str(artifacts or tmp / "art")}
    arm_spec = StudySpec.from_dict(raw, source="benchmark").with_overrides(n_trials=100_000, timeout=budget_s)
    start = datetime.now()
    arm_spec = resolve_warm_from(arm_spec, ranked)  # (the transfer arm: another problem's study, read inside the clock)
    study = create_or_load_study(arm_spec)
    scheduler_for(arm_spec).plan(study, arm_spec.n_trials)
    run_workers(arm_spec.name, arm_spec.storage, workers, artifacts=arm_spec.artifacts, timeout=budget_s)
    record = _record(study, start, budget_s)
    record["storage"], record["study"] = arm_spec.storage, arm_spec.name
    return record


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
        cfg = suggest_config(trial, spec).replace(device="cpu", ema_warmup=False)  # Optuna as scripted: a plain EMA
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


# ---------------------------------------------------------------- the suite: problems x arms at production budget
PROBLEMS = {  # problem -> (its shipped study file, whether it reads the MNIST files under --data-root)
    "digits": ("studies/digits-quick.yaml", False),
    "mnist": ("studies/mnist-dcgan.yaml", True),
    "fashion-mnist": ("studies/fashion-mnist.yaml", False),
    "stacked-mnist": ("studies/stacked-mnist.yaml", True),
}
SUITE_ARMS = ("shipped", "plain", "random", "preset", "transfer")


def problem_spec(problem: str, data_root: str | None) -> StudySpec:
    path, mnist_files = PROBLEMS[problem] if problem in PROBLEMS else (problem, False)
    spec = StudySpec.from_file(path)
    if data_root and mnist_files:
        spec = StudySpec.from_dict({**spec.raw, "train": {**spec.raw["train"], "data_root": data_root}}, source=path)
    return spec


def production_images(spec: StudySpec, override: int | None) -> int:
    """The production budget: ``--production-images``, else the file's export budget, else 3x the trial budget."""
    return override or spec.export.images or 3 * spec.train.budget_images


def _production_run(config: dict[str, Any], seed: int, images: int, scorer: Any) -> dict[str, float]:
    torch.set_num_threads(1)
    cfg = TrainConfig.from_dict({**config, "seed": seed, "device": "cpu", "budget_images": images,
                                 "eval_every_images": images, "schedules": config.get("schedules", {})})
    data = load_data(cfg)
    result = train(cfg, data=data, evaluator=make_evaluator(cfg, data))
    metrics = result.final_metrics
    out = {"seed": seed, "fid": float(metrics["fid"]), **scorer(lambda n, start=0: _sample(result.generator, n, start))}
    out |= {k: float(metrics[k]) for k in ("modes", "mode_kl") if k in metrics}
    return out


def _sample(generator: Any, n: int, start: int) -> torch.Tensor:
    from trainer.noise import fixed_sampler

    return fixed_sampler(generator, 424242)(n, start)  # a noise stream no evaluation of the search used


def _config_id(config: dict[str, Any]) -> str:
    """What makes two production runs the same run: the config without what a production run sets itself (the
    seed, the device) or what a search-time budget put there (budget and evaluation interval)."""
    skip = {"seed", "device", "budget_images", "eval_every_images"}
    return json.dumps({k: v for k, v in config.items() if k not in skip}, sort_keys=True, default=str)


def _made(record: dict[str, Any], config: dict[str, Any], seed: int) -> dict[str, Any] | None:
    """A production run already made of this config at this seed under another arm's key (TPE's random start and
    the random arm draw the same first trials, so two arms can choose the same config): trained once, shown twice."""
    want = _config_id(config)
    for key, runs in record["production"].items():
        if _config_id(record["configs"].get(key, {})) == want:
            for run in runs:
                if run["seed"] == seed:
                    return dict(run)
    return None


def production(configs: dict[str, dict[str, Any]], seeds: int, images: int, scorer: Any, jobs: int) -> dict[str, Any]:
    """Each config trained at ``images`` with ``seeds`` fresh seeds (1000, ...) and scored; keyed as ``configs``."""
    tasks = [(key, cfg, 1000 + i) for key, cfg in configs.items() for i in range(seeds)]
    runs = Parallel(n_jobs=jobs)(delayed(_production_run)(cfg, s, images, scorer) for _, cfg, s in tasks)
    out: dict[str, Any] = {}
    for (key, _, _), run in zip(tasks, runs, strict=True):
        out.setdefault(key, []).append(run)
    return out


def preset_configs(spec: StudySpec) -> dict[str, dict[str, Any]]:
    """The study file's warm starts (literature presets, or values it lists) as whole configs: the study's ``train:``
    with the entry's searched values."""
    def name(i: int, entry: Any) -> str:
        return entry if isinstance(entry, str) else str(entry.get("preset") or entry.get("from") or f"warm_start[{i}]")

    return {name(i, entry): apply_params(spec.train, dict(values)).to_dict()
            for i, (entry, values) in enumerate(zip(spec.raw.get("warm_start", []), spec.warm_start, strict=True))}


def _stats(values: list[float]) -> tuple[float | None, float | None]:
    return (statistics.fmean(values) if values else None, statistics.pstdev(values) if len(values) > 1 else None)


def suite_rows(problem: str, runs: dict[str, Any], arms: dict[str, Any], preset_fid: float | None) -> list[dict[str, Any]]:
    rows = []
    for arm in SUITE_ARMS:
        keys = [k for k in runs if k.split("/")[0] == arm]
        if not keys:
            continue
        every = [r for k in keys for r in runs[k]]
        row: dict[str, Any] = {"problem": problem, "arm": arm, "runs": len(every)}
        for metric in ("fid_alt", "recall_alt", "coverage_alt", "fid", "modes", "mode_kl"):
            values = [float(r[metric]) for r in every if metric in r]
            row[metric], row[f"{metric}_std"] = _stats(values)
        reach = [minutes_to_reach(arms[k]["steps"], preset_fid, 1.0) for k in keys if k in arms]
        row["min_to_preset"] = reach
        rows.append(row)
    return rows


def print_suite(rows: list[dict[str, Any]]) -> None:
    print(f"{'problem':<14} {'arm':<9} {'runs':>4} {'FID (scorer)':>16} {'recall':>14} {'coverage':>14} "
          f"{'FID (service)':>16} {'modes':>16} {'mode KL':>14} {'min to preset':>14}")
    for r in rows:
        reach = ", ".join("never" if m is None else f"{m:.1f}" for m in r["min_to_preset"]) or "-"
        print(f"{r['problem']:<14} {r['arm']:<9} {r['runs']:>4} {_pm(r, 'fid_alt'):>16} {_pm(r, 'recall_alt', '.3f'):>14} "
              f"{_pm(r, 'coverage_alt', '.3f'):>14} {_pm(r, 'fid'):>16} {_pm(r, 'modes', '.0f'):>16} "
              f"{_pm(r, 'mode_kl', '.3f'):>14} {reach:>14}")


def _pm(r: dict[str, Any], m: str, fmt: str = ".2f") -> str:
    if r.get(m) is None:
        return "-"
    return f"{r[m]:{fmt}}" + (f" +- {r[m + '_std']:{fmt}}" if r.get(m + "_std") is not None else "")


def verdict(rows: list[dict[str, Any]], arm: str, against: str) -> str:
    """Whether ``arm`` beats ``against`` under the scorer's FID by more than the seed spread (the larger of the
    two standard deviations), as the acceptance asks; "-" where either row is missing."""
    a = next((r for r in rows if r["arm"] == arm and r.get("fid_alt") is not None), None)
    b = next((r for r in rows if r["arm"] == against and r.get("fid_alt") is not None), None)
    if a is None or b is None:
        return "-"
    gap, spread = b["fid_alt"] - a["fid_alt"], max(a.get("fid_alt_std") or 0.0, b.get("fid_alt_std") or 0.0)
    word = "ahead" if gap > spread else "behind" if -gap > spread else "within the spread"
    return f"{word} ({gap:+.2f} vs spread {spread:.2f}; {a['runs']} / {b['runs']} runs)"


def markdown_table(files: list[Path]) -> str:
    """The acceptance table: problems x arms (mean +- std over sampler seeds x production seeds) from suite JSONs,
    each problem followed by the shipped arm's verdicts against plain Optuna and the best preset."""
    lines = ["| problem | arm | runs | FID (scorer) | recall (scorer) | coverage (scorer) | service FID | modes | "
             "mode KL | min to preset |", "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    notes = []
    for file in files:
        results = json.loads(file.read_text())["results"]
        for problem, record in results.items():
            rows = problem_rows(problem, record)
            for r in rows:
                arm = f"best preset (`{record['best_preset'].split('/', 1)[1]}`)" if r["arm"] == "preset" else r["arm"]
                reach = ", ".join("never" if m is None else f"{m:.1f}" for m in r["min_to_preset"]) or "-"
                lines.append(f"| {problem} | {arm} | {r['runs']} | {_pm(r, 'fid_alt')} | {_pm(r, 'recall_alt', '.3f')} | "
                             f"{_pm(r, 'coverage_alt', '.3f')} | {_pm(r, 'fid')} | {_pm(r, 'modes', '.0f')} | "
                             f"{_pm(r, 'mode_kl', '.3f')} | {reach} |")
            notes.append(f"- {problem}: shipped vs plain Optuna: {verdict(rows, 'shipped', 'plain')}; "
                         f"vs the best preset: {verdict(rows, 'shipped', 'preset')}")
    return "\n".join(lines + [""] + notes)


def problem_rows(problem: str, record: dict[str, Any]) -> list[dict[str, Any]]:
    """One problem's rows; the preset row is the best preset by the independent FID (an oracle pick)."""
    runs = {k: v for k, v in record["production"].items() if k in record.get("configs", record["production"])}
    presets = {k: v for k, v in runs.items() if k.startswith("preset/")}
    best_preset = min(presets, key=lambda k: statistics.fmean(r["fid_alt"] for r in presets[k]), default=None)
    record["best_preset"] = best_preset
    runs = {k: v for k, v in runs.items() if not k.startswith("preset/") or k == best_preset}
    preset_fid = statistics.fmean(r["fid"] for r in runs[best_preset]) if best_preset else None
    return suite_rows(problem, runs, record["arms"], preset_fid)


def run_suite(args: Any, out: Path | None) -> dict[str, Any]:
    """Problems x arms, then production runs; with ``out``, the JSON is rewritten after every arm and every
    production run, and ``--resume`` carries on from it (an arm or a run already there is not run again)."""
    from benchmarks.quality._scorer import make_scorer

    budget_s = args.minutes * 60
    jobs = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    state: dict[str, Any] = {"results": {}}
    if out is not None and args.resume and out.exists():
        state = json.loads(out.read_text())
        log.info("resuming from %s", out)
    # every run that wrote this file, with its machine and commit (the top-level "machine" is the latest one's)
    state["sessions"] = [*state.get("sessions", [state["machine"]] if "machine" in state else []), machine()]
    results: dict[str, Any] = state["results"]
    # the shipped studies' databases, kept beside the results: the next problem's transfer arm reads them
    keep = out.with_name(out.stem + "-studies") if out is not None else Path(tempfile.mkdtemp(prefix="bench-suite-"))
    scratch = Path(tempfile.mkdtemp(prefix="bench-suite-art-"))  # artifacts (generators, grids) are not kept

    def save() -> None:
        rows = [row for problem, record in results.items() for row in problem_rows(problem, record)]
        state.update(rows=rows)
        if out is not None:
            write_result(args, {"sessions": state["sessions"], "rows": rows, "results": results})

    def shipped_db(problem: str) -> Path:
        """The shipped study a transfer arm starts from: this run's, or a study database named by path."""
        return Path(problem) if problem.endswith(".db") else keep / f"{problem}-shipped-{args.seeds[0]}" / "study.db"

    def study_name(problem: str) -> str:
        if problem.endswith(".db"):
            return optuna.get_all_study_names(f"sqlite:///{shipped_db(problem)}")[0]
        return problem_spec(problem, args.data_root).name

    for i, problem in enumerate(args.problems):
        spec = problem_spec(problem, args.data_root)
        base = spec.train.replace(device="cpu")
        data = load_data(base)
        make_evaluator(base, data)  # the feature network and real statistics are cached before any arm's clock
        scorer = make_scorer(data)
        images = production_images(spec, args.production_images)
        log.info("%s: scorer accuracy %.4f on the held-out split; production budget %d images", problem,
                 scorer.accuracy, images)
        record = results.setdefault(problem, {"study": spec.name, "production_images": images, "arms": {},
                                              "configs": {}, "production": {}})
        record["scorer_accuracy"] = scorer.accuracy
        arms: dict[str, Any] = record["arms"]
        source = args.problems[i - 1] if i > 0 else args.transfer_from
        for seed in args.seeds:
            for arm in ("shipped", "plain", "random", "transfer"):
                key = f"{arm}/seed{seed}"
                if arm not in args.arms or (arm == "random" and seed != args.seeds[0]) or key in arms:
                    continue
                if arm == "transfer" and (source is None or not shipped_db(source).exists()):
                    log.info("%s: no transfer arm (no finished shipped study of %s)", problem, source)
                    continue
                t0 = time.perf_counter()
                if arm in ("shipped", "transfer"):
                    arm_spec = spec
                    if arm == "transfer":
                        assert source is not None
                        raw = {**spec.raw, "warm_start": [{"study": study_name(source),
                                                           "storage": f"sqlite:///{shipped_db(source)}", "top": 3}]}
                        arm_spec = StudySpec.from_dict(raw, source=f"{problem} transfer from {source}")
                    folder = keep / f"{problem}-{arm}-{seed}"
                    if folder.exists():  # an arm cut off before it finished: run it again from scratch
                        shutil.rmtree(folder)
                    folder.mkdir(parents=True)
                    r = gan_search_arm(arm_spec, seed, 1, budget_s, folder, scratch / f"{problem}-{arm}-{seed}")
                    r["storage"] = f"{folder.name}/study.db"
                else:
                    r = optuna_arm(spec, seed, budget_s, random_search=arm == "random")
                r["wall_minutes"] = round((time.perf_counter() - t0) / 60, 2)
                arms[key] = r
                log.info("%s %s seed %d: best %s, %d complete / %d pruned (%.1f min)", problem, arm, seed, r["best"],
                         r["states"]["COMPLETE"], r["states"]["PRUNED"], r["wall_minutes"])
                save()
        # (configs of arms not run this time, a preset's from an earlier --arms, stay: their runs stay in the table)
        configs = {**record.get("configs", {}), **{k: r["best_config"] for k, r in arms.items() if r["best_config"]}}
        if "preset" in args.arms:
            configs |= {f"preset/{name}": cfg for name, cfg in preset_configs(spec).items()}
        record["configs"] = configs
        tasks = [(key, cfg, 1000 + s) for key, cfg in configs.items() for s in range(args.production_seeds)
                 if 1000 + s not in {r["seed"] for r in record["production"].get(key, [])}]
        log.info("%s: %d production runs to go (%d configs x %d seeds at %d images, %d at once)", problem, len(tasks),
                 len(configs), args.production_seeds, images, jobs)
        while tasks:
            for key, cfg, s in tasks:
                if (made := _made(record, cfg, s)) is not None:
                    record["production"].setdefault(key, []).append(made)
            tasks = [t for t in tasks if _made(record, t[1], t[2]) is None]
            chunk = list({(_config_id(cfg), s): (key, cfg, s) for key, cfg, s in reversed(tasks)}.values())[::-1][:jobs]
            if not chunk:
                break
            runs = Parallel(n_jobs=len(chunk))(delayed(_production_run)(cfg, s, images, scorer) for _, cfg, s in chunk)
            for (key, _, _), run in zip(chunk, runs, strict=True):
                record["production"].setdefault(key, []).append(run)
            tasks = [t for t in tasks if t not in chunk]
            save()
        save()
        print_suite(problem_rows(problem, record))
    shutil.rmtree(scratch, ignore_errors=True)
    return state


# ---------------------------------------------------------------- main
def main() -> None:
    parser = bench_parser(__doc__, "suite")
    parser.add_argument("--problems", nargs="+", default=["digits"], help=f"of {', '.join(PROBLEMS)} (or study files)")
    parser.add_argument("--production-images", type=int, default=None, help="default: each file's export.images")
    parser.add_argument("--production-seeds", type=int, default=3)
    parser.add_argument("--resume", action="store_true", help="carry on from the --out file (suite)")
    parser.add_argument("--transfer-from", default=None,
                        help="the first problem's transfer source: a problem whose shipped study this run's folder "
                             "kept, or a kept study database (e.g. benchmarks/results/suite-X-studies/X-shipped-0/study.db)")
    parser.add_argument("--table", nargs="+", type=Path, default=None, metavar="JSON",
                        help="print the problems x arms markdown table of these suite result files and exit")
    parser.add_argument("--study", default=None, help="search progress of this study file only (the older mode)")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--minutes", type=float, default=3.0, help="wall-clock budget per arm")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="sampler seeds")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4], help="gan-search worker counts")
    parser.add_argument("--retrain-seeds", type=int, default=3)
    parser.add_argument("--pbt-study", default=None, help="also run this PBT study file as the arm 'pbt'")
    parser.add_argument("--pbt-workers", type=int, default=2)
    parser.add_argument("--arms", nargs="+", default=None,
                        help=f"run only these arms (suite: {', '.join(SUITE_ARMS)}; --study: gan-search-Kw, handwritten, "
                             "random, pbt); default: all")
    args = parser.parse_args()
    if args.table:
        print(markdown_table(args.table))
        return
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    log.setLevel(logging.INFO)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if hasattr(os, "sched_getaffinity"):
        torch.set_num_threads(len(os.sched_getaffinity(0)))
    if args.study is None:
        args.arms = args.arms or list(SUITE_ARMS)
        print(f"{os.cpu_count()} CPU cores, torch {torch.__version__}, sampler seeds {args.seeds}, "
              f"{args.minutes:g} min per arm")
        out = out_path(args.out, args.benchmark)
        suite = run_suite(args, out)
        print_suite(suite["rows"])
        return

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
