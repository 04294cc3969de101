"""One worker: claim a trial (or create the next one), heartbeat, run it, record its end; stale-trial retry.

A trial whose worker died (no heartbeat for ``grace_period``) is failed and re-enqueued (``search.store.retry``);
the retry resumes from its checkpoint artifact.
"""

from __future__ import annotations

import functools
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import optuna
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import event

from search import attrs
from search._optuna import refresh_trials, storage_of
from search._optuna import trial_id as optuna_trial_id
from search.errors import StudyError
from search.execution.slurm import requeue_task, worker_name
from search.spec.study_file import StudySpec
from search.store.artifacts import artifact_store
from search.store.heartbeat import fail_and_retry, fail_stale, heartbeat
from search.store.storage import Outage, is_outage, load_study, make_storage, redact, study_lock
from search.strategy.pruners import build_pruner
from search.strategy.samplers import PER_TRIAL_SEED, build_sampler, trial_seed
from search.strategy.schedulers import scheduler_for
from search.strategy.study import stored_spec, take_waiting
from trainer.errors import Diverged

if TYPE_CHECKING:  # the training path imports torch; a replay worker never does (search/execution/replay.py)
    from search.execution.replay import Replay
    from search.execution.trial import TrialRunner, TrialSession
    from trainer.pack import Outcome

log = logging.getLogger(__name__)
WORKER_OUTAGE_SECONDS = 600.0  # a worker gives up after the database has been away this long
CLAIM_INTERVAL_SECONDS = 5.0  # after a claim found nothing, the next one waits this long (at most the heartbeat's)


def claim_interval(spec: StudySpec) -> float:
    """Seconds between claims that find nothing: a packed worker with free slots, or one waiting for running trials
    that may still go stale, asks the study lock this often, never once per generator step."""
    return float(min(spec.heartbeat_interval or CLAIM_INTERVAL_SECONDS, CLAIM_INTERVAL_SECONDS))


@dataclass
class Claimed:
    """A claimed trial and its heartbeat, sent from the claim on (close it when the trial has ended)."""

    trial: optuna.Trial
    heartbeat: ExitStack


def _claim(study: optuna.Study, spec: StudySpec, storage: Any, new_trials: bool,
           store: Any = None, holds: list[float] | None = None) -> Claimed | None:
    """Claim a WAITING trial, or let the scheduler make the next one; None when nothing is left.

    Runs under the study lock (through a storage proxy: lock-free, see search/store/proxy.py), so concurrent workers
    never take the same trial nor create more than planned.
    """
    locked = isinstance(storage, RDBStorage)
    while True:
        with study_lock(storage, study.study_name):
            held = time.perf_counter()
            trial_id = take_waiting(study)
            if trial_id is None and new_trials:
                trial_id = scheduler_for(spec).refill(study, store, locked=locked)
            if holds is not None:  # how long this worker kept every other worker of the study waiting
                holds.append(time.perf_counter() - held)
        if trial_id is None:
            return None
        claimed = storage_of(study).get_trial(trial_id)  # loaded after the lock is released
        refresh_trials(study)  # Optuna's trial cache learns of the trial claimed from the table, outside the lock
        beat = ExitStack()  # alive from the claim on: the sampler's work may take longer than the grace period
        try:
            beat.enter_context(heartbeat(storage, trial_id, spec.heartbeat_interval))
            return Claimed(open_trial(study, spec, claimed), beat)
        except optuna.exceptions.UpdateFinishedTrialError:  # failed as stale before its first heartbeat landed
            beat.close()
            _finished_elsewhere(claimed)  # its retry is WAITING: claim again
        except BaseException:
            beat.close()
            raise


