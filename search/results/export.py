"""Export of a study's best: config.yaml, generator, samples, metrics.json and a plotly report.html."""

from __future__ import annotations

import logging
import statistics
from pathlib import Path
from typing import Any

import optuna
from optuna.artifacts import download_artifact
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.trial import FrozenTrial, TrialState

from search import attrs
from search.results.selection import best_trial, candidates, order, primary, search_trials, signs, violation
from search.spec.study_file import StudySpec
from search.strategy import pbt
from search.strategy.schedulers import scheduler_for
from trainer import prepare, train
from trainer.io import CONFIG_FILE, GENERATOR_FILE, METRICS_FILE, SAMPLES_FILE, write_json

log = logging.getLogger(__name__)


def enqueue_confirmations(study: optuna.Study, top_k: int, seeds: int, images: int | None = None,
                          base_seed: int = 10_000, constraints_at: str = "search") -> list[int]:
    """Enqueue ``seeds`` fresh-seed re-runs of each of the first ``top_k`` configs (``selection.candidates``) at
    ``images`` (None: the trial budget), skipping runs already in the study (an interrupted export picks up where it stopped)."""
    existing = {(t.user_attrs.get(attrs.CONFIRM), t.user_attrs.get(attrs.SEED_OVERRIDE),
                 t.user_attrs.get(attrs.CONFIRM_IMAGES)) for t in study.get_trials(deepcopy=False)
                if t.state != TrialState.FAIL}
    top = candidates(study, constraints_at)[:top_k]
    for trial in top:
        for s in range(seeds):
            seed = base_seed + s
            if (trial.number, seed, images) not in existing:
                marks: dict[str, Any] = {attrs.CONFIRM: trial.number, attrs.SEED_OVERRIDE: seed}
                if images is not None:
                    marks[attrs.CONFIRM_IMAGES] = images
                study.enqueue_trial(trial.params, user_attrs=marks)
    return [t.number for t in top]


def confirmation_runs(study: optuna.Study, origin: int, images: int | None) -> list[FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.user_attrs.get(attrs.CONFIRM) == origin and t.user_attrs.get(attrs.CONFIRM_IMAGES) == images
            and t.values is not None]


def confirmation_table(study: optuna.Study, origins: list[int], spec: StudySpec,
                       images: int | None = None) -> list[dict[str, Any]]:
    """Per confirmed config: its fresh-seed runs' values and metrics, their means and spread, whether the
    constraints hold for every seed, and the run to export; ordered by the study's rule (``search.results.selection``)
    on the means: configs whose constraints hold for every seed first, then the rest by Pareto front on (their
    worst seed's total violation, the means), as ``selection.candidates`` orders the configs to confirm."""
    trials = study.get_trials(deepcopy=False)
    rows: list[dict[str, Any]] = []
    for number in origins:
        runs = confirmation_runs(study, number, images)
        if not runs:
            continue
        values = [[float(v) for v in t.values] for t in runs]
        metrics = {k: statistics.fmean(float(t.user_attrs.get(attrs.METRICS, {})[k]) for t in runs)
                   for k in runs[0].user_attrs.get(attrs.METRICS, {})
                   if all(k in t.user_attrs.get(attrs.METRICS, {}) for t in runs)}
        shares = [t.user_attrs.get(attrs.CLASS_SHARES) for t in runs]
        misses = [max(c.violation(t.user_attrs.get(attrs.METRICS, {}).get(c.metric)) for t in runs)
                  for c in spec.constraints]  # each constraint at its worst seed
        best_run = runs[order([[violation(t), *t.values] for t in runs], [1.0, *signs(study)])[0]]
        primary_values = [v[0] for v in values]
        rows.append({"trial": number, "images": images or int(trials[number].user_attrs.get(attrs.IMAGES_SEEN, 0)),
                     "search_value": primary(trials[number]), "seeds": [t.user_attrs.get(attrs.SEED) for t in runs],
                     "runs": [t.number for t in runs], "seed_values": primary_values,
                     "mean": statistics.fmean(primary_values),
                     "std": statistics.pstdev(primary_values) if len(runs) > 1 else 0.0,
                     "means": [statistics.fmean(col) for col in zip(*values, strict=True)],
                     "metrics": metrics, "run_metrics": [t.user_attrs.get(attrs.METRICS, {}) for t in runs],
                     "class_shares": shares if all(shares) else None,
                     "feasible": all(m <= 0 for m in misses), "violation": sum(max(0.0, m) for m in misses),
                     "export_run": best_run.number})
    feasible: list[dict[str, Any]] = [r for r in rows if r["feasible"]]
    missing = [r for r in rows if not r["feasible"]]
    sign = signs(study)
    return ([feasible[i] for i in order([r["means"] for r in feasible], sign)]
            + [missing[i] for i in order([[r["violation"], *r["means"]] for r in missing], [1.0, *sign])])


