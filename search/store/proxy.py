"""Many workers through one storage proxy: Optuna's gRPC proxy, with what RDBStorage gives workers and it lacks.

``gan-search proxy --storage postgresql+psycopg://...`` serves the database to workers that connect with
``--storage grpc://HOST:PORT``. The proxy holds the only database connections (at most its thread pool's size:
``--threads``, so 256 workers cost the server 16 connections, not 256) and caches nothing a worker must see
fresh (Optuna's proxy client caches finished trials only).

What RDBStorage gives a worker and the proxy does not, designed here on the storage API alone:

- **Heartbeats.** ``GrpcStorageProxy`` has none (Optuna's heartbeats are RDBStorage's). A running trial writes
  the wall-clock time into its system attribute ``attrs.PROXY_HEARTBEAT`` every ``heartbeat_interval``
  seconds, and the stale sweep reads it (search/store/heartbeat.py: one heartbeat and one sweep for both kinds
  of storage). Clocks of worker machines must agree to well within the grace period (NTP).
- **The study lock.** Claiming a WAITING trial needs none (the RUNNING transition is atomic). Creating the
  next trial while ``n_trials`` has room does: through the proxy, a worker creates it, then counts the
  trials planned before it (by trial number); if the plan was already full, its trial is failed at once and
  marked ``attrs.SURPLUS`` (the plan skips such rows, as it skips failed trials a retry replaces). Exactly
  ``n_trials`` trials run, without a lock. PBT, whose generations are planned under the lock, needs a direct
  database URL.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlparse

import optuna
from optuna.trial import FrozenTrial, TrialState

from search import attrs
from search._optuna import storage_of, trial_id
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
    """Serve ``storage`` (``search.store.storage.make_storage`` of a database URL) to workers as ``grpc://host:port``
    until interrupted; the thread pool bounds the database connections."""
    from optuna.storages import run_grpc_proxy_server

    if threads < 1:
        raise StorageError(f"threads must be >= 1, but got {threads=}.")
    log.info("storage proxy on %s:%d (%d threads, so at most %d database connections)", host, port, threads, threads)
    run_grpc_proxy_server(storage, host=host, port=port, thread_pool=ThreadPoolExecutor(max_workers=threads))


def surplus(study: optuna.Study, created: FrozenTrial, target: int, counts: Any) -> bool:
    """True (and the trial failed, marked surplus) when ``created`` came after the plan was already full."""
    before = [t for t in study.get_trials(deepcopy=False) if t.number < created.number and counts(t)]
    if len(before) < target:
        return False
    storage = storage_of(study)
    try:
        storage.set_trial_system_attr(trial_id(created), attrs.SURPLUS, True)
        storage.set_trial_state_values(trial_id(created), state=TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        log.warning("surplus trial %d was already ended by another worker", created.number)
    return True


__all__ = ["SCHEME", "is_proxy_url", "proxy_client", "serve", "surplus"]