def open_trial(study: optuna.Study, spec: StudySpec, claimed: FrozenTrial) -> optuna.Trial:
    """The claimed trial as the objective sees it. Its sampler is seeded with (study seed, trial number), so that
    workers propose different parameters and a one-worker study replays (search/strategy/samplers.py)."""
    study.sampler = build_sampler(spec, trial_number=claimed.number)
    trial = optuna.Trial(study, optuna_trial_id(claimed))  # relative (multivariate) sampling happens here
    trial.set_user_attr(attrs.WORKER, worker_name())
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
    claim_seconds: list[float] = field(default_factory=list)  # each claim: lock, look for a waiting trial, create one
    lock_seconds: list[float] = field(default_factory=list)  # each claim's time holding the study lock (its share)


class SqlTimer:
    """Adds up the time an engine spends executing SQL statements (SQLAlchemy cursor events)."""

    def __init__(self, engine: Any) -> None:
        self.seconds, self.statements = 0.0, 0
        self._lock = threading.Lock()
        if engine is None:
            return
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
         new_trials: bool = True, tensorboard: str | None = None, pack: int = 1,
         replay: Replay | None = None) -> WorkerReport:
    """Join study ``study_name`` and run its trials until the plan is done (or ``timeout``).

    With ``new_trials=False`` the worker only runs trials already enqueued (seed confirmations, retries).
    With ``pack=K`` it trains up to K claimed trials at once on its device, as vectorised packs
    (``trainer.pack``): trials whose networks match share one pack; a member that ends frees its slot.
    With ``replay`` it runs the same loop but replays recorded curves instead of training (no torch import).
    """
    if pack < 1:
        raise StudyError(f"pack must be >= 1 trials per worker, but got {pack=}.")
    with stop_signals() as stop:  # from the start: a stop during the set-up (torch, data) claims nothing
        try:
            return _work(study_name, storage_url, artifacts=artifacts, device=device, timeout=timeout, worker=worker,
                         threads=threads, new_trials=new_trials, tensorboard=tensorboard, pack=pack, replay=replay,
                         stop=stop)
        except KeyboardInterrupt:
            if stop.time_limit:
                requeue_task()  # Slurm's time limit is near: this array task runs again later, from the queue
            raise


def _work(study_name: str, storage_url: str, *, artifacts: str | None, device: str | None, timeout: float | None,
          worker: int, threads: int | None, new_trials: bool, tensorboard: str | None, pack: int,
          replay: Replay | None, stop: StopFlag) -> WorkerReport:
    if threads:
        import torch

        torch.set_num_threads(threads)
    start = time.perf_counter()
    study = load_study(study_name, make_storage(storage_url))
    spec = stored_spec(study, storage_url)
    storage: Any = make_storage(storage_url, heartbeat_interval=spec.heartbeat_interval,
                                grace_period=spec.grace_period, max_retry=spec.max_retry, pool=spec.connections)
    study = optuna.load_study(study_name=study_name, storage=storage, sampler=build_sampler(spec),
                              pruner=build_pruner(spec))
    store = artifact_store(artifacts or study.user_attrs.get(attrs.ARTIFACTS) or spec.artifacts, spec.s3)
    runner: Callable[[optuna.Trial], list[float]]
    if replay is not None:
        if pack > 1:
            raise StudyError(f"replay workers run one trial at a time, but got {pack=}.")
        from search.execution.replay import ReplayRunner

        runner = ReplayRunner(spec, store, replay)
    else:
        from search.execution.trial import TrialRunner

        runner = TrialRunner(spec, store, device, tensorboard=tensorboard)
    log.info("worker %d joined study %s on %s (device %s)", worker, study_name, redact(storage_url),
             getattr(runner, "device", "?"))
    if (why := scheduler_for(spec).needs_lock) is not None and not isinstance(storage, RDBStorage):
        raise StudyError(f"{why}: give workers the database URL, not a storage proxy.")
    timer = SqlTimer(getattr(storage, "engine", None))  # through a proxy the SQL runs in the proxy: nothing to time
    slots: _Slots = _Packed(study, spec, runner, pack) if pack > 1 else _Single(study, spec, storage, runner)  # type: ignore[arg-type]
    claims: list[float] = []
    holds: list[float] = []
    done = _claim_loop(study, spec, storage, slots, new_trials, store, claims, holds,
                       lambda: timeout is not None and time.perf_counter() - start >= timeout, stop)
    return WorkerReport(worker, done, time.perf_counter() - start, timer.seconds, timer.statements, claims, holds)


