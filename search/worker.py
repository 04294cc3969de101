"""One worker: claim a trial (or create the next one), heartbeat, run it, record its end; stale-trial retry.

A trial whose worker died (no heartbeat for ``grace_period``) is failed and re-enqueued by Optuna's
``RetryFailedTrialCallback``; the retry resumes from its checkpoint artifact.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import event

from search import attrs
from search.errors import StudyError
from search.objective import TrialRunner, TrialSession
from search.pbt import next_generation
from search.pruners import PER_TRIAL_SEED, build_pruner, build_sampler, trial_seed
from search.spec import StudySpec
from search.storage import artifact_store, load_study, make_storage, redact, study_lock
from search.study import planned_trials, stored_spec, target_trials
from trainer import Diverged
from trainer.pack import Outcome, Pack, pack_key

log = logging.getLogger(__name__)


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


def _claim(study: optuna.Study, spec: StudySpec, storage: RDBStorage, new_trials: bool,
           store: Any = None) -> optuna.Trial | None:
    """Claim a WAITING trial, or create the next search trial while the plan has room; None when nothing is left.

    Runs under the study lock, so concurrent workers never take the same trial nor create more than planned.
    The trial's sampler is seeded with (study seed, trial number): workers propose different parameters.
    """
    claimed: FrozenTrial | None = None
    cached = study._storage  # noqa: SLF001 - the study's own (cached) storage object
    with study_lock(storage, study.study_name):
        claimed = _take_waiting(study, cached)
        if claimed is None and new_trials and spec.scheduler is not None:  # PBT: the next generation, when due
            if next_generation(study, spec, store):
                claimed = _take_waiting(study, cached)
        elif claimed is None and new_trials and planned_trials(study) < target_trials(study):
            claimed = cached.get_trial(cached.create_new_trial(study._study_id))  # RUNNING from the start
    if claimed is None:
        return None
    study.sampler = build_sampler(spec, trial_number=claimed.number)
    trial = optuna.Trial(study, claimed._trial_id)  # relative (multivariate) sampling happens here
    seed = spec.sampler.get("seed")
    if seed is not None and spec.sampler["name"] in PER_TRIAL_SEED:
        trial.set_user_attr(attrs.SAMPLER_SEED, trial_seed(int(seed), claimed.number))
    return trial


def _take_waiting(study: optuna.Study, cached: Any) -> FrozenTrial | None:
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        try:
            if cached.set_trial_state_values(frozen._trial_id, state=TrialState.RUNNING):
                return frozen
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
         timeout: float | None = None, worker: int = 0, threads: int | None = None,
         new_trials: bool = True, tensorboard: str | None = None, pack: int = 1) -> WorkerReport:
    """Join study ``study_name`` and run its trials until the plan is done (or ``timeout``).

    With ``new_trials=False`` the worker only runs trials already enqueued (seed confirmations, retries).
    With ``pack=K`` it trains up to K claimed trials at once on its device, as vectorised packs
    (``trainer.pack``): trials whose networks match share one pack; a member that ends frees its slot.
    """
    if pack < 1:
        raise StudyError(f"pack must be >= 1 trials per worker, but got {pack=}.")
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
    runner = TrialRunner(spec, store, device, tensorboard=tensorboard)
    log.info("worker %d joined study %s on %s (device %s)", worker, study_name, redact(storage_url), runner.device)
    timer = SqlTimer(storage.engine)
    if pack > 1:
        done = _work_packed(study, spec, storage, runner, pack, lambda: timeout is not None and
                            time.perf_counter() - start >= timeout, new_trials)
        return WorkerReport(worker, done, time.perf_counter() - start, timer.seconds, timer.statements)
    done = 0
    while timeout is None or time.perf_counter() - start < timeout:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            fail_stale_trials(study)
        trial = _claim(study, spec, storage, new_trials, runner.store)
        if trial is None:
            if study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                time.sleep(min(spec.heartbeat_interval, 5))  # a running trial may still go stale
                continue
            break
        run_trial(study, trial, runner, spec, storage)
        done += 1
    return WorkerReport(worker, done, time.perf_counter() - start, timer.seconds, timer.statements)


@dataclass
class _Member:
    trial: optuna.Trial
    session: TrialSession
    heartbeat: ExitStack


def _work_packed(study: optuna.Study, spec: StudySpec, storage: RDBStorage, runner: TrialRunner, slots: int,
                 out_of_time: Callable[[], bool], new_trials: bool) -> int:
    """Claim up to ``slots`` trials, train them as packs (one per network shape), refill freed slots."""
    packs: dict[str, Pack] = {}
    members: dict[tuple[str, int], _Member] = {}
    done = 0
    try:
        while True:
            while len(members) < slots and not out_of_time():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    fail_stale_trials(study)
                trial = _claim(study, spec, storage, new_trials, runner.store)
                if trial is None:
                    break
                beat = ExitStack()
                beat.enter_context(_heartbeat(storage, trial._trial_id))
                try:
                    session = TrialSession(runner, trial)
                    key = pack_key(session.cfg)
                    group = packs.setdefault(key, Pack(runner.data, runner.device, runner.evaluator))
                    member = group.add(session.cfg, callback=session.on_eval, out_dir=session.workdir,
                                       resume_from=session.resume)
                except Exception as exc:  # noqa: BLE001 - a trial that cannot start fails alone
                    record_outcome(study, trial, spec, functools.partial(_raise, exc))
                    beat.close()
                    done += 1
                    continue
                members[(key, member)] = _Member(trial, session, beat)
                log.info("trial %d joins a pack of %d", trial.number, len(group))
            if not members:
                if not out_of_time() and study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                    time.sleep(min(spec.heartbeat_interval, 5))  # a running trial may still go stale
                    continue
                return done
            for key, group in list(packs.items()):
                for outcome in group.step():
                    m = members.pop((key, outcome.id))
                    record_outcome(study, m.trial, spec, functools.partial(_collect, m.session, outcome))
                    m.heartbeat.close()
                    done += 1
                if not len(group):
                    del packs[key]
    except KeyboardInterrupt:
        for m in members.values():
            m.session.close(interrupted=True)
            requeue(study, m.trial, spec)
            m.heartbeat.close()
        raise


def _raise(exc: BaseException) -> float:
    raise exc


def _collect(session: TrialSession, outcome: Outcome) -> float:
    """A pack member's end, told as a single trial's: its value, or the exception that ended it."""
    try:
        if outcome.error is not None:
            raise outcome.error
        assert outcome.result is not None
        return session.complete(outcome.result)
    except Diverged as exc:
        raise session.diverged(exc) from None
    finally:
        session.close()


def run_trial(study: optuna.Study, trial: optuna.Trial, runner: TrialRunner, spec: StudySpec,
              storage: RDBStorage) -> None:
    """Run one claimed trial and record its end state."""
    with _heartbeat(storage, trial._trial_id):
        record_outcome(study, trial, spec, lambda: runner(trial))


def record_outcome(study: optuna.Study, trial: optuna.Trial, spec: StudySpec, outcome: Callable[[], float]) -> None:
    """Call ``outcome`` (which trains or collects the trial's result) and tell the study how the trial ended:
    COMPLETE with its value, PRUNED, or FAIL with a reason; Ctrl-C fails it and re-enqueues it for a retry."""
    value: float | None = None
    state = TrialState.FAIL
    try:
        value = outcome()
        state = TrialState.COMPLETE
    except optuna.TrialPruned as exc:
        state = TrialState.PRUNED
        log.info("trial %d pruned: %s", trial.number, exc)
    except optuna.exceptions.UpdateFinishedTrialError:
        _finished_elsewhere(trial)
        return
    except KeyboardInterrupt:
        requeue(study, trial, spec)
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


def requeue(study: optuna.Study, trial: optuna.Trial, spec: StudySpec) -> None:
    """An interrupted trial (Ctrl-C) fails and is re-enqueued; its retry resumes from its checkpoint."""
    trial.set_user_attr(attrs.FAIL_REASON, "interrupted (Ctrl-C); re-enqueued")
    frozen = study.tell(trial, state=TrialState.FAIL)
    RetryHeartbeatStaleTrialCallback(max_retry=spec.max_retry, inherit_intermediate_values=True)(study, frozen)
    log.warning("trial %d interrupted; it is re-enqueued and resumes from its checkpoint", trial.number)


def _finished_elsewhere(trial: optuna.Trial) -> None:
    """Another worker failed this trial as stale (no heartbeat within the grace period) and re-enqueued it."""
    log.warning("trial %d was failed as stale by another worker while it ran here (a heartbeat was late); "
                "its retry counts instead of it", trial.number)