def finalists(study: optuna.Study, spec: StudySpec) -> list[FrozenTrial]:
    """Under promotion by continuation: the search trials that reached the top rung (the production budget)."""
    if spec.promotion is None:
        return []
    top = len(spec.promotion.rungs)
    return [t for t in search_trials(study) if int(t.user_attrs.get(attrs.RUNG, 0)) == top]


def race_runs(study: optuna.Study, finalist: FrozenTrial, images: int) -> list[FrozenTrial]:
    """A finalist's runs at the production budget: its own (reached by continuation), then its fresh seeds."""
    return [finalist, *confirmation_runs(study, finalist.number, images)]


def enqueue_race_seeds(study: optuna.Study, numbers: list[int], seed: int, images: int) -> None:
    """One fresh-seed run at ``images`` for each finalist in ``numbers`` (skipped where the study has it already)."""
    trials = study.get_trials(deepcopy=False)
    existing = {(t.user_attrs.get(attrs.CONFIRM), t.user_attrs.get(attrs.SEED_OVERRIDE)) for t in trials
                if attrs.CONFIRM in t.user_attrs and t.state != TrialState.FAIL}
    for number in numbers:
        if (number, seed) not in existing:
            study.enqueue_trial(trials[number].params, user_attrs={attrs.CONFIRM: number, attrs.SEED_OVERRIDE: seed,
                                                                   attrs.CONFIRM_IMAGES: images})


def race_table(study: optuna.Study, spec: StudySpec, numbers: list[int], images: int,
               dropped: dict[int, int]) -> list[dict[str, Any]]:
    """Per finalist: its runs (own and fresh seeds), their mean and spread, the run to export (its best), and
    after how many runs it was raced out (None: still in at the end); those still in first, by mean."""
    trials = study.get_trials(deepcopy=False)
    sign = signs(study)[0]
    rows = []
    for number in numbers:
        runs = race_runs(study, trials[number], images)
        values = [float(t.values[0]) for t in runs]
        best_run = min(runs, key=lambda t: sign * float(t.values[0]))
        rows.append({"trial": number, "images": images, "search_value": primary(trials[number]),
                     "seeds": [t.user_attrs.get(attrs.SEED) for t in runs], "runs": [t.number for t in runs],
                     "seed_values": values, "mean": statistics.fmean(values),
                     "std": statistics.pstdev(values) if len(values) > 1 else 0.0, "means": [statistics.fmean(values)],
                     "metrics": runs[0].user_attrs.get(attrs.METRICS, {}), "feasible": True, "violation": 0.0,
                     "export_run": best_run.number, "raced_out_after": dropped.get(number)})
    return sorted(rows, key=lambda r: (r["raced_out_after"] is not None, sign * r["mean"], r["trial"]))


def record_confirmations(study: optuna.Study, rows: list[dict[str, Any]], images: int | None, seeds: int) -> None:
    """Keep the table in the study (``confirmations`` study attribute): the dashboard and later exports see it."""
    done = list(study.user_attrs.get(attrs.CONFIRMATIONS, []))
    done.append({"images": images, "seeds": seeds, "rows": [{k: v for k, v in r.items() if k != "run_metrics"}
                                                            for r in rows]})
    study.set_user_attr(attrs.CONFIRMATIONS, done)


def export(study: optuna.Study, spec: StudySpec, out: Path, store: Any, *, retrain_images: int | None = None,
           confirmed: list[dict[str, Any]] | None = None, plotlyjs: str = "inline") -> dict[str, Any]:
    """Write the export of the best trial (or the best-mean confirmed config) into ``out`` (which must be new)."""
    best = best_trial(study)
    if confirmed:  # the winning config's best fresh-seed run: that trained generator is exported, not retrained
        best = study.get_trials(deepcopy=False)[confirmed[0]["export_run"] if spec.scheduler is None
                                                else confirmed[0]["trial"]]
    cfg, about = scheduler_for(spec).export_config(study, best)  # PBT: the lineage's schedule, replayed from scratch
    out.mkdir(parents=True, exist_ok=True)
    metrics: dict[str, Any] = {"study": study.study_name, "trial": best.number, "objective": spec.objective,
                               "direction": spec.direction, "value": primary(best), "params": best.params,
                               "feasible": violation(best) == 0.0,
                               "user_attrs": {k: v for k, v in best.user_attrs.items() if k != "config"}}
    if len(spec.objectives) > 1:
        metrics.update(objectives=list(spec.objectives), values=best.values)
    if spec.constraints:
        metrics["constraints"] = [str(c) for c in spec.constraints]
    if confirmed:
        metrics["confirmation"] = confirmed
    metrics.update(about)
    if retrain_images:
        cfg = cfg.replace(budget_images=retrain_images, eval_every_images=min(cfg.eval_every_images, retrain_images))
        setup = prepare(cfg)
        result = train(cfg, data=setup.data, out_dir=out, evaluator=setup.evaluator)
        (out / "checkpoint.pt").unlink(missing_ok=True)
        metrics["retrain"] = {"images": retrain_images, "final_metrics": result.final_metrics,
                              "images_per_s": result.images_per_s}
    else:
        for attr, name in (("generator_artifact", GENERATOR_FILE), ("samples_artifact", SAMPLES_FILE)):
            download_artifact(artifact_store=store, file_path=str(out / name), artifact_id=best.user_attrs[attr])
        cfg.save(out / CONFIG_FILE)
    write_json(out / METRICS_FILE, metrics)
    write_report(study, out / "report.html", confirmed, store=store, best=best, objective=spec.objective,
                 plotlyjs=plotlyjs, spec=spec)
    return metrics