class StopFlag:
    """Set by a stop signal; the claim loop claims nothing once it is set, whatever the hand-back met."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.signum: int | None = None
        self.interruptible = False  # a trial runs: a stop signal interrupts it (elsewhere the loop stops at its checks)

    def set(self, signum: int) -> None:
        self.signum = self.signum or signum
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    @property
    def time_limit(self) -> bool:
        """Stopped by Slurm's warning before the time limit (SIGUSR1): the task requeues itself."""
        return self.signum == signal.SIGUSR1


STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)  # scancel, preemption, docker stop; Slurm's time-limit warning


@contextmanager
def stop_signals() -> Iterator[StopFlag]:
    """SIGTERM (Slurm's scancel, preemption, ``docker stop``, a batch system's kill) and SIGUSR1 (the warning of the
    job script's ``--signal=B:USR1@...`` before a time limit) act as Ctrl-C while the worker runs: the running trial
    is handed back for a retry that resumes from its checkpoint. The signal also sets the returned flag, which the
    claim loop honours: a hand-back that meets a trial already failed elsewhere cannot swallow it, and a second
    signal during the hand-back does not interrupt the hand-back. Only training is interrupted (``interruptible``):
    a signal during a claim, under the study lock, would leave a claimed trial without its heartbeat; there the
    loop stops at its next check and hands back what it holds."""
    stop = StopFlag()
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield stop
        return

    def interrupt(signum: int, frame: Any) -> None:
        first = not stop.is_set()
        stop.set(signum)
        if first:
            log.warning("%s: handing the running trial back", signal.Signals(signum).name)
            if stop.interruptible:
                raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in STOP_SIGNALS}
    # a signal that came while the command started (``block_stop_signals``) is delivered now, to this handler
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def block_stop_signals() -> None:
    """Hold stop signals pending until the worker's handlers are in place (``stop_signals``): Slurm may send its
    time-limit warning (SIGUSR1, whose default action kills) while the worker command is still importing."""
    if threading.current_thread() is threading.main_thread():
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)


def _claim_loop(study: optuna.Study, spec: StudySpec, storage: Any, slots: _Slots, new_trials: bool, store: Any,
                claims: list[float], holds: list[float], out_of_time: Callable[[], bool],
                stop: StopFlag | None = None) -> int:
    """The worker's one loop: fail stale trials, claim into free slots, run what is claimed, until the plan is done
    (or ``out_of_time``); the number of trials this worker ended. The database going away waits (``Outage``).
    Once ``stop`` is set (a stop signal) it claims nothing more: what runs is handed back, and KeyboardInterrupt
    ends the worker."""
    done = 0
    outage = Outage(WORKER_OUTAGE_SECONDS)
    stop = stop if stop is not None else StopFlag()
    stopped = stop.is_set
    interval = claim_interval(spec)
    next_claim = 0.0  # after a claim found nothing, the next waits this long: not one per generator step of a pack
    try:
        while True:
            if stopped():
                raise KeyboardInterrupt
            while (slots.free() and not out_of_time() and not stopped()
                   and time.perf_counter() >= next_claim):
                t0 = time.perf_counter()
                try:
                    fail_stale(study, spec.grace_period, spec.max_retry)
                    claimed = _claim(study, spec, storage, new_trials, store, holds)
                except Exception as exc:
                    if not is_outage(exc):
                        raise
                    outage.wait(exc, "the claim")  # the database is restarting or unreachable
                    if slots.busy():
                        break  # packed members go on (their own calls wait for it)
                    continue
                outage.over()
                claims.append(time.perf_counter() - t0)
                if claimed is None:
                    next_claim = time.perf_counter() + interval
                    break
                if stopped():  # signalled during the claim: hand the claimed trial back before it starts
                    requeue(study, claimed.trial, spec)
                    claimed.heartbeat.close()
                    raise KeyboardInterrupt
                done += _interruptible(stop, functools.partial(slots.start, claimed, outage))
            if stopped():
                raise KeyboardInterrupt
            if not slots.busy():
                if not out_of_time() and study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                    time.sleep(max(0.0, next_claim - time.perf_counter()))  # a running trial may still go stale
                    continue
                return done
            done += _interruptible(stop, slots.step)
    except KeyboardInterrupt:
        stop.interruptible = False  # the hand-back itself is never interrupted
        slots.interrupt()
        raise


