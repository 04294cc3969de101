"""The service's Python API: what the CLI does, callable from a notebook (the CLI only parses and prints).

    from search import api
    result = api.run("studies/digits-quick.yaml", workers=2, export_to="runs/best")
    api.status("digits-quick", storage="sqlite:///runs/gan-search.db")
    api.export("digits-quick", "runs/best", confirm=3, seeds=3)
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from search import attrs
from search.errors import check_study_name
from search.execution.launch import devices, run_workers
from search.execution.worker import WorkerReport
from search.execution.worker import work as run_worker
from search.results.export import (
    confirmation_table,
    enqueue_confirmations,
    enqueue_race_seeds,
    finalists,
    race_runs,
    race_table,
    record_confirmations,
)
from search.results.export import export as write_export
from search.results.progress import Monitor
from search.results.selection import best_trial, primary, ranked, seed_noise, signs, still_racing
from search.spec.study_file import DEFAULT_ARTIFACTS, DEFAULT_STORAGE, StudySpec
from search.store.artifacts import StudyStores, artifact_store, check_artifacts, is_s3, resolved, split_s3
from search.store.storage import check_url, load_study, make_storage, redact
from search.strategy.promotion import ladder as promotion_ladder
from search.strategy.scale import for_workers
from search.strategy.schedulers import scheduler_for
from search.strategy.study import create_or_load_study, progress, stored_spec, trials_summary
from search.strategy.transfer import resolve as resolve_warm_from
from trainer import load_data
from trainer.errors import ConfigError
from trainer.models import check_models

log = logging.getLogger(__name__)


def storage_url(url: str | None) -> str:
    """``url``, else ``$GAN_SEARCH_STORAGE``, else the default SQLite file."""
    return url or os.environ.get("GAN_SEARCH_STORAGE") or DEFAULT_STORAGE


def load_spec(study_file: str | os.PathLike[str], *, storage: str | None = None, artifacts: str | None = None,
              n_trials: int | None = None, timeout: float | None = None, data_root: str | None = None,
              workers: int = 1) -> StudySpec:
    """The study file with command-line overrides, validated (nothing is written); with ``workers`` > 1, the
    defaults that depend on the number of concurrent workers where the file sets none (``search.strategy.scale``)."""
    if n_trials is not None and n_trials < 1:
        raise ConfigError(f"n_trials must be >= 1, but got {n_trials=}.")
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, but got {workers=}.")
    spec = StudySpec.from_file(study_file)
    if data_root:
        spec = StudySpec.from_dict({**spec.raw, "train": {**spec.raw.get("train", {}), "data_root": data_root}},
                                   source=str(study_file))
    if spec.scheduler is not None and n_trials is not None:
        raise ConfigError(f"n_trials is population x segments under PBT ({spec.n_trials} here); "
                          f"change budget.trial_images or scheduler.population instead, but got {n_trials=}.")
    spec = spec.with_overrides(storage=storage, artifacts=artifacts, n_trials=n_trials, timeout=timeout)
    spec = resolve_warm_from(spec, ranked)  # another study's best configs, read now: an unknown study fails before any write
    return for_workers(spec, workers) if workers > 1 else spec


def create(spec: StudySpec) -> tuple[optuna.Study, int]:
    """Check the storage URL, the data and the models, then create (or load) the study and store its plan.

    Everything that can fail on bad input fails before the first row or folder is written. Returns the
    study and the number of warm-start trials enqueued now.
    """
    check_url(spec.storage)
    check_artifacts(spec.artifacts, spec.s3)  # an S3 bucket that is missing or out of reach fails here
    spec = resolve_warm_from(spec, ranked)  # (a spec from load_spec has none left)
    data = load_data(spec.train.replace(device="cpu"))  # missing or unreadable data fails here
    from trainer.metrics import mode_samples

    mode_samples(spec.train, data)  # too few samples to count modes fails here
    check_models(spec.train, data.shape)  # so does a plug-in arch or loss that fails to import, build or fit
    study = create_or_load_study(spec)
    added = scheduler_for(spec).plan(study, spec.n_trials)
    log.info("study %s on %s: %d trials planned (%d warm starts enqueued now)", spec.name, redact(spec.storage),
             spec.n_trials, added)
    return study, added


@dataclass
class RunResult:
    study: optuna.Study
    spec: StudySpec
    wall_seconds: float
    workers: list[WorkerReport]
    export: dict[str, Any] | None = None

    def summary(self) -> dict[str, Any]:
        best = best_or_none(self.study)
        return {"study": self.spec.name, "wall_seconds": round(self.wall_seconds, 1),
                "states": trials_summary(self.study), "progress": progress(self.study),
                "best_value": primary(best) if best else None, "best_params": best.params if best else None,
                "workers": [r.__dict__ for r in self.workers]}


def run(study_file: str | os.PathLike[str], *, storage: str | None = None, artifacts: str | None = None,
        n_trials: int | None = None, timeout: float | None = None, workers: int = 1, backend: str = "local",
        scheduler: str | None = None, data_root: str | None = None,
        export_to: str | os.PathLike[str] | None = None, show_progress: bool = False,
        tensorboard: str | None = None, pack: int = 1, workers_per_device: int | None = None) -> RunResult:
    """Create or resume the study of ``study_file`` and run its trials with ``workers`` workers.

    ``show_progress``: a study-level progress bar on stderr (a terminal), or a log line per change.
    ``tensorboard``: a folder where each trial also logs its losses, objective and grids for TensorBoard.
    ``pack``: trials each worker trains at once as one vectorised model; ``workers_per_device``: worker
    processes per GPU (then ``workers`` is that times the GPUs).
    """
    check_tensorboard(tensorboard)
    if pack < 1:
        raise ConfigError(f"pack must be >= 1 trials per worker, but got {pack=}.")
    if workers_per_device is not None:
        if workers_per_device < 1:
            raise ConfigError(f"workers_per_device must be >= 1, but got {workers_per_device=}.")
        if workers != 1:
            raise ConfigError("give workers or workers_per_device, not both (workers = workers_per_device x devices).")
        workers = workers_per_device * devices()
    if backend not in ("local", "dask"):
        raise ConfigError(f"backend must be local or dask, but got {backend=}.")
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, but got {workers=}.")
    spec = load_spec(study_file, storage=storage, artifacts=artifacts, n_trials=n_trials, timeout=timeout,
                     data_root=data_root, workers=workers)
    study, _ = create(spec)
    if spec.storage.startswith("sqlite") and workers > 1 and backend == "local":
        log.info("SQLite with %d local workers: WAL mode, long lock timeouts and a claim lock are on; for many "
                 "workers use PostgreSQL or MySQL", workers)
    start = time.perf_counter()
    with Monitor(study) if show_progress else contextlib.nullcontext():
        reports = run_workers(spec.name, spec.storage, workers, artifacts=spec.artifacts, timeout=spec.timeout,
                              backend=backend, scheduler=scheduler, tensorboard=tensorboard, pack=pack,
                              per_device=workers_per_device or 1)
    wall = time.perf_counter() - start
    exported = None
    if export_to is not None:  # as `gan-search export` would, by the study file's export rule
        exported = confirm_and_export(study, spec, Path(export_to), workers=workers if backend == "local" else 1)
    return RunResult(study, spec, wall, reports, exported)


def work(name: str, storage: str | None = None, *, artifacts: str | None = None, device: str | None = None,
         timeout: float | None = None, show_progress: bool = False, tensorboard: str | None = None,
         pack: int = 1) -> WorkerReport:
    """Join an existing study as one worker (from any machine) and run trials until its plan is done."""
    check_study_name(name, "study name")
    check_tensorboard(tensorboard)
    if pack < 1:
        raise ConfigError(f"pack must be >= 1 trials per worker, but got {pack=}.")
    url = storage_url(storage)
    study, _ = open_study(name, url)
    with Monitor(study) if show_progress else contextlib.nullcontext():
        return run_worker(name, url, artifacts=artifacts, device=device, timeout=timeout, tensorboard=tensorboard,
                          pack=pack)


def check_tensorboard(folder: str | None) -> None:
    """``--tensorboard`` needs the tensorboard package: say so before anything runs."""
    if folder is not None:
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            raise ConfigError("tensorboard: the tensorboard package is not installed (pip install "
                              "'gan-search[tensorboard]'), but --tensorboard was given.") from None


def open_study(name: str, storage: str | None = None) -> tuple[optuna.Study, str]:
    check_study_name(name, "study name")
    url = storage_url(storage)
    return load_study(name, make_storage(url)), url


def best_or_none(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    trials = ranked(study)
    return trials[0] if trials else None


def status(name: str, storage: str | None = None) -> dict[str, Any]:
    """Where a study stands: the plan, states, pruned trials with reasons, the best trial, the promotion decisions
    and seed races (promotion by continuation)."""
    study, _ = open_study(name, storage)
    best = best_or_none(study)
    pruned = {t.number: t.user_attrs.get(attrs.PRUNE_REASON) for t in study.get_trials(deepcopy=False)
              if t.state.name == "PRUNED"}
    return {"study": name, "states": trials_summary(study), "progress": progress(study), "pruned": pruned,
            "best_trial": best.number if best else None, "best_value": primary(best) if best else None,
            "best_values": best.values if best else None, "best_params": best.params if best else None,
            "best_metrics": best.user_attrs.get(attrs.METRICS) if best else None,
            "best_class_shares": best.user_attrs.get(attrs.CLASS_SHARES) if best else None,
            "confirmations": study.user_attrs.get(attrs.CONFIRMATIONS, []),  # seed races: with their seed noise
            "promotions": {t.number: {"continues": t.user_attrs[attrs.CONTINUES], **t.user_attrs.get(attrs.PROMOTION, {})}
                           for t in study.get_trials(deepcopy=False) if attrs.CONTINUES in t.user_attrs},
            "workers": {t.number: t.user_attrs.get(attrs.WORKER) for t in study.get_trials(deepcopy=False)
                        if attrs.WORKER in t.user_attrs}}


def slurm(study_file: str | os.PathLike[str], workers: int, *, storage: str | None = None,
          artifacts: str | None = None, n_trials: int | None = None, data_root: str | None = None,
          gpus_per_worker: int = 0, cpus_per_worker: int = 1, partition: str | None = None, time_limit: str | None = None,
          max_requeues: int = 10, sbatch_args: tuple[str, ...] = (), setup: tuple[str, ...] = (),
          script_only: bool = False) -> dict[str, Any]:
    """Create the study, write its Slurm job script beside ``study_file`` and (unless ``script_only``) submit it as
    one job array of ``workers`` ``gan-search worker`` tasks. Returns the study, the script and the job id.

    Everything is checked before anything is written: the study file, the job's options, the storage URL, the data,
    and (to submit) that ``sbatch`` is on PATH."""
    from search.execution.slurm import SlurmJob, check_sbatch, script_path, submit, write_script

    spec = load_spec(study_file, storage=storage, artifacts=artifacts, n_trials=n_trials, data_root=data_root,
                     workers=workers)
    job = SlurmJob(study=spec.name, storage=spec.storage, workers=workers, artifacts=resolved(spec.artifacts),
                   gpus_per_worker=gpus_per_worker, cpus_per_worker=cpus_per_worker, partition=partition,
                   time=time_limit, max_requeues=max_requeues, sbatch_args=tuple(sbatch_args), setup=tuple(setup))
    if not script_only:
        check_sbatch()
    if spec.storage.startswith("sqlite"):
        log.warning("storage %s is SQLite: fine for workers on one node; across nodes use PostgreSQL or MySQL "
                    "(SQLite's locks do not hold on network filesystems)", redact(spec.storage))
    create(spec)
    path = write_script(job, script_path(study_file, spec.name))
    job_id = None if script_only else submit(job, path)
    return {"study": spec.name, "storage": redact(spec.storage), "script": str(path), "job_id": job_id,
            "workers": workers}


def export(name: str, out: str | os.PathLike[str], *, storage: str | None = None, retrain: int | None = None,
           confirm: int | None = None, seeds: int | None = None, images: int | None = None, workers: int = 1,
           plotlyjs: str = "inline") -> dict[str, Any]:
    """Export the best trial; with ``confirm``, first re-run the top ``confirm`` configs with ``seeds`` fresh seeds
    at ``images`` (the production budget; default the trial budget), record them in the study, and export the
    trained generator of the config that ranks first on the seeds' means (``search.results.selection``'s rule).
    ``confirm``, ``seeds`` and ``images`` left None take the study file's ``export:`` values."""
    check_study_name(name, "study name")
    if retrain is not None and retrain < 1:
        raise ConfigError(f"retrain must be a number of images >= 1, but got {retrain=}.")
    if (confirm is not None and confirm < 0) or (seeds is not None and seeds < 1):
        raise ConfigError(f"confirm must be >= 0 and seeds >= 1, but got {confirm=}, {seeds=}.")
    if images is not None and images < 1:
        raise ConfigError(f"images must be >= 1, but got {images=}.")
    if images is not None and retrain is not None:
        raise ConfigError("images and retrain: choose one (--images exports the confirmed run, trained at that budget).")
    if plotlyjs not in ("inline", "cdn"):
        raise ConfigError(f"report plotly.js must be inline (offline, ~4.8 MB) or cdn (small, needs the internet), "
                          f"but got {plotlyjs=}.")
    study, url = open_study(name, storage)
    spec = stored_spec(study, url)
    if images is not None and not (spec.export.confirm if confirm is None else confirm):
        raise ConfigError(f"images needs --confirm K >= 1 (the runs it sets the budget of), but got "
                          f"{images=}, {confirm=} (the study's export.confirm is {spec.export.confirm}).")
    return confirm_and_export(study, spec, Path(out), retrain=retrain, confirm=confirm, seeds=seeds, images=images,
                              workers=workers, plotlyjs=plotlyjs)