def objective_curves(study: optuna.Study, objective: str) -> Any:
    """Every search trial's objective (the raw value, not the best-so-far the pruner may see) against images."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for t in study.get_trials(deepcopy=False):
        points = [(h["mark"], h[objective]) for h in t.user_attrs.get(attrs.LOSSES, []) if h.get(objective) is not None]
        if points and attrs.CONFIRM not in t.user_attrs:
            fig.add_trace(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="lines+markers",
                                     name=f"trial {t.number} ({t.state.name.lower()})"))
    fig.update_layout(title=f"{objective} of every trial against images", xaxis_title="images seen",
                      yaxis_title=objective, yaxis_type="log" if objective in ("fid", "kid") else "linear")
    return fig


def grid_history_html(trial: FrozenTrial, store: Any) -> str:
    """The trial's sample grids (one per evaluation kept) as inline images: the report stays usable offline."""
    import base64

    cells = []
    for g in trial.user_attrs.get(attrs.GRIDS, []):
        try:
            with store.open_reader(g["artifact"]) as fh:
                data = base64.b64encode(fh.read()).decode()
        except ArtifactNotFound:
            continue
        cells.append(f"<figure style='display:inline-block;margin:4px'><img alt='samples at {g['mark']} images' "
                     f"src='data:image/png;base64,{data}' width='224'><figcaption>{g['mark']:,} images"
                     "</figcaption></figure>")
    return "".join(cells) or "<p>(no grids stored for this trial)</p>"


def write_report(study: optuna.Study, path: Path, confirmed: list[dict[str, Any]] | None = None, *,
                 store: Any = None, best: FrozenTrial | None = None, objective: str = "fid",
                 plotlyjs: str = "inline", spec: StudySpec | None = None) -> None:
    """report.html: the best trial's grid history, every trial's curve, optimization history, intermediate
    values, importances, parallel coordinates, slices.

    ``plotlyjs="inline"`` embeds plotly.js (about 4.8 MB): the file opens offline. ``"cdn"`` makes it about
    100 kB but needs the internet to draw the plots.
    """
    import plotly.graph_objects as go
    from optuna import visualization as vis

    if plotlyjs not in ("inline", "cdn"):
        raise ValueError(f"plotlyjs must be inline or cdn, but got {plotlyjs=}.")
    figures: list[tuple[str, Any]] = [("Every trial's curve", objective_curves(study, objective))]
    for title, make in (("Optimization history", vis.plot_optimization_history),
                        ("Intermediate values", vis.plot_intermediate_values),
                        ("Parameter importances", vis.plot_param_importances),
                        ("Parallel coordinates", vis.plot_parallel_coordinate),
                        ("Slices", vis.plot_slice)):
        try:
            figures.append((title, make(study)))
        except (ValueError, RuntimeError) as exc:  # e.g. importances need two complete trials
            log.info("report: %s skipped (%s)", title, exc)
    if spec is not None and spec.scheduler is not None:
        figures += pbt_figures(study, spec)
    coverage = coverage_figure(study, objective)
    if coverage is not None:
        figures.append(("Coverage", coverage))
    if confirmed:
        fig = go.Figure([go.Box(y=r["seed_values"], name=f"trial {r['trial']}", boxpoints="all") for r in confirmed])
        fig.update_layout(title=f"Fresh-seed re-runs of the top configs ({objective} per seed, "
                                f"{confirmed[0]['images']:,} images)")
        figures.append(("Seed confirmation", fig))
    parts = [f"<h1>gan-search report: {study.study_name}</h1>"]
    if confirmed:
        parts.append(confirmation_html(confirmed, objective))
    if best is not None and store is not None:
        parts.append(f"<h2>Samples of trial {best.number} (the exported one) by images seen</h2>")
        parts.append(grid_history_html(best, store))
    for i, (title, fig) in enumerate(figures):
        parts.append(f"<h2>{title}</h2>")
        parts.append(fig.to_html(full_html=False, include_plotlyjs=(True if plotlyjs == "inline" else "cdn")
                                 if i == 0 else False))
    path.write_text("<!doctype html><html><head><meta charset='utf-8'><title>gan-search report</title></head><body>"
                    + "\n".join(parts) + "</body></html>")


