"""K workers of one study: in this process, as joblib processes on this machine, or as Dask tasks."""

from __future__ import annotations

import logging
import os
import signal
import threading

from search.errors import StudyError
from search.execution.replay import Replay
from search.execution.worker import WorkerReport, work

log = logging.getLogger(__name__)


def _visible_gpus() -> list[str]:
    try:
        import torch

        count = torch.cuda.device_count()
    except Exception:
        count = 0
    return [f"cuda:{i}" for i in range(count)]  # indices are relative to CUDA_VISIBLE_DEVICES


def devices() -> int:
    """Training devices on this machine: the visible GPUs, else 1 (the CPU)."""
    return len(_visible_gpus()) or 1


def placement(n_workers: int, per_device: int = 1) -> list[tuple[str | None, int | None]]:
    """(device, torch threads) per worker: ``per_device`` consecutive workers per GPU, GPUs in turn;
    on a CPU-only machine every worker shares the CPU, its cores split evenly."""
    gpus = _visible_gpus()
    if gpus:
        return [(gpus[(i // per_device) % len(gpus)], None) for i in range(n_workers)]
    cores = os.cpu_count() or 1
    return [("cpu", max(1, cores // n_workers)) for _ in range(n_workers)]


def _worker_entry(study_name: str, storage_url: str, artifacts: str | None, device: str | None,
                  threads: int | None, timeout: float | None, worker: int, new_trials: bool = True,
                  tensorboard: str | None = None, pack: int = 1) -> WorkerReport:
    if threading.current_thread() is threading.main_thread():  # Dask runs tasks in a worker thread
        signal.signal(signal.SIGINT, signal.default_int_handler)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s worker{worker} %(levelname)s %(name)s: %(message)s")
    for noisy in ("optuna", "distributed", "sqlalchemy", "botocore", "boto3", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return work(study_name, storage_url, artifacts=artifacts, device=device, timeout=timeout, worker=worker,
                threads=threads, new_trials=new_trials, tensorboard=tensorboard, pack=pack)


def run_workers(study_name: str, storage_url: str, n_workers: int, *, artifacts: str | None = None,
                timeout: float | None = None, backend: str = "local", scheduler: str | None = None,
                new_trials: bool = True, tensorboard: str | None = None, pack: int = 1,
                per_device: int = 1) -> list[WorkerReport]:
    """Run ``n_workers`` workers of the study: in this process (1), joblib processes, or a Dask cluster.

    ``per_device`` workers share each GPU (processes on one card); ``pack`` trials train at once in each
    worker as vectorised packs. Both multiply the trials a device runs at once.
    """
    if n_workers < 1:
        raise StudyError(f"workers must be >= 1, but got workers={n_workers}.")
    places = placement(n_workers, per_device)
    if backend == "dask":
        from distributed import Client

        with Client(scheduler) if scheduler else Client(processes=True, n_workers=n_workers,
                                                        threads_per_worker=1) as client:
            futures = [client.submit(_worker_entry, study_name, storage_url, artifacts, None, None, timeout, i,
                                     new_trials, tensorboard, pack, pure=False) for i in range(n_workers)]
            return list(client.gather(futures))
    if n_workers == 1:
        device, _ = places[0]
        return [work(study_name, storage_url, artifacts=artifacts, device=device, timeout=timeout,
                     new_trials=new_trials, tensorboard=tensorboard, pack=pack)]
    from joblib import Parallel, delayed

    jobs = (delayed(_worker_entry)(study_name, storage_url, artifacts, dev, threads, timeout, i, new_trials,
                                   tensorboard, pack)
            for i, (dev, threads) in enumerate(places))
    return list(Parallel(n_jobs=n_workers, backend="loky")(jobs))


def replay_workers(study_name: str, storage_url: str, replay: Replay, threads: int, *, first: int = 0,
                   artifacts: str | None = None, timeout: float | None = None) -> list[WorkerReport]:
    """``threads`` replay workers in this process, each a thread with its own storage client (its own engine,
    connections, ``Study`` and sampler): what the database sees of ``threads`` machines. Their reports, in order."""
    if threads < 1:
        raise ValueError(f"threads must be >= 1, but got {threads=}.")
    reports: list[WorkerReport | None] = [None] * threads
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            reports[i] = work(study_name, storage_url, artifacts=artifacts, worker=first + i, replay=replay,
                              timeout=timeout)
        except BaseException as exc:  # noqa: BLE001 - reported after the others finish
            errors.append(exc)

    pool = [threading.Thread(target=one, args=(i,), name=f"replay-{first + i}") for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    if errors:
        raise errors[0]
    return [r for r in reports if r is not None]