def _interruptible(stop: StopFlag, run: Callable[[], int]) -> int:
    """``run()`` with stop signals raising KeyboardInterrupt inside it (training)."""
    stop.interruptible = True
    try:
        return run()
    finally:
        stop.interruptible = False


class _Slots:
    """Where claimed trials run: one at a time (``_Single``) or as vectorised packs (``_Packed``)."""

    def free(self) -> bool:
        raise NotImplementedError

    def busy(self) -> bool:
        return False

    def start(self, claimed: Claimed, outage: Outage) -> int:
        """Take a claimed trial; the number of trials that ended in doing so."""
        raise NotImplementedError

    def step(self) -> int:
        """Advance what runs; the number of trials that ended."""
        return 0

    def interrupt(self) -> None:
        """Ctrl-C: hand back what runs (each trial is failed and re-enqueued; its retry resumes)."""


class _Single(_Slots):
    def __init__(self, study: optuna.Study, spec: StudySpec, storage: Any,
                 runner: Callable[[optuna.Trial], list[float]]) -> None:
        self.study, self.spec, self.storage, self.runner = study, spec, storage, runner

    def free(self) -> bool:
        return True

    def start(self, claimed: Claimed, outage: Outage) -> int:
        try:
            run_trial(self.study, claimed.trial, self.runner, self.spec, self.storage, claimed.heartbeat)
        except Exception as exc:  # out longer than the storage waits: the trial goes stale and is retried
            if not is_outage(exc):
                raise
            outage.wait(exc)
            return 0
        return 1


@dataclass
class _Member:
    trial: optuna.Trial
    session: TrialSession
    heartbeat: ExitStack


class _Packed(_Slots):
    """Up to ``slots`` claimed trials trained as packs (one per network shape); a member that ends frees its slot."""

    def __init__(self, study: optuna.Study, spec: StudySpec, runner: TrialRunner, slots: int) -> None:
        from trainer.pack import Pack

        self.study, self.spec, self.runner, self.slots = study, spec, runner, slots
        self.packs: dict[str, Pack] = {}
        self.members: dict[tuple[str, int], _Member] = {}

    def free(self) -> bool:
        return len(self.members) < self.slots

    def busy(self) -> bool:
        return bool(self.members)

    def start(self, claimed: Claimed, outage: Outage) -> int:
        from search.execution.trial import TrialSession
        from trainer.pack import Pack, pack_key

        trial, beat, runner = claimed.trial, claimed.heartbeat, self.runner
        try:
            session = TrialSession(runner, trial)
            # a config a pack cannot take trains alone, now; then the pack goes on
            if (why := Pack.refuses(session.cfg, runner.data.shape)) is not None:
                log.info("trial %d trains alone: %s", trial.number, why)
                record_outcome(self.study, trial, self.spec, functools.partial(_alone, runner, session))
                beat.close()
                return 1
            key = pack_key(session.cfg)
            group = self.packs.setdefault(key, Pack(runner.data, runner.device, runner.evaluator))
            member = group.add(session.cfg, callback=session.on_eval, out_dir=session.workdir,
                               resume_from=session.resume)
        except Exception as exc:  # noqa: BLE001 - a trial that cannot start fails alone
            record_outcome(self.study, trial, self.spec, functools.partial(_raise, exc))
            beat.close()
            return 1
        except KeyboardInterrupt:  # stopped while it joined: handed back with the members
            requeue(self.study, trial, self.spec)
            beat.close()
            raise
        self.members[(key, member)] = _Member(trial, session, beat)
        log.info("trial %d joins a pack of %d", trial.number, len(group))
        return 0

    def step(self) -> int:
        done = 0
        for key, group in list(self.packs.items()):
            for outcome in group.step():
                m = self.members.pop((key, outcome.id))
                record_outcome(self.study, m.trial, self.spec, functools.partial(_collect, m.session, outcome))
                m.heartbeat.close()
                done += 1
            if not len(group):
                del self.packs[key]
        return done

    def interrupt(self) -> None:
        for m in self.members.values():
            m.session.close(interrupted=True)
            requeue(self.study, m.trial, self.spec)
            m.heartbeat.close()