def coverage_figure(study: optuna.Study, objective: str) -> Any:
    """Each search trial's objective against its recall, coloured by its smallest class share (None unmeasured)."""
    import plotly.graph_objects as go

    trials = [t for t in search_trials(study) if "recall" in (t.user_attrs.get(attrs.METRICS) or {})]
    if not trials:
        return None
    metrics = [t.user_attrs[attrs.METRICS] for t in trials]
    shares = [m.get("class_min_share") for m in metrics]
    fig = go.Figure(go.Scatter(
        x=[m["recall"] for m in metrics], y=[m.get(objective, primary(t)) for m, t in zip(metrics, trials, strict=True)],
        mode="markers", text=[f"trial {t.number}" for t in trials],
        marker={"color": shares, "colorscale": "Viridis", "showscale": True, "colorbar": {"title": "min share"}}
        if all(v is not None for v in shares) else {}))
    fig.update_layout(title=f"{objective} against recall (colour: smallest class share)", xaxis_title="recall",
                      yaxis_title=objective)
    return fig


def confirmation_html(rows: list[dict[str, Any]], objective: str) -> str:
    """The confirmation table: per config, the seeds' mean objective, coverage, smallest class share."""
    head = ("<h2>Confirmed at the production budget</h2><table border='1' cellpadding='4'><tr><th>config (trial)</th>"
            f"<th>images</th><th>{objective} per seed</th><th>mean</th><th>recall</th><th>coverage</th>"
            "<th>smallest class share (per seed)</th><th>feasible</th><th>exported run</th></tr>")
    cells = []
    for i, r in enumerate(rows):
        m = r["metrics"]
        mins = [min(s) for s in r["class_shares"]] if r.get("class_shares") else []
        cells.append(f"<tr><td>{r['trial']}</td><td>{r['images']:,}</td>"
                     f"<td>{', '.join(f'{v:.3g}' for v in r['seed_values'])}</td><td>{r['mean']:.4g}</td>"
                     f"<td>{m.get('recall', float('nan')):.3f}</td><td>{m.get('coverage', float('nan')):.3f}</td>"
                     f"<td>{', '.join(f'{100 * v:.1f}%' for v in mins) or '-'}</td><td>{r['feasible']}</td>"
                     f"<td>{r['export_run'] if i == 0 else ''}</td></tr>")
    return head + "".join(cells) + "</table>"


def pbt_figures(study: optuna.Study, spec: StudySpec) -> list[tuple[str, Any]]:
    """The report's PBT plots: each member's objective, and each searched value, against images."""
    import plotly.graph_objects as go

    segs = sorted(((s, t) for t in study.get_trials(deepcopy=False) if (s := pbt.segment_of(t)) is not None
                   and t.state == TrialState.COMPLETE), key=lambda x: (x[0]["member"], x[0]["generation"]))
    if not segs or spec.scheduler is None:
        return []
    members = sorted({int(s["member"]) for s, _ in segs})
    fid = go.Figure()
    for m in members:
        points = sorted((mark, v) for s, t in segs if s["member"] == m for mark, v in t.intermediate_values.items())
        fid.add_trace(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="lines+markers",
                                 name=f"member {m}"))
    fid.update_layout(title=f"{spec.objective} of each member against images", xaxis_title="images seen",
                      yaxis_type="log" if spec.objective in ("fid", "kid") else "linear")
    out = [("PBT: members' curves", fid)]
    interval = spec.scheduler.interval_images
    for p in spec.space:
        fig = go.Figure()
        for m in members:
            xs, ys = [], []
            for s, t in segs:
                if s["member"] == m:
                    xs += [int(s["generation"]) * interval, (int(s["generation"]) + 1) * interval]
                    ys += [t.params.get(p.name)] * 2
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=f"member {m}"))
        fig.update_layout(title=f"{p.name} of each member against images", xaxis_title="images seen",
                          yaxis_type="log" if p.log else "linear")
        out.append((f"PBT: {p.name}", fig))
    return out
