"""Study creation, the study-wide trial plan, and worker processes (in-process, joblib, Dask).

``n_trials`` is a study-wide total stored with the study: a worker claims a WAITING trial (a warm start,
a retry, a seed confirmation) or, when none waits, creates the next search trial, both under a study-wide
lock, so K workers together run exactly that many and a stopped study leaves no unstarted rows behind.
A trial whose worker died (no heartbeat for ``grace_period``) is failed and re-enqueued by
Optuna's ``RetryFailedTrialCallback``; the retry resumes from its checkpoint artifact.
"""

from __future__ import annotations

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
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import event

from search import attrs
from search.errors import StudyError
from search.objective import TrialRunner
from search.pruners import PER_TRIAL_SEED, build_pruner, build_sampler, trial_seed
from search.spec import StudySpec
from search.storage import artifact_store, load_study, make_storage, redact, study_lock

log = logging.getLogger(__name__)



# ---------------------------------------------------------------- study and plan
def create_or_load_study(spec: StudySpec) -> optuna.Study:
    """Create the study (or load it) and store the study file and artifact folder with it."""
    storage = make_storage(spec.storage, create=True)
    study = optuna.create_study(study_name=spec.name, storage=storage, direction=spec.direction,  # type: ignore[arg-type]
                                sampler=build_sampler(spec), pruner=build_pruner(spec), load_if_exists=True)
    stored = study.user_attrs.get(attrs.SPEC)
    if stored is not None and stored != dict(spec.raw):
        log.warning("study %s: the study file changed since the study was created; workers use the new one",
                    spec.name)
    if stored != dict(spec.raw):
        study.set_user_attr(attrs.SPEC, dict(spec.raw))
    artifacts = str(Path(spec.artifacts).expanduser().resolve())
    if study.user_attrs.get(attrs.ARTIFACTS) != artifacts:
        study.set_user_attr(attrs.ARTIFACTS, artifacts)
    return study


def stored_spec(study: optuna.Study, storage_url: str) -> StudySpec:
    raw = study.user_attrs.get(attrs.SPEC)
    if raw is None:
        raise StudyError(f"study {study.study_name!r} has no study file stored; create it with `gan-search run`.")
    return StudySpec.from_dict(raw, source=f"study {study.study_name}").with_overrides(storage=storage_url)


def retried_numbers(trials: list[optuna.trial.FrozenTrial]) -> set[int]:
    return {n for t in trials if (n := t.system_attrs.get(attrs.FAILED_TRIAL)) is not None}


def planned_trials(study: optuna.Study) -> int:
    """Trials that count towards n_trials: all, except failed ones that a retry replaces and seed confirmations."""
    trials = study.get_trials(deepcopy=False)
    retried = retried_numbers(trials)
    return sum(1 for t in trials
               if not (t.state == TrialState.FAIL and t.number in retried) and attrs.CONFIRM not in t.user_attrs)


def target_trials(study: optuna.Study) -> int:
    """The study-wide number of search trials that ``plan`` stored (0 for a study planned as WAITING rows)."""
    return int(study.user_attrs.get(attrs.N_TRIALS, 0))


def plan(study: optuna.Study, n_trials: int, warm_start: tuple[Any, ...] = ()) -> int:
    """Set the study-wide trial count and enqueue the warm-start configurations not enqueued yet.

    Search trials are not created here: a worker creates the next one when it has nothing waiting to claim
    (under the study lock, so K workers together create exactly ``n_trials``). A study stopped early thus
    holds no rows for trials that never started. Returns how many warm-start trials were enqueued.
    """
    if study.user_attrs.get(attrs.N_TRIALS) != n_trials:
        study.set_user_attr(attrs.N_TRIALS, n_trials)
    trials = study.get_trials(deepcopy=False)
    enqueued = {t.user_attrs.get(attrs.WARM_START) for t in trials}
    room = n_trials - planned_trials(study)
    added = 0
    for index, params in enumerate(warm_start):
        if index in enqueued:
            continue
        if added >= room:
            log.warning("study %s: n_trials=%d leaves no room for warm_start[%d:]", study.study_name, n_trials, index)
            break
        study.enqueue_trial(dict(params), user_attrs={attrs.WARM_START: index})
        added += 1
    return added


def progress(study: optuna.Study) -> dict[str, Any]:
    """Where the study stands against its plan: what is done, running, waiting and still to be created."""
    trials = study.get_trials(deepcopy=False)
    retried = retried_numbers(trials)
    search = [t for t in trials if attrs.CONFIRM not in t.user_attrs
              and not (t.state == TrialState.FAIL and t.number in retried)]
    count = {s: sum(1 for t in search if t.state == s) for s in TrialState}
    planned = max(target_trials(study), len(search))
    done = count[TrialState.COMPLETE] + count[TrialState.PRUNED] + count[TrialState.FAIL]
    return {"planned": planned, "done": done, "complete": count[TrialState.COMPLETE],
            "pruned": count[TrialState.PRUNED], "failed": count[TrialState.FAIL],
            "running": count[TrialState.RUNNING], "waiting": count[TrialState.WAITING],
            "to_create": max(0, planned - len(search)), "retried": len(retried),
            "confirmations": sum(1 for t in trials if attrs.CONFIRM in t.user_attrs)}