def confirm_and_export(study: optuna.Study, spec: StudySpec, out: Path, *, retrain: int | None = None,
                       confirm: int | None = None, seeds: int | None = None, images: int | None = None,
                       workers: int = 1, plotlyjs: str = "inline") -> dict[str, Any]:
    """The seed confirmation (if any: the arguments, else the study file's ``export:`` rule), then the export."""
    best_trial(study)  # fails before anything runs or is written
    rule = spec.export
    confirm = rule.confirm if confirm is None else confirm
    seeds = rule.seeds if seeds is None else seeds
    if images is None and retrain is None and confirm:
        images = rule.images  # the study's production budget, unless a retrain sets one
    confirmed = None
    if spec.promotion is not None and retrain is None and not confirm:
        confirmed = race(study, spec, seeds, workers)
    elif confirm:
        origins = enqueue_confirmations(study, confirm, seeds, images, constraints_at=spec.constraints_at)
        run_workers(study.study_name, spec.storage, workers, new_trials=False)
        confirmed = confirmation_table(study, origins, spec, images)
        record_confirmations(study, confirmed, images, seeds)
    metrics = export_study(study, spec, out, retrain, confirmed, plotlyjs=plotlyjs)
    return {"out": str(out), "trial": metrics["trial"], "value": metrics["value"],
            **({"confirmation": confirmed} if confirmed else {})}


