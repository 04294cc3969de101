"""Storage URL -> Optuna RDBStorage (heartbeats, retries, small pools) and the artifact store."""

from __future__ import annotations

import copy
import fcntl
import functools
import hashlib
import logging
import re
import sqlite3
import threading
import time
import warnings
from collections.abc import Container, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import select, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, InterfaceError, OperationalError
from sqlalchemy.pool import NullPool

from search._optuna import backend_of, models, rdb_trials, storage_of, study_id, trial_id
from search.errors import StorageError
from search.store.proxy import is_proxy_url, proxy_client
from search.store.retry import Retry
from trainer.errors import ConfigError

log = logging.getLogger(__name__)


def redact(url: str) -> str:
    """The URL with its password hidden (safe to print or log)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<invalid storage URL>"


def _prepare_sqlite(url: str, create: bool) -> None:
    """Create the folder of a SQLite file and switch it to WAL so several local workers can share it.

    With ``create=False`` (commands that only read or join a study) a missing file is an error, not a new
    empty database.
    """
    database = make_url(url).database
    if not database or database == ":memory:":
        return
    path = Path(database)
    if not create and not path.is_file():
        from search.errors import StudyError

        raise StudyError(f"storage {redact(url)}: no database file at {path}; create the study first with "
                         "`gan-search run` or `gan-search create`.")
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path, timeout=60) as conn:
        conn.execute("PRAGMA journal_mode=WAL")


def check_url(url: str) -> URL:
    """The parsed storage URL, or a one-line error (the password masked) naming what is allowed."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        shown = re.sub(r"(//[^:/@]*:)[^@]*@", r"\1***@", url)
        raise ConfigError(f"storage must be an SQLAlchemy URL such as sqlite:///runs/x.db, but got {shown!r}.") from None
    if is_proxy_url(url):
        if not parsed.host or not parsed.port:
            raise ConfigError(f"storage must be grpc://HOST:PORT for a storage proxy, but got {url!r}.")
        return parsed
    if parsed.get_backend_name() not in ("sqlite", "postgresql", "mysql", "mariadb"):
        raise ConfigError(f"storage must be a sqlite, postgresql or mysql URL (or grpc://HOST:PORT, a gan-search proxy), "
                          f"but got {redact(url)!r}.")
    return parsed


_UNDER_LOCK = threading.local()  # depth of study_lock in this thread: calls made under it are not retried


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it: Optuna wraps driver errors) says the database could not be reached or
    dropped the connection: a restart, a failover, a network cut, a deadlock victim. Such a call may be repeated."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, (OperationalError, InterfaceError)):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class Outage:
    """How long the database has been unreachable for a caller: ``wait`` sleeps with back-off (0.5 s doubling to
    10 s) and re-raises once the outage has lasted ``limit`` seconds; ``over`` resets it after a call succeeds."""

    def __init__(self, limit: float) -> None:
        self.limit, self.since, self.delay = limit, 0.0, 0.5

    def wait(self, exc: BaseException, what: str = "the call") -> None:
        now = time.monotonic()
        self.since = self.since or now
        if now + self.delay - self.since > self.limit:
            raise exc
        log.warning("database unreachable (%s); %s again in %.1f s", type(exc).__name__, what, self.delay)
        time.sleep(self.delay)
        self.delay = min(2 * self.delay, 10.0)

    def over(self) -> None:
        self.since, self.delay = 0.0, 0.5


class ResilientRDBStorage(RDBStorage):
    """Optuna's RDBStorage that waits out a database outage: a call that fails because the server cannot be reached
    (``is_outage``) is repeated with back-off for up to ``outage_seconds``, so a PostgreSQL restart pauses the trials
    instead of failing them. Two exceptions: a call made under the study lock is not repeated (the server dropped
    the lock with the connection: the claim is abandoned and started over, see ``search.execution.worker``), and heartbeats
    are not (a missed beat is simply the next one)."""

    outage_seconds = 300.0


