"""The ``gan-search`` command line: results to stdout, progress and logs to stderr."""

from __future__ import annotations

import functools
import json
import logging
import sys
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
    for noisy in ("optuna", "distributed", "sqlalchemy", "PIL", "botocore", "boto3", "urllib3"):
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
    from trainer import TrainConfig, prepare
    from trainer import train as run_training
    from trainer.io import CHECKPOINT_FILE

    overrides = list(set_ or []) + ([f"data_root={data_root}"] if data_root else [])
    cfg = TrainConfig.from_file(config, overrides)
    ckpt = out / CHECKPOINT_FILE
    if resume and not ckpt.is_file():
        raise ConfigError(f"--resume needs {ckpt}, which does not exist.")
    if resume:
        from trainer.checkpoint import read_checkpoint

        read_checkpoint(ckpt)  # a truncated or foreign file: one line, exit 2, before anything runs
    setup = prepare(cfg)
    result = run_training(cfg, data=setup.data, out_dir=out, evaluator=setup.evaluator,
                          resume_from=ckpt if resume else None, progress=True)
    summary = {"out": str(out), "steps": result.steps, "images_seen": result.images_seen,
               "images_per_s": round(result.images_per_s, 1), "device": result.device, **result.final_metrics}
    typer.echo(json.dumps(summary))