def describe_progress(p: dict[str, Any]) -> str:
    """One line a user reads without knowing Optuna's states."""
    left = p["planned"] - p["done"]
    line = (f"{p['done']}/{p['planned']} trials done ({p['complete']} complete, {p['pruned']} pruned, "
            f"{p['failed']} failed), {p['running']} running")
    if left - p["running"] > 0:
        queued = f"{p['waiting']} queued (warm starts or retries) + " if p["waiting"] else ""
        line += f"; {left - p['running']} not started ({queued}{p['to_create']} to be proposed)"
        line += " - `gan-search run` or `gan-search worker` continues" if not p["running"] else ""
    return line


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


def _claim(study: optuna.Study, spec: StudySpec, storage: RDBStorage, new_trials: bool) -> optuna.Trial | None:
    """Claim a WAITING trial, or create the next search trial while the plan has room; None when nothing is left.

    Runs under the study lock, so concurrent workers never take the same trial nor create more than planned.
    The trial's sampler is seeded with (study seed, trial number): workers propose different parameters.
    """
    claimed: FrozenTrial | None = None
    cached = study._storage  # noqa: SLF001 - the study's own (cached) storage object
    with study_lock(storage, study.study_name):
        for frozen in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            try:
                if cached.set_trial_state_values(frozen._trial_id, state=TrialState.RUNNING):
                    claimed = frozen
                    break
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
        if claimed is None and new_trials and planned_trials(study) < target_trials(study):
            claimed = cached.get_trial(cached.create_new_trial(study._study_id))  # RUNNING from the start
    if claimed is None:
        return None
    study.sampler = build_sampler(spec, trial_number=claimed.number)
    trial = optuna.Trial(study, claimed._trial_id)  # relative (multivariate) sampling happens here
    seed = spec.sampler.get("seed")
    if seed is not None and spec.sampler["name"] in PER_TRIAL_SEED:
        trial.set_user_attr(attrs.SAMPLER_SEED, trial_seed(int(seed), claimed.number))
    return trial


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
         timeout: float | None = None, worker: int = 0, threads: int | None = None,
         new_trials: bool = True) -> WorkerReport:
    """Join study ``study_name`` and run its trials until the plan is done (or ``timeout``).

    With ``new_trials=False`` the worker only runs trials already enqueued (seed confirmations, retries).
    """
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
    store = artifact_store(artifacts or study.user_attrs.get(attrs.ARTIFACTS) or spec.artifacts)
    runner = TrialRunner(spec, store, device)
    log.info("worker %d joined study %s on %s (device %s)", worker, study_name, redact(storage_url), runner.device)
    timer = SqlTimer(storage.engine)
    done = 0
    while timeout is None or time.perf_counter() - start < timeout:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            fail_stale_trials(study)
        trial = _claim(study, spec, storage, new_trials)
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
        trial.set_user_attr(attrs.FAIL_REASON, "interrupted (Ctrl-C); re-enqueued")
        frozen = study.tell(trial, state=TrialState.FAIL)
        RetryHeartbeatStaleTrialCallback(max_retry=spec.max_retry, inherit_intermediate_values=True)(study, frozen)
        log.warning("trial %d interrupted; it is re-enqueued and resumes from its checkpoint", trial.number)
        raise
    except Exception as exc:  # a bad combination, out of memory...: record it, the study goes on
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        trial.set_user_attr(attrs.FAIL_REASON, reason[:500])
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
                  threads: int | None, timeout: float | None, worker: int, new_trials: bool = True) -> WorkerReport:
    if threading.current_thread() is threading.main_thread():  # Dask runs tasks in a worker thread
        signal.signal(signal.SIGINT, signal.default_int_handler)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s worker{worker} %(levelname)s %(name)s: %(message)s")
    for noisy in ("optuna", "distributed", "sqlalchemy"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return work(study_name, storage_url, artifacts=artifacts, device=device, timeout=timeout, worker=worker,
                threads=threads, new_trials=new_trials)


def run_workers(study_name: str, storage_url: str, n_workers: int, *, artifacts: str | None = None,
                timeout: float | None = None, backend: str = "local", scheduler: str | None = None,
                new_trials: bool = True) -> list[WorkerReport]:
    """Run ``n_workers`` workers of the study: in this process (1), joblib processes, or a Dask cluster."""
    if n_workers < 1:
        raise StudyError(f"workers must be >= 1, but got workers={n_workers}.")
    places = placement(n_workers)
    if backend == "dask":
        from distributed import Client

        with Client(scheduler) if scheduler else Client(processes=True, n_workers=n_workers,
                                                        threads_per_worker=1) as client:
            futures = [client.submit(_worker_entry, study_name, storage_url, artifacts, None, None, timeout, i,
                                     new_trials, pure=False) for i in range(n_workers)]
            return list(client.gather(futures))
    if n_workers == 1:
        device, _ = places[0]
        return [work(study_name, storage_url, artifacts=artifacts, device=device, timeout=timeout,
                     new_trials=new_trials)]
    from joblib import Parallel, delayed

    jobs = (delayed(_worker_entry)(study_name, storage_url, artifacts, dev, threads, timeout, i, new_trials)
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

