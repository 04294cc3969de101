"""Many workers through one storage proxy: Optuna's gRPC proxy, with what RDBStorage gives workers and it lacks.

``gan-search proxy --storage postgresql+psycopg://...`` serves the database to workers that connect with
``--storage grpc://HOST:PORT``. The proxy holds the only database connections (at most its thread pool's size:
``--threads``, so 256 workers cost the server 16 connections, not 256) and caches nothing a worker must see
fresh (Optuna's proxy client caches finished trials only).

What RDBStorage gives a worker and the proxy does not, designed here on the storage API alone:

- **Heartbeats.** ``GrpcStorageProxy`` has none (Optuna's heartbeats are RDBStorage's). A running trial writes
  the wall-clock time into its system attribute ``attrs.PROXY_HEARTBEAT`` every ``heartbeat_interval``
  seconds; ``fail_stale`` (every worker calls it before claiming, as it calls Optuna's ``fail_stale_trials``)
  fails a RUNNING trial whose heartbeat (or start) is older than ``grace_period`` and re-enqueues it with
  Optuna's retry callback, exactly once: the state change is atomic in the database, so of two
  workers that see the same stale trial one wins and the other gets ``UpdateFinishedTrialError``. Clocks of
  worker machines must agree to well within the grace period (NTP).
- **The study lock.** Claiming a WAITING trial needs none (the RUNNING transition is atomic). Creating the
  next trial while ``n_trials`` has room does: through the proxy, a worker creates it, then counts the
  trials planned before it (by trial number); if the plan was already full, its trial is failed at once and
  marked ``attrs.SURPLUS`` (the plan skips such rows, as it skips failed trials a retry replaces). Exactly
  ``n_trials`` trials run, without a lock. PBT, whose generations are planned under the lock, needs a direct
  database URL.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlparse

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from search import attrs
from search.errors import StorageError

log = logging.getLogger(__name__)
SCHEME = "grpc://"


def is_proxy_url(url: str) -> bool:
    return url.startswith(SCHEME)


def proxy_client(url: str) -> Any:
    """``grpc://host:port`` -> a ``GrpcStorageProxy`` (needs the grpcio package)."""
    parsed = urlparse(url)
    if not parsed.hostname or not parsed.port:
        raise StorageError(f"storage must be grpc://HOST:PORT for a storage proxy, but got {url!r}.")
    try:
        from optuna.storages import GrpcStorageProxy
    except ImportError:
        raise StorageError("a grpc:// storage needs grpcio: pip install 'gan-search[proxy]'.") from None
    return GrpcStorageProxy(host=parsed.hostname, port=parsed.port)


def serve(storage: Any, host: str = "127.0.0.1", port: int = 13000, threads: int = 16) -> None:
    """Serve ``storage`` (``search.storage.make_storage`` of a database URL) to workers as ``grpc://host:port``
    until interrupted; the thread pool bounds the database connections."""
    from optuna.storages import run_grpc_proxy_server

    if threads < 1:
        raise StorageError(f"threads must be >= 1, but got {threads=}.")
    log.info("storage proxy on %s:%d (%d threads, so at most %d database connections)", host, port, threads, threads)
    run_grpc_proxy_server(storage, host=host, port=port, thread_pool=ThreadPoolExecutor(max_workers=threads))


@contextmanager
def heartbeat(storage: Any, trial_id: int, interval: float) -> Iterator[None]:
    """Write the time into the trial's ``PROXY_HEARTBEAT`` system attribute every ``interval`` seconds."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval):
            try:
                storage.set_trial_system_attr(trial_id, attrs.PROXY_HEARTBEAT, time.time())
            except optuna.exceptions.UpdateFinishedTrialError:
                return
            except Exception:  # a transient error must not kill the trial
                log.warning("heartbeat of trial id %d failed", trial_id, exc_info=True)

    storage.set_trial_system_attr(trial_id, attrs.PROXY_HEARTBEAT, time.time())
    thread = threading.Thread(target=beat, daemon=True, name=f"heartbeat-{trial_id}")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def fail_stale(study: optuna.Study, grace_period: float, max_retry: int) -> list[int]:
    """Fail RUNNING trials whose heartbeat is older than ``grace_period`` and re-enqueue each once."""
    now, failed = time.time(), []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        # a retry inherits its dead trial's system attributes (Optuna's RetryFailedTrialCallback), heartbeat included:
        # a beat from before the trial started is the dead trial's, not this one's
        started = t.datetime_start.timestamp() if t.datetime_start else now
        last = max(float(t.system_attrs.get(attrs.PROXY_HEARTBEAT, started)), started)
        if now - last > grace_period and fail_and_retry(study, t._trial_id, max_retry):
            failed.append(t.number)
            log.warning("trial %d: its worker stopped sending heartbeats; failed and re-enqueued", t.number)
    return failed


def fail_and_retry(study: optuna.Study, trial_id: int, max_retry: int) -> bool:
    """Fail a RUNNING trial and re-enqueue it once (Optuna's retry callback); False when another
    worker ended it first (the state change is atomic in the database)."""
    storage = study._storage  # noqa: SLF001
    try:
        if not storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
            return False
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry, inherit_intermediate_values=True)
    retry(study, storage.get_trial(trial_id))
    return True


def surplus(study: optuna.Study, created: FrozenTrial, target: int, counts: Any) -> bool:
    """True (and the trial failed, marked surplus) when ``created`` came after the plan was already full."""
    before = [t for t in study.get_trials(deepcopy=False) if t.number < created.number and counts(t)]
    if len(before) < target:
        return False
    storage = study._storage  # noqa: SLF001
    try:
        storage.set_trial_system_attr(created._trial_id, attrs.SURPLUS, True)
        storage.set_trial_state_values(created._trial_id, state=TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        log.warning("surplus trial %d was already ended by another worker", created.number)
    return True


__all__ = ["SCHEME", "fail_and_retry", "fail_stale", "heartbeat", "is_proxy_url", "proxy_client", "serve", "surplus"]
