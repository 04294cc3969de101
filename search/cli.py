"""The ``gan-search`` command line: results to stdout, progress and logs to stderr."""

from __future__ import annotations

import functools
import json
import logging
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from search import attrs
from trainer.errors import ConfigError, DataError, Diverged, GanSearchError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Hyperparameter search for GAN training (Optuna + one shared PyTorch trainer).")
log = logging.getLogger("gan_search")
F = TypeVar("F", bound=Callable[..., Any])


def _fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def known_errors(fn: F) -> F:
    """Known errors print one line (no traceback): bad input exits 2, other failures 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ConfigError, DataError) as exc:
            raise _fail(str(exc), 2) from None
        except Diverged as exc:
            raise _fail(str(exc), 1) from None
        except GanSearchError as exc:
            raise _fail(str(exc), 1) from None
        except KeyboardInterrupt:
            raise _fail("interrupted", 130) from None

    return wrapper  # type: ignore[return-value]


@app.callback()
def _setup(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("optuna", "distributed", "sqlalchemy", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@app.command()
@known_errors
def train(
    config: Annotated[Path, typer.Option("--config", "-c", help="TrainConfig YAML/JSON file.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (generator, samples, metrics).")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a field: key=value (repeatable).")] = None,
    data_root: Annotated[str | None, typer.Option("--data-root", help="Dataset folder (overrides data_root).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUT/checkpoint.pt.")] = False,
) -> None:
    """Train one GAN from a config file (production training, the same code as every trial)."""
    from trainer import TrainConfig, load_data, resolve_device
    from trainer import train as run_training
    from trainer.io import CHECKPOINT_FILE
    from trainer.metrics import make_evaluator

    overrides = list(set_ or []) + ([f"data_root={data_root}"] if data_root else [])
    cfg = TrainConfig.from_file(config, overrides)
    ckpt = out / CHECKPOINT_FILE
    if resume and not ckpt.is_file():
        raise ConfigError(f"--resume needs {ckpt}, which does not exist.")
    device = resolve_device(cfg.device)
    data = load_data(cfg, device)
    evaluator = make_evaluator(cfg, data, device)
    result = run_training(cfg, data=data, out_dir=out, evaluator=evaluator,
                          resume_from=ckpt if resume else None, progress=True)
    summary = {"out": str(out), "steps": result.steps, "images_seen": result.images_seen,
               "images_per_s": round(result.images_per_s, 1), "device": result.device, **result.final_metrics}
    typer.echo(json.dumps(summary))


@app.command()
@known_errors
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="A folder written by `gan-search train` or `export`.")],
    metric: Annotated[list[str] | None, typer.Option(help="fid, kid or classes (repeatable; default: fid and kid). "
                                                          "classes: share of samples per class (mode coverage).")] = None,
    samples: Annotated[int | None, typer.Option(help="Generated images to score (default: eval_samples).")] = None,
    data_root: Annotated[str | None, typer.Option("--data-root", help="Dataset folder (overrides data_root).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Score a trained generator folder with FID and KID against the held-out split."""
    from trainer import evaluate as score

    result = score(run_dir, metrics=tuple(metric) if metric else ("fid", "kid"), samples=samples, data_root=data_root)
    if json_out:
        typer.echo(json.dumps(result))
    else:
        for k, v in result.items():
            typer.echo(f"{k}: {v}" if isinstance(v, list) else f"{k}: {v:.6g}")


StorageOpt = Annotated[str | None, typer.Option("--storage", help="SQLAlchemy URL (default: $GAN_SEARCH_STORAGE, "
                                                     "then the study file's, then sqlite:///runs/gan-search.db).")]


def _storage_url(url: str | None) -> str:
    import os

    from search.spec import DEFAULT_STORAGE

    return url or os.environ.get("GAN_SEARCH_STORAGE") or DEFAULT_STORAGE


def _summary_table(study: Any) -> str:
    from optuna.trial import TrialState

    from search.workers import describe_progress, progress

    lines = [describe_progress(progress(study))]
    lines.append(f"{'#':>4} {'state':<9} {'value':>10} {'images':>8} {'img/s':>8}  params / reason")
    for t in study.get_trials(deepcopy=False):
        value = f"{t.value:.4g}" if t.value is not None else "-"
        if t.state != TrialState.COMPLETE and t.intermediate_values:
            value = f"({list(t.intermediate_values.values())[-1]:.4g})"
        why = t.user_attrs.get(attrs.PRUNE_REASON) or t.user_attrs.get(attrs.FAIL_REASON) or ""
        params = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.params.items())
        lines.append(f"{t.number:>4} {t.state.name:<9} {value:>10} {t.user_attrs.get(attrs.IMAGES_SEEN, 0):>8} "
                     f"{t.user_attrs.get(attrs.IMAGES_PER_S, 0):>8}  {params}{'  <- ' + why if why else ''}")
    return "\n".join(lines)