@app.command()
@known_errors
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="A folder written by `gan-search train` or `export`.")],
    metric: Annotated[list[str] | None, typer.Option(help="fid, kid, classes or coverage (repeatable; default: fid and kid). "
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


TensorboardOpt = Annotated[str | None, typer.Option("--tensorboard", help="Also log each trial's losses, objective and "
                                                   "grids here for TensorBoard (needs the tensorboard package).")]


PackOpt = Annotated[int, typer.Option("--pack", help="Trials each worker trains at once as one vectorised model "
                                                "(trials whose networks match share a pack).")]


def _summary_table(study: Any) -> str:
    from optuna.trial import TrialState

    from search.strategy.pbt import describe as pbt_line
    from search.strategy.promotion import describe as rung_line
    from search.strategy.study import describe_progress, progress

    lines = [describe_progress(progress(study))]
    lines.append(f"{'#':>4} {'state':<9} {'value':>14} {'images':>8} {'img/s':>8}  {'prec  rec   cov   min%':<22}"
                 "  params / reason")
    for t in study.get_trials(deepcopy=False):
        value = "/".join(f"{v:.4g}" for v in t.values) if t.values is not None else "-"
        if t.state != TrialState.COMPLETE and t.intermediate_values:
            value = f"({list(t.intermediate_values.values())[-1]:.4g})"
        if t.user_attrs.get(attrs.FEASIBLE) is False:
            value = "x " + value  # misses a constraint
        why = (t.user_attrs.get(attrs.PRUNE_REASON) or t.user_attrs.get(attrs.FAIL_REASON) or pbt_line(t)
               or rung_line(t))
        if attrs.CONFIRM in t.user_attrs:
            why = why or f"confirms trial {t.user_attrs[attrs.CONFIRM]} (seed {t.user_attrs.get(attrs.SEED)})"
        params = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.params.items())
        who = f"  [{t.user_attrs[attrs.WORKER]}]" if attrs.WORKER in t.user_attrs else ""
        lines.append(f"{t.number:>4} {t.state.name:<9} {value:>14} {t.user_attrs.get(attrs.IMAGES_SEEN, 0):>8} "
                     f"{t.user_attrs.get(attrs.IMAGES_PER_S, 0):>8}  {coverage_cells(t):<22}  "
                     f"{params}{'  <- ' + why if why else ''}{who}")
    return "\n".join(lines)


def coverage_cells(t: Any) -> str:
    """Precision, recall, coverage and the smallest class share (%) of the trial's last evaluation."""
    m = t.user_attrs.get(attrs.METRICS) or {}
    cells = [f"{m[k]:.2f}" if k in m else "  - " for k in ("precision", "recall", "coverage")]
    cells.append(f"{100 * m['class_min_share']:.1f}" if "class_min_share" in m else "-")
    return "  ".join(cells)


def _print_best(study: Any) -> None:
    from search.api import best_or_none

    best = best_or_none(study)
    if best is not None:
        values = "/".join(f"{v:.4g}" for v in best.values)
        typer.echo(f"best: trial {best.number} value {values} params {best.params}")


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
    export_to: Annotated[Path | None, typer.Option("--export", help="Export the best trial here when done (confirmed first "
                                                                     "if the study file's export: says so).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    tensorboard: TensorboardOpt = None,
    pack: PackOpt = 1,
    workers_per_device: Annotated[int | None, typer.Option("--workers-per-device", help="Worker processes per GPU "
                                  "(sharing the card); workers = this x the GPUs. Not with --workers.")] = None,
) -> None:
    """Create or resume a study and run its trials; ends with a summary table."""
    from search import api

    result = api.run(study_file, storage=storage, artifacts=artifacts, n_trials=n_trials, timeout=timeout,
                     workers=workers, backend=backend, scheduler=scheduler, data_root=data_root, export_to=export_to,
                     show_progress=True, tensorboard=tensorboard, pack=pack, workers_per_device=workers_per_device)
    if json_out:
        typer.echo(json.dumps(result.summary()))
    else:
        typer.echo(_summary_table(result.study))
        _print_best(result.study)
        typer.echo(f"wall time {result.wall_seconds:.1f} s")


@app.command()
@known_errors
def create(
    study_file: Annotated[Path, typer.Argument(help="A study file (studies/*.yaml).")],
    storage: StorageOpt = None,
    artifacts: Annotated[str | None, typer.Option(help="Artifact folder (default: the study file's).")] = None,
    n_trials: Annotated[int | None, typer.Option("--n-trials", help="Study-wide total of trials.")] = None,
    data_root: Annotated[str | None, typer.Option("--data-root", help="Dataset folder (overrides train.data_root).")] = None,
    workers: Annotated[int, typer.Option(help="Workers that will run at once (sets the startup counts the file "
                                         "leaves unset for that many: docs/workers.md).")] = 1,
) -> None:
    """Create (or update) a study and plan its trials without running any: workers then join it by name."""
    from search import api
    from search.store.storage import redact

    spec = api.load_spec(study_file, storage=storage, artifacts=artifacts, n_trials=n_trials, data_root=data_root,
                         workers=workers)
    _, added = api.create(spec)
    typer.echo(json.dumps({"study": spec.name, "storage": redact(spec.storage), "n_trials": spec.n_trials,
                           "warm_starts_enqueued": added}))


@app.command()
@known_errors
def worker(
    study_name: Annotated[str, typer.Argument(help="Name of an existing study.")],
    storage: StorageOpt = None,
    artifacts: Annotated[str | None, typer.Option(help="Artifact folder (default: the one stored with the study).")] = None,
    device: Annotated[str | None, typer.Option(help="Device of this worker (default: the study's).")] = None,
    timeout: Annotated[float | None, typer.Option(help="Stop starting trials after this many seconds.")] = None,
    tensorboard: TensorboardOpt = None,
    pack: PackOpt = 1,
) -> None:
    """Join an existing study (from any machine) and run its waiting trials."""
    from search.execution.worker import block_stop_signals

    block_stop_signals()  # until the worker's own handlers are set: a Slurm warning now must not kill it
    from search import api

    report = api.work(study_name, storage, artifacts=artifacts, device=device, timeout=timeout, show_progress=True,
                      tensorboard=tensorboard, pack=pack)
    typer.echo(json.dumps(report.__dict__))


@app.command()
@known_errors
def slurm(
    study_file: Annotated[Path, typer.Argument(help="A study file (studies/*.yaml).")],
    workers: Annotated[int, typer.Option(help="Array tasks: one gan-search worker each.")],
    storage: StorageOpt = None,
    artifacts: Annotated[str | None, typer.Option(help="Artifact folder every node sees (default: the study "
                                                  "file's), or s3://bucket/prefix.")] = None,
    n_trials: Annotated[int | None, typer.Option("--n-trials", help="Study-wide total of trials.")] = None,
    data_root: Annotated[str | None, typer.Option("--data-root", help="Dataset folder (overrides train.data_root).")] = None,
    gpus_per_worker: Annotated[int, typer.Option("--gpus-per-worker", help="GPUs per task: 0 or 1 (--gres=gpu:1; a "
                                                 "worker trains on one device: more GPUs, more workers).")] = 0,
    cpus_per_worker: Annotated[int, typer.Option("--cpus-per-worker", help="CPUs per task (torch threads).")] = 1,
    partition: Annotated[str | None, typer.Option(help="Slurm partition.")] = None,
    time_limit: Annotated[str | None, typer.Option("--time", help="Time limit per task (Slurm's forms: "
                                                   "minutes, H:M:S, D-H:M:S).")] = None,
    max_requeues: Annotated[int, typer.Option("--max-requeues", help="Times a task requeues itself when its time "
                                              "limit is near (the study outlives --time).")] = 10,
    sbatch_arg: Annotated[list[str] | None, typer.Option("--sbatch-arg", help="Another #SBATCH option "
                                                         "(repeatable), e.g. --sbatch-arg=--qos=high.")] = None,
    setup: Annotated[list[str] | None, typer.Option("--setup", help="A shell line run before the worker "
                                                    "(repeatable): module load ..., conda activate ...")] = None,
    script_only: Annotated[bool, typer.Option("--script-only", help="Write the job script (and create the study) "
                                                                    "but do not submit it.")] = False,
) -> None:
    """Run the study's workers as one Slurm job array: the job script is written beside the study file
    (STUDY_FILE's folder, NAME.slurm.sh; edit and resubmit it with sbatch); prints the job id as JSON."""
    from search import api

    typer.echo(json.dumps(api.slurm(study_file, workers, storage=storage, artifacts=artifacts, n_trials=n_trials,
                                    data_root=data_root, gpus_per_worker=gpus_per_worker,
                                    cpus_per_worker=cpus_per_worker, partition=partition, time_limit=time_limit,
                                    max_requeues=max_requeues, sbatch_args=tuple(sbatch_arg or ()), setup=tuple(setup or ()),
                                    script_only=script_only)))


@app.command()
@known_errors
def proxy(
    storage: StorageOpt = None,
    host: Annotated[str, typer.Option(help="Address to listen on (127.0.0.1 unless workers are on other machines).")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port workers connect to: --storage grpc://HOST:PORT.")] = 13000,
    threads: Annotated[int, typer.Option(help="Requests served at once: at most this many database connections.")] = 16,
) -> None:
    """Serve a study database to many workers through Optuna's gRPC storage proxy (see search/store/proxy.py)."""
    import os

    from search.store.proxy import is_proxy_url, serve
    from search.store.storage import check_url, make_storage, redact

    url = storage or os.environ.get("GAN_SEARCH_STORAGE")
    if not url or is_proxy_url(url):
        raise ConfigError("storage must be the database URL the proxy serves (--storage or $GAN_SEARCH_STORAGE).")
    check_url(url)
    if threads < 1:
        raise ConfigError(f"threads must be >= 1, but got {threads=}.")
    typer.echo(f"serving {redact(url)} on grpc://{host}:{port}", err=True)
    serve(make_storage(url, pool=threads), host=host, port=port, threads=threads)


@app.command()
@known_errors
def replay(
    study_name: Annotated[str, typer.Argument(help="Name of an existing study.")],
    curves: Annotated[Path, typer.Option(help="Recorded curves: a search benchmark's results JSON "
                                              "(e.g. benchmarks/results/search-mnist-2026-11-26.json).")],
    storage: StorageOpt = None,
    threads: Annotated[int, typer.Option(help="Replay workers in this process (threads, a storage client each).")] = 1,
    trial_seconds: Annotated[float, typer.Option(help="A whole trial's nominal duration.")] = 60.0,
    compress: Annotated[float, typer.Option(help="Sleep trial_seconds / compress per trial.")] = 1.0,
    first: Annotated[int, typer.Option(help="Number of this process's first worker (for the reports).")] = 0,
    timeout: Annotated[float | None, typer.Option(help="Stop starting trials after this many seconds.")] = None,
) -> None:
    """Replay workers: the real claim/report/prune/record path with recorded curves instead of training
    (no torch; to measure coordination at cluster scale, see benchmarks/scale/cluster.py)."""
    import os

    from search.execution.launch import replay_workers
    from search.execution.replay import Curves, Replay

    url = storage or os.environ.get("GAN_SEARCH_STORAGE")
    if not url:
        raise ConfigError("storage must be given (--storage or $GAN_SEARCH_STORAGE) for replay workers.")
    if not curves.is_file():
        raise ConfigError(f"curves must be a readable JSON file of recorded curves, but got {str(curves)!r}.")
    try:
        recorded = Curves.load(curves)
        settings = Replay(recorded, trial_seconds, compress)
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"curves/trial_seconds/compress: {str(exc).splitlines()[0]}") from None
    if threads < 1:
        raise ConfigError(f"threads must be >= 1, but got {threads=}.")
    reports = replay_workers(study_name, url, settings, threads, first=first, timeout=timeout)
    typer.echo(json.dumps([r.__dict__ for r in reports]))


@app.command()
@known_errors
def status(
    study_name: Annotated[str, typer.Argument(help="Name of the study.")],
    storage: StorageOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    watch: Annotated[bool, typer.Option("--watch", help="Refresh the view until the study has nothing left to run "
                                                        "(Ctrl-C stops watching, not the study).")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between refreshes with --watch.")] = 2.0,
) -> None:
    """The plan in one line, trials by state, pruned trials with reasons, best value and params."""
    from search import api

    if watch:
        from search.results.progress import watch as watch_study

        if interval <= 0:
            raise ConfigError(f"interval must be > 0 seconds, but got {interval=}.")
        study, _ = api.open_study(study_name, storage)
        watch_study(study, sys.stdout, interval, table=_summary_table)
        return
    if json_out:
        typer.echo(json.dumps(api.status(study_name, storage)))
        return
    study, _ = api.open_study(study_name, storage)
    typer.echo(_summary_table(study))
    _print_best(study)


@app.command("export")
@known_errors
def export_cmd(
    study_name: Annotated[str, typer.Argument(help="Name of the study.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write (replaced if it exists).")],
    storage: StorageOpt = None,
    retrain: Annotated[int | None, typer.Option(help="Retrain the best config for this many images first.")] = None,
    confirm: Annotated[int | None, typer.Option(help="Re-run the top K configs with fresh seeds; pick the best mean "
                                                     "(default: the study file's export.confirm, else 0).")] = None,
    seeds: Annotated[int | None, typer.Option(help="Fresh seeds per confirmed config (default: export.seeds, "
                                                   "else 3).")] = None,
    images: Annotated[int | None, typer.Option(help="Images each confirmation run trains (the production budget; "
                                                     "default: export.images, else the trial budget). The winner's "
                                                     "run is exported.")] = None,
    workers: Annotated[int, typer.Option(help="Worker processes for the confirmation runs.")] = 1,
    report_plotlyjs: Annotated[str, typer.Option("--report-plotlyjs", help="inline: report.html works offline "
                                                 "(~4.8 MB, plotly.js inside); cdn: ~100 kB, needs the internet.")] = "inline",
) -> None:
    """Export the best trial: config.yaml (for `gan-search train`), generator, samples, metrics.json, report.html."""
    from search import api

    typer.echo(json.dumps(api.export(study_name, out, storage=storage, retrain=retrain, confirm=confirm, seeds=seeds,
                                     images=images, workers=workers, plotlyjs=report_plotlyjs)))


@app.command()
@known_errors
def dashboard(
    storage: StorageOpt = None,
    host: Annotated[str, typer.Option(help="Address to bind (127.0.0.1 unless you mean otherwise).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8080,
    artifacts: Annotated[str | None, typer.Option(help="Artifact folder or s3://bucket/prefix for every study "
                                                  "(default: each study's own).")] = None,
) -> None:
    """optuna-dashboard on the same storage; each study's artifacts from its own folder or bucket."""
    from search import api

    api.dashboard(storage, host=host, port=port, artifacts=artifacts)


def main() -> None:
    import os

    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # plug-ins named 'pkg.module:attr' import from here, as with `python -m`
    app()


if __name__ == "__main__":
    main()
