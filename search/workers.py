"""Study creation, the study-wide trial plan, and worker processes (in-process, joblib, Dask).

``n_trials`` is a study-wide total: the coordinator enqueues the missing trials as WAITING rows, and
workers only pop WAITING trials (an atomic RUNNING update in the database), so K workers together
run exactly that many. A trial whose worker died (no heartbeat for ``grace_period``) is failed and
re-enqueued by Optuna's ``RetryFailedTrialCallback``; the retry resumes from its checkpoint artifact.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import TrialState
from sqlalchemy import event
from sqlalchemy.engine import make_url

from search.errors import StudyError
from search.objective import CONFIRM_ATTR, TrialRunner
from search.pruners import build_pruner, build_sampler
from search.spec import StudySpec
from search.storage import artifact_store, load_study, make_storage, redact

log = logging.getLogger(__name__)

SPEC_ATTR = "spec"  # study user attribute: the study file as a mapping
ARTIFACTS_ATTR = "artifacts"  # study user attribute: the artifact folder


# ---------------------------------------------------------------- study and plan
def create_or_load_study(spec: StudySpec) -> optuna.Study:
    """Create the study (or load it) and store the study file and artifact folder with it."""
    storage = make_storage(spec.storage)
    study = optuna.create_study(study_name=spec.name, storage=storage, direction=spec.direction,  # type: ignore[arg-type]
                                sampler=build_sampler(spec), pruner=build_pruner(spec), load_if_exists=True)
    stored = study.user_attrs.get(SPEC_ATTR)
    if stored is not None and stored != dict(spec.raw):
        log.warning("study %s: the study file changed since the study was created; workers use the new one",
                    spec.name)
    if stored != dict(spec.raw):
        study.set_user_attr(SPEC_ATTR, dict(spec.raw))
    artifacts = str(Path(spec.artifacts).expanduser().resolve())
    if study.user_attrs.get(ARTIFACTS_ATTR) != artifacts:
        study.set_user_attr(ARTIFACTS_ATTR, artifacts)
    return study


def stored_spec(study: optuna.Study, storage_url: str) -> StudySpec:
    raw = study.user_attrs.get(SPEC_ATTR)
    if raw is None:
        raise StudyError(f"study {study.study_name!r} has no study file stored; create it with `gan-search run`.")
    return StudySpec.from_dict(raw, source=f"study {study.study_name}").with_overrides(storage=storage_url)


def retried_numbers(trials: list[optuna.trial.FrozenTrial]) -> set[int]:
    return {n for t in trials if (n := t.system_attrs.get("failed_trial")) is not None}


def planned_trials(study: optuna.Study) -> int:
    """Trials that count towards n_trials: all, except failed ones that a retry replaces and seed confirmations."""
    trials = study.get_trials(deepcopy=False)
    retried = retried_numbers(trials)
    return sum(1 for t in trials
               if not (t.state == TrialState.FAIL and t.number in retried) and CONFIRM_ATTR not in t.user_attrs)


def plan(study: optuna.Study, n_trials: int) -> int:
    """Enqueue WAITING trials until the study holds ``n_trials``; returns how many were added."""
    missing = max(0, n_trials - planned_trials(study))
    for _ in range(missing):
        study.enqueue_trial({})
    return missing


# ---------------------------------------------------------------- one worker
@contextmanager
def _heartbeat(storage: RDBStorage, trial_id: int) -> Iterator[None]:
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval):
            try:
                storage.record_heartbeat(trial_id)
            except Exception:  # a transient database error must not kill the trial
                log.warning("heartbeat of trial id %d failed", trial_id, exc_info=True)

    interval = storage.get_heartbeat_interval()
    if interval:
        storage.record_heartbeat(trial_id)
        thread = threading.Thread(target=beat, daemon=True, name=f"heartbeat-{trial_id}")
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
    else:
        yield


@contextmanager
def _claim_lock(storage_url: str) -> Iterator[None]:
    """SQLite ignores SELECT ... FOR UPDATE, so local workers on one SQLite file claim trials under a file lock.

    PostgreSQL and MySQL lock the trial row instead (Optuna's ``set_trial_state_values``).
    """
    url = make_url(storage_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        yield
        return
    with open(f"{url.database}.claim-lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _pop_waiting(study: optuna.Study, storage_url: str) -> optuna.Trial | None:
    """Atomically claim a WAITING trial (never creates one)."""
    storage = study._storage  # noqa: SLF001 - the study's own storage object
    with _claim_lock(storage_url):
        for frozen in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            try:
                if storage.set_trial_state_values(frozen._trial_id, state=TrialState.RUNNING):
                    return optuna.Trial(study, frozen._trial_id)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
    return None


@dataclass
class WorkerReport:
    worker: int
    trials: int
    seconds: float
    storage_seconds: float  # time spent executing SQL (all threads of this worker, heartbeats included)
    statements: int  # SQL statements executed


class SqlTimer:
    """Adds up the time an engine spends executing SQL statements (SQLAlchemy cursor events)."""

    def __init__(self, engine: Any) -> None:
        self.seconds, self.statements = 0.0, 0
        self._lock = threading.Lock()
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    def _before(self, conn: Any, *args: Any) -> None:
        conn.info.setdefault("gan_search_t0", []).append(time.perf_counter())

    def _after(self, conn: Any, *args: Any) -> None:
        elapsed = time.perf_counter() - conn.info["gan_search_t0"].pop()
        with self._lock:
            self.seconds += elapsed
            self.statements += 1


def work(study_name: str, storage_url: str, *, artifacts: str | None = None, device: str | None = None,
         timeout: float | None = None, worker: int = 0, threads: int | None = None) -> WorkerReport:
    """Join study ``study_name`` and run its WAITING trials until none is left (or ``timeout``)."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    start = time.perf_counter()
    study = load_study(study_name, make_storage(storage_url))
    spec = stored_spec(study, storage_url)
    storage = make_storage(storage_url, heartbeat_interval=spec.heartbeat_interval,
                           grace_period=spec.grace_period, max_retry=spec.max_retry)
    study = optuna.load_study(study_name=study_name, storage=storage, sampler=build_sampler(spec),
                              pruner=build_pruner(spec))
    store = artifact_store(artifacts or study.user_attrs.get(ARTIFACTS_ATTR) or spec.artifacts)
    runner = TrialRunner(spec, store, device)
    log.info("worker %d joined study %s on %s (device %s)", worker, study_name, redact(storage_url), runner.device)
    timer = SqlTimer(storage.engine)
    done = 0
    while timeout is None or time.perf_counter() - start < timeout:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            fail_stale_trials(study)
        trial = _pop_waiting(study, storage_url)
        if trial is None:
            if study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                time.sleep(min(spec.heartbeat_interval, 5))  # a running trial may still go stale
                continue
            break
        run_trial(study, trial, runner, spec, storage)
        done += 1
    return WorkerReport(worker, done, time.perf_counter() - start, timer.seconds, timer.statements)


def run_trial(study: optuna.Study, trial: optuna.Trial, runner: TrialRunner, spec: StudySpec,
              storage: RDBStorage) -> None:
    """Run one claimed trial and record its end state."""
    value: float | None = None
    state = TrialState.FAIL
    try:
        with _heartbeat(storage, trial._trial_id):
            value = runner(trial)
            state = TrialState.COMPLETE
    except optuna.TrialPruned as exc:
        state = TrialState.PRUNED
        log.info("trial %d pruned: %s", trial.number, exc)
    except optuna.exceptions.UpdateFinishedTrialError:
        _finished_elsewhere(trial)
        return
    except KeyboardInterrupt:
        trial.set_user_attr("fail_reason", "interrupted (Ctrl-C); re-enqueued")
        frozen = study.tell(trial, state=TrialState.FAIL)
        RetryHeartbeatStaleTrialCallback(max_retry=spec.max_retry, inherit_intermediate_values=True)(study, frozen)
        log.warning("trial %d interrupted; it is re-enqueued and resumes from its checkpoint", trial.number)
        raise
    except Exception as exc:  # a bad combination, out of memory...: record it, the study goes on
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        trial.set_user_attr("fail_reason", reason[:500])
        log.warning("trial %d failed: %s", trial.number, reason)
    try:
        if state == TrialState.COMPLETE and value is not None:
            study.tell(trial, value)
        else:
            study.tell(trial, state=state)
    except optuna.exceptions.UpdateFinishedTrialError:
        _finished_elsewhere(trial)


def _finished_elsewhere(trial: optuna.Trial) -> None:
    """Another worker failed this trial as stale (no heartbeat within the grace period) and re-enqueued it."""
    log.warning("trial %d was failed as stale by another worker while it ran here (a heartbeat was late); "
                "its retry counts instead of it", trial.number)


# ---------------------------------------------------------------- many workers
def _visible_gpus() -> list[str]:
    try:
        import torch

        count = torch.cuda.device_count()
    except Exception:
        count = 0
    return [f"cuda:{i}" for i in range(count)]  # indices are relative to CUDA_VISIBLE_DEVICES


def placement(n_workers: int) -> list[tuple[str | None, int | None]]:
    """(device, torch threads) per worker: GPUs round-robin, else the CPU cores split evenly."""
    gpus = _visible_gpus()
    if gpus:
        return [(gpus[i % len(gpus)], None) for i in range(n_workers)]
    cores = os.cpu_count() or 1
    return [("cpu", max(1, cores // n_workers)) for _ in range(n_workers)]


def _worker_entry(study_name: str, storage_url: str, artifacts: str | None, device: str | None,
                  threads: int | None, timeout: float | None, worker: int) -> WorkerReport:
    if threading.current_thread() is threading.main_thread():  # Dask runs tasks in a worker thread
        signal.signal(signal.SIGINT, signal.default_int_handler)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s worker{worker} %(levelname)s %(name)s: %(message)s")
    for noisy in ("optuna", "distributed", "sqlalchemy"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return work(study_name, storage_url, artifacts=artifacts, device=device, timeout=timeout, worker=worker,
                threads=threads)


def run_workers(study_name: str, storage_url: str, n_workers: int, *, artifacts: str | None = None,
                timeout: float | None = None, backend: str = "local", scheduler: str | None = None) -> list[WorkerReport]:
    """Run ``n_workers`` workers of the study: in this process (1), joblib processes, or a Dask cluster."""
    if n_workers < 1:
        raise StudyError(f"workers must be >= 1, but got workers={n_workers}.")
    places = placement(n_workers)
    if backend == "dask":
        from distributed import Client

        with Client(scheduler) if scheduler else Client(processes=True, n_workers=n_workers,
                                                        threads_per_worker=1) as client:
            futures = [client.submit(_worker_entry, study_name, storage_url, artifacts, None, None, timeout, i,
                                     pure=False) for i in range(n_workers)]
            return list(client.gather(futures))
    if n_workers == 1:
        device, _ = places[0]
        return [work(study_name, storage_url, artifacts=artifacts, device=device, timeout=timeout)]
    from joblib import Parallel, delayed

    jobs = (delayed(_worker_entry)(study_name, storage_url, artifacts, dev, threads, timeout, i)
            for i, (dev, threads) in enumerate(places))
    return list(Parallel(n_jobs=n_workers, backend="loky")(jobs))


def trials_summary(study: optuna.Study) -> dict[str, Any]:
    trials = study.get_trials(deepcopy=False)
    retried = retried_numbers(trials)
    counts: dict[str, int] = {}
    for t in trials:
        name = "RETRIED" if t.state == TrialState.FAIL and t.number in retried else t.state.name
        counts[name] = counts.get(name, 0) + 1
    return counts