def _create_and_plan(study_file: Path, storage: str | None, artifacts: str | None, n_trials: int | None,
                     data_root: str | None, timeout: float | None = None) -> tuple[Any, Any, int]:
    """Validate the study file and its data (before anything is created), create or load the study, store the plan."""
    from search.spec import StudySpec
    from search.storage import redact
    from search.workers import create_or_load_study, plan

    if n_trials is not None and n_trials < 1:
        raise ConfigError(f"--n-trials must be >= 1, but got {n_trials}.")
    spec = StudySpec.from_file(study_file)
    if data_root:
        raw = dict(spec.raw)
        raw["train"] = {**raw.get("train", {}), "data_root": data_root}
        spec = StudySpec.from_dict(raw, source=str(study_file))
    spec = spec.with_overrides(storage=storage, artifacts=artifacts, n_trials=n_trials, timeout=timeout)
    from search.storage import check_url
    from trainer import load_data

    check_url(spec.storage)  # a malformed URL fails before the data is read
    load_data(spec.train.replace(device="cpu"))  # missing or unreadable data fails here, before any row or folder
    study = create_or_load_study(spec)
    added = plan(study, spec.n_trials, spec.warm_start)
    log.info("study %s on %s: %d trials planned (%d warm starts enqueued now)", spec.name, redact(spec.storage),
             spec.n_trials, added)
    return spec, study, added


