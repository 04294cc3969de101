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

from search import attrs, pbt
from search.errors import StudyError
from search.schedulers import scheduler_for
from search.spec import StudySpec
from trainer import prepare, train
from trainer.io import CONFIG_FILE, GENERATOR_FILE, METRICS_FILE, SAMPLES_FILE, write_json

log = logging.getLogger(__name__)


def search_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Complete trials of the search itself (seed-confirmation trials excluded)."""
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if attrs.CONFIRM not in t.user_attrs and t.value is not None]


def ranked(study: optuna.Study) -> list[FrozenTrial]:
    sign = 1.0 if study.direction == optuna.study.StudyDirection.MINIMIZE else -1.0
    return sorted(search_trials(study), key=lambda t: sign * float(t.value))  # type: ignore[arg-type]


def best_trial(study: optuna.Study) -> FrozenTrial:
    trials = ranked(study)
    if not trials:
        raise StudyError(f"study {study.study_name!r} has no complete trial to export; run more trials first.")
    return trials[0]


def enqueue_confirmations(study: optuna.Study, top_k: int, seeds: int, base_seed: int = 10_000) -> list[int]:
    """Enqueue ``seeds`` fresh-seed re-runs of each of the ``top_k`` best configs (skipping ones already there)."""
    existing = {(t.user_attrs.get(attrs.CONFIRM), t.user_attrs.get(attrs.SEED_OVERRIDE))
                for t in study.get_trials(deepcopy=False)}
    top = ranked(study)[:top_k]
    for trial in top:
        for s in range(seeds):
            seed = base_seed + s
            if (trial.number, seed) not in existing:
                study.enqueue_trial(trial.params, user_attrs={attrs.CONFIRM: trial.number, attrs.SEED_OVERRIDE: seed})
    return [t.number for t in top]


def confirmation_table(study: optuna.Study, origins: list[int]) -> list[dict[str, Any]]:
    """Per confirmed config: original value, fresh-seed values, mean and spread; best mean first."""
    trials = study.get_trials(deepcopy=False)
    rows = []
    for number in origins:
        values = [float(t.value) for t in trials if t.user_attrs.get(attrs.CONFIRM) == number
                  and t.state == TrialState.COMPLETE and t.value is not None]
        if not values:
            continue
        rows.append({"trial": number, "search_value": trials[number].value, "seed_values": values,
                     "mean": statistics.fmean(values), "std": statistics.pstdev(values) if len(values) > 1 else 0.0})
    sign = 1.0 if study.direction == optuna.study.StudyDirection.MINIMIZE else -1.0
    return sorted(rows, key=lambda r: sign * r["mean"])


def export(study: optuna.Study, spec: StudySpec, out: Path, store: Any, *, retrain_images: int | None = None,
           confirmed: list[dict[str, Any]] | None = None, plotlyjs: str = "inline") -> dict[str, Any]:
    """Write the export of the best trial (or the best-mean confirmed config) into ``out`` (which must be new)."""
    best = best_trial(study)
    if confirmed:
        best = study.get_trials(deepcopy=False)[confirmed[0]["trial"]]
    cfg, about = scheduler_for(spec).export_config(study, best)  # PBT: the lineage's schedule, replayed from scratch
    out.mkdir(parents=True, exist_ok=True)
    metrics: dict[str, Any] = {"study": study.study_name, "trial": best.number, "objective": spec.objective,
                               "direction": spec.direction, "value": best.value, "params": best.params,
                               "user_attrs": {k: v for k, v in best.user_attrs.items() if k != "config"}}
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
    if confirmed:
        fig = go.Figure([go.Box(y=r["seed_values"], name=f"trial {r['trial']}", boxpoints="all") for r in confirmed])
        fig.update_layout(title="Fresh-seed re-runs of the top configs (value per seed)")
        figures.append(("Seed confirmation", fig))
    parts = [f"<h1>gan-search report: {study.study_name}</h1>"]
    if best is not None and store is not None:
        parts.append(f"<h2>Samples of trial {best.number} (the exported one) by images seen</h2>")
        parts.append(grid_history_html(best, store))
    for i, (title, fig) in enumerate(figures):
        parts.append(f"<h2>{title}</h2>")
        parts.append(fig.to_html(full_html=False, include_plotlyjs=(True if plotlyjs == "inline" else "cdn")
                                 if i == 0 else False))
    path.write_text("<!doctype html><html><head><meta charset='utf-8'><title>gan-search report</title></head><body>"
                    + "\n".join(parts) + "</body></html>")


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