def race(study: optuna.Study, spec: StudySpec, max_runs: int, workers: int = 1) -> list[dict[str, Any]] | None:
    """Race the finalists (trials of the top rung: production-budget runs already) on fresh seeds: each round gives
    one more seed to every finalist that can still beat the leader (``selection.still_racing`` on the pooled seed
    noise), until one is left or each has ``max_runs`` runs; the winner is the best mean, its export its best run.
    Nothing reached by continuation is trained again. None when no trial reached the top rung."""
    assert spec.promotion is not None
    images = promotion_ladder(spec)[-1]
    numbers = [t.number for t in finalists(study, spec)]
    if not numbers:
        log.warning("study %s: no trial reached the top rung (%d images): exporting the best of the lower rungs",
                    study.study_name, images)
        return None
    sign = signs(study)[0]
    dropped: dict[int, int] = {}
    alive, noise = numbers, None
    for round_ in range(1, max_runs + 1):
        trials = study.get_trials(deepcopy=False)
        runs = {n: [float(t.values[0]) for t in race_runs(study, trials[n], images)] for n in alive}
        measured = seed_noise(runs)
        noise = measured if measured is not None else noise  # the finalists left may all have one run
        still = still_racing(runs, sign, noise)
        dropped |= {n: len(runs[n]) for n in alive if n not in still}
        alive = still
        if len(alive) <= 1 or round_ == max_runs:
            break
        enqueue_race_seeds(study, alive, 10_000 + round_, images)
        run_workers(study.study_name, spec.storage, workers, new_trials=False)
    rows = race_table(study, spec, numbers, images, dropped)
    study.set_user_attr(attrs.CONFIRMATIONS, [*study.user_attrs.get(attrs.CONFIRMATIONS, []),
                                              {"images": images, "seeds": max_runs, "race": True,
                                               "seed_noise": noise, "rows": rows}])
    return rows