@app.command()
@known_errors
def run(
    study_file: Annotated[Path, typer.Argument(help="A study file (studies/*.yaml).")],
    storage: StorageOpt = None,
    artifacts: Annotated[str | None, typer.Option(help="Artifact folder (default: the study file's).")] = None,
    n_trials: Annotated[int | None, typer.Option("--n-trials", help="Study-wide total of trials.")] = None,
    timeout: Annotated[float | None, typer.Option(help="Stop starting trials after this many seconds.")] = None,
    workers: Annotated[int, typer.Option(help="Worker processes on this machine (joblib).")] = 1,
    backend: Annotated[str, typer.Option(help="local or dask.")] = "local",
    scheduler: Annotated[str | None, typer.Option(help="Dask scheduler address (backend dask).")] = None,
    data_root: Annotated[str | None, typer.Option("--data-root", help="Dataset folder (overrides train.data_root).")] = None,
    export_to: Annotated[Path | None, typer.Option("--export", help="Export the best trial here when done.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Create or resume a study and run its trials; ends with a summary table."""
    import time

    from search.workers import progress, run_workers, trials_summary

    if backend not in ("local", "dask"):
        raise ConfigError(f"--backend must be local or dask, but got {backend!r}.")
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, but got {workers}.")
    spec, study, _ = _create_and_plan(study_file, storage, artifacts, n_trials, data_root, timeout)
    if spec.storage.startswith("sqlite") and workers > 1 and backend == "local":
        log.info("SQLite with %d local workers: WAL mode, long lock timeouts and a claim lock are on; for many "
                 "workers use PostgreSQL or MySQL", workers)
    start = time.perf_counter()
    reports = run_workers(spec.name, spec.storage, workers, artifacts=spec.artifacts, timeout=spec.timeout,
                          backend=backend, scheduler=scheduler)
    wall = time.perf_counter() - start
    if export_to is not None:
        _export_study(study, spec, export_to)
    best = _best_or_none(study)
    if json_out:
        typer.echo(json.dumps({"study": spec.name, "wall_seconds": round(wall, 1), "states": trials_summary(study),
                               "progress": progress(study),
                               "best_value": best.value if best else None, "best_params": best.params if best else None,
                               "workers": [r.__dict__ for r in reports]}))
    else:
        typer.echo(_summary_table(study))
        if best is not None:
            typer.echo(f"best: trial {best.number} value {best.value:.4g} params {best.params}")
        typer.echo(f"wall time {wall:.1f} s")


@app.command()
@known_errors
def create(
    study_file: Annotated[Path, typer.Argument(help="A study file (studies/*.yaml).")],
    storage: StorageOpt = None,
    artifacts: Annotated[str | None, typer.Option(help="Artifact folder (default: the study file's).")] = None,
    n_trials: Annotated[int | None, typer.Option("--n-trials", help="Study-wide total of trials.")] = None,
    data_root: Annotated[str | None, typer.Option("--data-root", help="Dataset folder (overrides train.data_root).")] = None,
) -> None:
    """Create (or update) a study and plan its trials without running any: workers then join it by name."""
    from search.storage import redact

    spec, _, added = _create_and_plan(study_file, storage, artifacts, n_trials, data_root)
    typer.echo(json.dumps({"study": spec.name, "storage": redact(spec.storage), "n_trials": spec.n_trials,
                           "warm_starts_enqueued": added}))


def _best_or_none(study: Any) -> Any:
    from search.export import ranked

    trials = ranked(study)
    return trials[0] if trials else None


@app.command()
@known_errors
def worker(
    study_name: Annotated[str, typer.Argument(help="Name of an existing study.")],
    storage: StorageOpt = None,
    artifacts: Annotated[str | None, typer.Option(help="Artifact folder (default: the one stored with the study).")] = None,
    device: Annotated[str | None, typer.Option(help="Device of this worker (default: the study's).")] = None,
    timeout: Annotated[float | None, typer.Option(help="Stop starting trials after this many seconds.")] = None,
) -> None:
    """Join an existing study (from any machine) and run its waiting trials."""
    from search.workers import work

    report = work(study_name, _storage_url(storage), artifacts=artifacts, device=device, timeout=timeout)
    typer.echo(json.dumps(report.__dict__))


@app.command()
@known_errors
def status(
    study_name: Annotated[str, typer.Argument(help="Name of the study.")],
    storage: StorageOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Trials by state, pruned trials with reasons, best value and params."""
    from search.storage import load_study, make_storage
    from search.workers import progress, trials_summary

    study = load_study(study_name, make_storage(_storage_url(storage)))
    best = _best_or_none(study)
    if json_out:
        pruned = {t.number: t.user_attrs.get(attrs.PRUNE_REASON) for t in study.get_trials(deepcopy=False)
                  if t.state.name == "PRUNED"}
        typer.echo(json.dumps({"study": study_name, "states": trials_summary(study), "progress": progress(study),
                               "pruned": pruned,
                               "best_trial": best.number if best else None, "best_value": best.value if best else None,
                               "best_params": best.params if best else None}))
        return
    typer.echo(_summary_table(study))
    if best is not None:
        typer.echo(f"best: trial {best.number} value {best.value:.4g} params {best.params}")


def _export_study(study: Any, spec: Any, out: Path, retrain: int | None = None,
                  confirmed: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    from search.export import best_trial, export
    from search.storage import artifact_store

    best_trial(study)  # fails before anything is written
    store = artifact_store(study.user_attrs.get(attrs.ARTIFACTS) or spec.artifacts)
    tmp = _atomic_dir(out)
    try:
        metrics = export(study, spec, tmp, store, retrain_images=retrain, confirmed=confirmed)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _publish(tmp, out)
    return metrics


@app.command("export")
@known_errors
def export_cmd(
    study_name: Annotated[str, typer.Argument(help="Name of the study.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write (replaced if it exists).")],
    storage: StorageOpt = None,
    retrain: Annotated[int | None, typer.Option(help="Retrain the best config for this many images first.")] = None,
    confirm: Annotated[int, typer.Option(help="Re-run the top K configs with fresh seeds; pick the best mean.")] = 0,
    seeds: Annotated[int, typer.Option(help="Fresh seeds per confirmed config.")] = 3,
    workers: Annotated[int, typer.Option(help="Worker processes for the confirmation runs.")] = 1,
) -> None:
    """Export the best trial: config.yaml (for `gan-search train`), generator, samples, metrics.json, report.html."""
    from search.export import best_trial, confirmation_table, enqueue_confirmations
    from search.storage import load_study, make_storage
    from search.workers import run_workers, stored_spec

    if retrain is not None and retrain < 1:
        raise ConfigError(f"--retrain must be a number of images >= 1, but got {retrain}.")
    if confirm < 0 or seeds < 1:
        raise ConfigError(f"--confirm must be >= 0 and --seeds >= 1, but got confirm={confirm}, seeds={seeds}.")
    url = _storage_url(storage)
    study = load_study(study_name, make_storage(url))
    spec = stored_spec(study, url)
    best_trial(study)
    confirmed = None
    if confirm:
        origins = enqueue_confirmations(study, confirm, seeds)
        run_workers(study_name, url, workers, new_trials=False)
        confirmed = confirmation_table(study, origins)
    metrics = _export_study(study, spec, out, retrain, confirmed)
    typer.echo(json.dumps({"out": str(out), "trial": metrics["trial"], "value": metrics["value"],
                           **({"confirmation": confirmed} if confirmed else {})}))


@app.command()
@known_errors
def dashboard(
    storage: StorageOpt = None,
    host: Annotated[str, typer.Option(help="Address to bind (127.0.0.1 unless you mean otherwise).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8080,
    artifacts: Annotated[str | None, typer.Option(help="Artifact folder (default: the one stored with a study).")] = None,
) -> None:
    """optuna-dashboard on the same storage, with the artifact store wired in."""
    import optuna
    from optuna_dashboard import run_server

    from search.spec import DEFAULT_ARTIFACTS
    from search.storage import artifact_store, make_storage, redact

    url = _storage_url(storage)
    rdb = make_storage(url)
    if artifacts is None:
        for summary in optuna.get_all_study_summaries(rdb, include_best_trial=False):
            artifacts = summary.user_attrs.get(attrs.ARTIFACTS)
            if artifacts:
                break
    log.info("dashboard on http://%s:%d for %s", host, port, redact(url))
    run_server(rdb, host=host, port=port, artifact_store=artifact_store(artifacts or DEFAULT_ARTIFACTS))


def _atomic_dir(out: Path) -> Path:
    """A temporary sibling of ``out`` to write into before a rename (nothing half-written)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))


def _publish(tmp: Path, out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    out.chmod(0o755)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