def _repeat_through_outages(method: Any) -> Any:
    @functools.wraps(method)
    def call(self: ResilientRDBStorage, *args: Any, **kwargs: Any) -> Any:
        outage = Outage(self.outage_seconds)
        while True:
            try:
                return method(self, *args, **kwargs)
            except Exception as exc:
                if getattr(_UNDER_LOCK, "depth", 0) or not is_outage(exc):
                    raise
                outage.wait(exc, method.__name__)

    return call


for _name in ("create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr",
              "get_study_id_from_name", "get_study_name_from_id", "get_study_directions", "get_study_user_attrs",
              "get_study_system_attrs", "get_all_studies", "create_new_trial", "set_trial_param",
              "get_trial_id_from_study_id_trial_number", "get_trial_param", "set_trial_state_values",
              "set_trial_intermediate_value", "set_trial_user_attr", "set_trial_system_attr", "get_trial",
              "_get_trials", "get_best_trial", "get_trial_user_attrs", "get_trial_system_attrs",
              "_get_stale_trial_ids"):
    setattr(ResilientRDBStorage, _name, _repeat_through_outages(getattr(RDBStorage, _name)))


def make_storage(url: str, *, heartbeat_interval: int | None = None, grace_period: int | None = None,
                 max_retry: int = 2, create: bool = False, pool: int = 0) -> RDBStorage:
    """An RDBStorage for ``url`` (sqlite/postgresql/mysql) with heartbeats and retry of dead workers' trials; on a
    database server it waits out outages (``ResilientRDBStorage``).

    By default connections are not pooled (NullPool): dozens of workers then hold at most one connection each, and
    only while they talk to the database. With ``pool=K`` (a proxy: one per serving thread; a worker: the study
    file's ``storage.connections``) K connections stay open: a new connection per call costs a server process and
    a login each time, which on a small server becomes the limit (BENCHMARKS.md, "Many workers on one PostgreSQL").
    """
    if is_proxy_url(url):  # a storage proxy (search/store/proxy.py) holds the database connections
        return proxy_client(url)  # type: ignore[no-any-return]
    parsed = check_url(url)
    engine: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        _prepare_sqlite(url, create)
        engine["connect_args"] = {"timeout": 60}
    else:
        if pool:  # checked on checkout: a database restart costs a reconnect, not a failed request
            engine.update(pool_size=pool, max_overflow=2, pool_timeout=300)  # +2: a lock and a heartbeat at once
        else:
            engine["poolclass"] = NullPool
        engine["pool_pre_ping"] = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = Retry(max_retry)
            kind = RDBStorage if parsed.get_backend_name() == "sqlite" else ResilientRDBStorage
            return kind(url, engine_kwargs=engine, heartbeat_interval=heartbeat_interval,
                              grace_period=grace_period,
                              heartbeat_stale_trial_callback=retry if heartbeat_interval else None)
    except Exception as exc:  # driver errors carry the URL: never show it unredacted
        message = str(exc).splitlines()[0].replace(url, redact(url))
        if parsed.password:
            message = message.replace(parsed.password, "***")
        raise StorageError(f"cannot open storage {redact(url)}: {message}") from None


_PROCESS_LOCKS: dict[str, threading.Lock] = {}
_PROCESS_LOCKS_GUARD = threading.Lock()


def _process_lock(key: str) -> threading.Lock:
    with _PROCESS_LOCKS_GUARD:
        return _PROCESS_LOCKS.setdefault(key, threading.Lock())