def export_study(study: optuna.Study, spec: StudySpec, out: Path, retrain: int | None = None,
                 confirmed: list[dict[str, Any]] | None = None, plotlyjs: str = "inline") -> dict[str, Any]:
    """Write the export into a temporary sibling of ``out``, then rename it: never a partial export."""
    best_trial(study)
    store = artifact_store(study.user_attrs.get(attrs.ARTIFACTS) or spec.artifacts, spec.s3)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        metrics = write_export(study, spec, tmp, store, retrain_images=retrain, confirmed=confirmed,
                               plotlyjs=plotlyjs)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    out.chmod(0o755)
    return metrics


def dashboard(storage: str | None = None, *, host: str = "127.0.0.1", port: int = 8080,
              artifacts: str | None = None) -> None:
    """optuna-dashboard on the study database, each study's artifacts served from its own store (``StudyStores``);
    ``artifacts`` replaces every study's location (each keeps its S3 settings). Blocks until stopped."""
    import bottle
    from optuna_dashboard import wsgi

    url = storage_url(storage)
    if artifacts is not None and is_s3(artifacts):
        split_s3(artifacts)  # a malformed URL fails here, before the server starts
    rdb = make_storage(url)
    stores = StudyStores(rdb, artifacts, default=DEFAULT_ARTIFACTS)
    app = wsgi(rdb, artifact_store=stores)
    app.add_hook("before_request", lambda: stores.select(bottle.request.path))
    log.info("dashboard on http://%s:%d for %s (artifacts: %s)", host, port, redact(url),
             artifacts or "each study's own")
    bottle.run(app, host=host, port=port, quiet=True)


__all__ = ["RunResult", "best_or_none", "create", "dashboard", "export", "export_study", "load_spec", "open_study",
           "run", "status", "storage_url", "work"]
