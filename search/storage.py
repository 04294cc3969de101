"""Storage URL -> Optuna RDBStorage (heartbeats, retries, small pools) and the artifact store."""

from __future__ import annotations

import fcntl
import hashlib
import logging
import re
import sqlite3
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
from optuna.artifacts import FileSystemArtifactStore
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import NullPool

from search.errors import StorageError
from search.proxy import is_proxy_url, proxy_client
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


def make_storage(url: str, *, heartbeat_interval: int | None = None, grace_period: int | None = None,
                 max_retry: int = 2, create: bool = False) -> RDBStorage:
    """An RDBStorage for ``url`` (sqlite/postgresql/mysql) with heartbeats and retry of dead workers' trials.

    Connections are not pooled (NullPool): dozens of workers then hold at most one connection each,
    and only while they talk to the database.
    """
    if is_proxy_url(url):  # a storage proxy (search/proxy.py) holds the database connections
        return proxy_client(url)  # type: ignore[no-any-return]
    parsed = check_url(url)
    engine: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        _prepare_sqlite(url, create)
        engine["connect_args"] = {"timeout": 60}
    else:
        engine["poolclass"] = NullPool
        engine["pool_pre_ping"] = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry, inherit_intermediate_values=True)
            return RDBStorage(url, engine_kwargs=engine, heartbeat_interval=heartbeat_interval,
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
    if not isinstance(storage, RDBStorage):  # a storage proxy: claims are lock-free (search/proxy.py)
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
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        else:
            name = f"gan-search-{digest.hex()[:40]}"  # MySQL lock names are at most 64 characters
            while conn.execute(text("SELECT GET_LOCK(:n, 60)"), {"n": name}).scalar() != 1:
                log.warning("waiting for the claim lock of study %s", study_name)
            try:
                yield
            finally:
                conn.execute(text("SELECT RELEASE_LOCK(:n)"), {"n": name})


def artifact_store(path: str | Path) -> FileSystemArtifactStore:
    folder = Path(path).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(folder))


def load_study(name: str, storage: optuna.storages.BaseStorage) -> optuna.Study:
    from search.errors import StudyError

    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
        raise StudyError(f"study {name!r} not found in the storage; studies there: {', '.join(names) or 'none'}.") from None