@contextmanager
def study_lock(storage: Any, study_name: str) -> Iterator[None]:
    """A lock held by one process at a time per study, across machines: claims and trial creation run under it.

    PostgreSQL: a session advisory lock; MySQL/MariaDB: ``GET_LOCK``; both are released by the server if the
    process dies. SQLite ignores ``SELECT ... FOR UPDATE`` and has no such lock, so local workers sharing a
    SQLite file use an OS file lock beside it (also released when the process dies).
    """
    if not isinstance(storage, RDBStorage):  # a storage proxy: claims are lock-free (search/store/proxy.py)
        yield
        return
    url = storage.engine.url
    backend = url.get_backend_name()
    if backend == "sqlite":
        if not url.database or url.database == ":memory:":
            yield
            return
        with open(f"{url.database}.claim-lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
        return
    digest = hashlib.sha256(f"gan-search:{study_name}".encode()).digest()
    # threads of one process (replay workers, packs) queue here first: at most one connection per process waits on
    # the server's lock, so N threaded workers do not hold N idle connections at a stampede (max_connections)
    with _process_lock(f"{url.render_as_string(hide_password=True)}|{study_name}"), storage.engine.connect() as conn:
        if backend == "postgresql":
            key = int.from_bytes(digest[:8], "big", signed=True)
            args: dict[str, Any] = {"k": key}
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
            unlock = text("SELECT pg_advisory_unlock(:k)")
        else:
            name = f"gan-search-{digest.hex()[:40]}"  # MySQL lock names are at most 64 characters
            while conn.execute(text("SELECT GET_LOCK(:n, 60)"), {"n": name}).scalar() != 1:
                log.warning("waiting for the claim lock of study %s", study_name)
            unlock, args = text("SELECT RELEASE_LOCK(:n)"), {"n": name}
        _UNDER_LOCK.depth = getattr(_UNDER_LOCK, "depth", 0) + 1
        _UNDER_LOCK.conn = conn
        try:
            yield
        finally:
            _UNDER_LOCK.depth -= 1
            _UNDER_LOCK.conn = None
            try:
                conn.execute(unlock, args)
            except Exception as exc:
                if not is_outage(exc):
                    raise
                log.warning("the study lock's connection was lost (%s); the server released the lock with it",
                            type(exc).__name__)


def lock_connection() -> Any:
    """The connection holding this thread's study lock (PostgreSQL, MySQL), or None: reads under the lock use it
    instead of opening connections of their own (each one a server round trip or more while every worker waits)."""
    return getattr(_UNDER_LOCK, "conn", None)


def rdb_backend(study: optuna.Study) -> RDBStorage | None:
    """The study's RDBStorage under Optuna's cache, or None (a storage proxy, in-memory)."""
    backend = backend_of(storage_of(study))
    return backend if isinstance(backend, RDBStorage) else None


class FinishedTrials:
    """The study as a pruner that reads only finished trials sees it (the median and percentile pruners): finished
    trials never change, so each is loaded once into this cache, and a read costs one query of ids. Through the
    study itself every read reloads every RUNNING trial's body (Optuna's cache holds finished trials only): with
    256 workers, each report cost 256 trial loads. Any other read goes to the study."""

    FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)

    def __init__(self, study: optuna.Study, rdb: RDBStorage) -> None:
        self._study, self._rdb = study, rdb
        self._trials: dict[int, FrozenTrial] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def reads(self, study: optuna.Study) -> bool:
        """Whether this cache is of ``study`` (a pruner keeps one per study it prunes in)."""
        return self._study is study

    def get_trials(self, deepcopy: bool = True, states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        if states is None or any(s not in self.FINISHED for s in states):  # type: ignore[attr-defined]
            return self._study.get_trials(deepcopy=deepcopy, states=states)
        TrialModel = models().TrialModel  # noqa: N806
        sid = study_id(self._study)
        with self._rdb.engine.connect() as conn:
            ids = {int(r[0]) for r in conn.execute(select(TrialModel.trial_id).where(
                TrialModel.study_id == sid, TrialModel.state.in_(self.FINISHED)))}
        new = ids - self._trials.keys()
        if new:  # exactly the new ones: ids above max(new) are excluded by the state filter or were finished too
            for t in rdb_trials(self._rdb, sid, self.FINISHED, new, max(new)):
                self._trials[trial_id(t)] = t
        trials = sorted((t for t in self._trials.values() if t.state in states), key=lambda t: t.number)
        return copy.deepcopy(trials) if deepcopy else trials



def load_study(name: str, storage: optuna.storages.BaseStorage) -> optuna.Study:
    from search.errors import StudyError, check_study_name

    check_study_name(name, "study name")
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
        raise StudyError(f"study {name!r} not found in the storage; studies there: {', '.join(names) or 'none'}.") from None