def _alone(runner: TrialRunner, session: TrialSession) -> list[float]:
    return runner.train(session)


def _raise(exc: BaseException) -> list[float]:
    raise exc


def _collect(session: TrialSession, outcome: Outcome) -> list[float]:
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


def run_trial(study: optuna.Study, trial: optuna.Trial, runner: Callable[[optuna.Trial], list[float]], spec: StudySpec,
              storage: Any, beat: ExitStack | None = None) -> None:
    """Run one claimed trial and record its end state (``beat``: its heartbeat, if the claim started it)."""
    try:
        with beat if beat is not None else heartbeat(storage, optuna_trial_id(trial), spec.heartbeat_interval):
            record_outcome(study, trial, spec, lambda: runner(trial))
    except optuna.exceptions.UpdateFinishedTrialError:  # failed as stale before its first heartbeat
        _finished_elsewhere(trial)


def record_outcome(study: optuna.Study, trial: optuna.Trial, spec: StudySpec, outcome: Callable[[], list[float]]) -> None:
    """Call ``outcome`` (which trains or collects the trial's result) and tell the study how the trial ended:
    COMPLETE with its value, PRUNED, or FAIL with a reason; Ctrl-C fails it and re-enqueues it for a retry."""
    value: list[float] | None = None
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
        if is_outage(exc):  # not the trial's fault: left RUNNING, it goes stale and its retry resumes
            raise
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        trial.set_user_attr(attrs.FAIL_REASON, reason[:500])
        log.warning("trial %d failed: %s", trial.number, reason, exc_info=log.isEnabledFor(logging.DEBUG))
    try:  # another worker may have failed it as stale meanwhile: then it is left as that worker left it
        if state == TrialState.COMPLETE and value is not None:
            told = study.tell(trial, value, skip_if_finished=True)
        else:
            told = study.tell(trial, state=state, skip_if_finished=True)
    except optuna.exceptions.UpdateFinishedTrialError:
        told = None
    if told is None or told.state != state:
        _finished_elsewhere(trial)


def requeue(study: optuna.Study, trial: optuna.Trial, spec: StudySpec) -> None:
    """An interrupted trial (Ctrl-C, or SIGTERM: scancel, preemption, docker stop; Slurm's time-limit warning) fails
    and is re-enqueued (an interruption does not use up ``max_retry``); its retry resumes from its checkpoint. A
    trial another worker already failed as stale has its retry already: nothing more is done."""
    try:
        trial.set_user_attr(attrs.FAIL_REASON, "interrupted (Ctrl-C or a stop signal); handed back")
    except optuna.exceptions.UpdateFinishedTrialError:
        _finished_elsewhere(trial)
        return
    if not fail_and_retry(study, optuna_trial_id(trial), spec.max_retry, interrupted=True):
        _finished_elsewhere(trial)


def _finished_elsewhere(trial: optuna.Trial | FrozenTrial) -> None:
    """Another worker failed this trial as stale (no heartbeat within the grace period) and re-enqueued it."""
    log.warning("trial %d was failed as stale by another worker while it ran here (a heartbeat was late); "
                "its retry counts instead of it", trial.number)


