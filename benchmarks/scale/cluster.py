"""Coordination at cluster scale: N replay workers on one PostgreSQL, side by side, no training (no torch).

    python -m benchmarks.scale.cluster --workers 1 16 64 256 --trial-seconds 60 --trials-per-worker 3
    python -m benchmarks.scale.cluster --workers 256 --trial-seconds 60 30 15 8 --trials-per-worker 2   # shortest trial
    python -m benchmarks.scale.cluster --ask-sizes 100 1000 5000                                            # TPE ask time
    python -m benchmarks.scale.cluster --workers 64 256 --trial-seconds 60 --trials-per-worker 2 --processes 16 \
        --proposals recorded                      # coordination alone: proposals replayed, the samplers' CPU apart
    python -m benchmarks.scale.cluster --workers --ask-sizes 500 --ask-running 0 64 256     # TPE's cost per worker
    python -m benchmarks.scale.cluster --workers 64 --trial-seconds 60 --kill 0.1 --restart-db 90             # faults
    python -m benchmarks.scale.cluster --workers 2 --pack 4 --trials-per-worker 3   # packed workers (real training)

Each run gets a new database on the server (random name, dropped after), the MNIST study file
(``studies/mnist-dcgan.yaml``: TPE with constant liar, median pruner on the best FID so far) with
``n_trials = workers x trials-per-worker``, and replay workers (``gan-search replay``: the service's real claim,
sampler, heartbeat, report, prune, artifact and record path; each evaluation sleeps and reads the recorded
MNIST curve nearest to the trial's parameters). Workers are threads with a storage client each, spread over
``--processes`` processes (the database sees N clients; the samplers of one process share its interpreter).
Trials are NOT compressed unless ``--compress`` says so.

Printed per run: trials/min over the span from the first trial's start to the last trial's end (``wall_s`` adds
process start-up; the span holds the study's tail, where workers have run out of trials) against the ideal (the
replayed sleep of every trial divided over N workers: what N workers with zero coordination cost would take), claim
latency p50/p95, SQL statements and SQL seconds per trial (the workers' own count), peak server connections
(``pg_stat_activity``, polled), the replay processes' CPU seconds per trial (start-up included: what this
host must supply per trial, so ``host_cores / worker_cpu_s_per_trial`` bounds its trials/s; on a cluster it is
spent on the workers' own machines), the PostgreSQL server's CPU seconds per trial (where the server runs on this
host: what one server must supply per trial, whatever the number of machines), and the trials lost
(planned but never ended) and duplicated (beyond the plan)
after the run, which must be 0. ``--kill F`` SIGKILLs worker processes holding at least a fraction F of the workers
once every worker is mid-trial; ``--restart-db S`` restarts the PostgreSQL server (``--restart-command``) S seconds
into the run: the row then also says how many trials were retried and how long the restart took.
``--pack K``: real ``gan-search worker --pack K`` processes (vectorised packs of K trials, torch) on a tiny digits
study (4,800-image trials of 8-wide networks at batch 16, 32 or 64, random sampler, no pruner), ``n_trials = workers x K x
trials-per-worker``: SQL statements and claims per trial, the cost of a packed worker's claim loop (with free slots
once the plan is used up it asked the study lock at every generator step).
``--proposals recorded``: trial n takes recorded trial n's parameters (``search.execution.replay.RecordedProposals``,
no CPU) instead of the study's TPE, through the same claim/suggest/heartbeat/report/record path: on a cluster each
worker's sampler runs on its own machine, so what the workers share (the database, the study lock) is measured
apart from the samplers' compute, which ``--ask-sizes N --ask-running R`` measures per ask. Lock figures: each
claim's time holding the study lock (p50, p95, mean), its busy share, and the worker counts it would serve
(``lock_figures``). ``steady_of_ideal``: the same ratio while every worker has work (from the N-th trial's start to
the last trial's start): what a study much longer than the run sustains.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

from benchmarks._common import parser as bench_parser
from benchmarks._common import write_result

ROOT = Path(__file__).resolve().parents[2]
ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


def new_database() -> tuple[str, str]:
    import psycopg

    name = f"gs_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return name, f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


def drop_database(name: str) -> None:
    import psycopg

    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class ConnectionPeak:
    """Polls pg_stat_activity for the benchmark database's connections; keeps the peak."""

    def __init__(self, database: str, every: float = 0.1) -> None:
        import psycopg

        self.peak, self._stop = 0, threading.Event()
        self._conn = psycopg.connect(ADMIN, autocommit=True)
        self._thread = threading.Thread(target=self._poll, args=(database, every), daemon=True)
        self._thread.start()

    def _poll(self, database: str, every: float) -> None:
        import psycopg

        while not self._stop.wait(every):
            try:
                row = self._conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s",
                                         (database,)).fetchone()
                self.peak = max(self.peak, int(row[0]) if row else 0)
            except psycopg.Error:  # the server restarts (--restart-db): poll again once it is back
                try:
                    self._conn = psycopg.connect(ADMIN, autocommit=True)
                except psycopg.Error:
                    pass

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        self._conn.close()
        return self.peak


def make_study(url: str, workers: int, trials_per_worker: int, artifacts: str, study_file: Path,
               connections: int = 0, recorded: Path | None = None) -> str:
    from search.spec.study_file import StudySpec
    from search.strategy.schedulers import scheduler_for
    from search.strategy.study import create_or_load_study

    raw = yaml.safe_load(study_file.read_text())
    raw["name"] = f"cluster-{workers}"
    raw["budget"] = {**raw["budget"], "n_trials": workers * trials_per_worker}
    raw["storage"] = {**raw.get("storage", {}), "url": url, "artifacts": artifacts, "heartbeat_interval": 10,
                      "grace_period": 60, "connections": connections}
    if recorded is not None:  # proposals that cost no CPU (a cluster's samplers run on their own machines)
        raw["sampler"] = {"name": "search.execution.replay:recorded_proposals", "args": {"curves": str(recorded)}}
    spec = StudySpec.from_dict(raw, source="cluster benchmark")
    study = create_or_load_study(spec)
    scheduler_for(spec).plan(study, spec.n_trials)
    return spec.name


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 60.0) -> None:
    import socket

    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"the storage proxy did not listen on port {port}")


def server_cpu_seconds() -> float | None:
    """CPU seconds of the PostgreSQL server on this host so far: every ``postgres`` process's own time, plus the
    postmaster's reaped children (backends that have exited). None where /proc is not there."""
    tick = os.sysconf("SC_CLK_TCK")
    total, found = 0.0, False
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            raw = stat.read_text()
        except OSError:
            continue
        name, fields = raw[raw.index("(") + 1:raw.rindex(")")], raw[raw.rindex(")") + 2:].split()
        if name != "postgres":
            continue
        found = True
        utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
        total += (utime + stime + cutime + cstime) / tick  # (only the postmaster has reaped children)
    return total if found else None


def transactions(database: str) -> int:
    """Committed transactions of the database so far (server-side: counts the proxy's work too)."""
    import psycopg

    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (database,)).fetchone()
        return int(row[0]) if row else 0


def run(workers: int, trial_seconds: float, args: argparse.Namespace, via_proxy: bool = False) -> dict[str, Any]:
    import optuna

    from search.execution.replay import lost_and_duplicated

    database, url = new_database()
    try:
        with tempfile.TemporaryDirectory() as artifacts:
            name = make_study(url, workers, args.trials_per_worker, artifacts, args.study, args.connections,
                              args.curves if args.proposals == "recorded" else None)
            processes = max(1, min(args.processes, workers))
            sizes = [workers // processes + (1 if i < workers % processes else 0) for i in range(processes)]
            server = None
            worker_url = url
            if via_proxy:  # gan-search proxy: the workers talk gRPC to it, it alone talks to PostgreSQL
                port = free_port()
                server = subprocess.Popen([sys.executable, "-m", "search.cli", "proxy", "--storage", url, "--port", str(port),
                                           "--threads", str(args.proxy_threads)], cwd=ROOT, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
                wait_for_port(port)
                worker_url = f"grpc://127.0.0.1:{port}"
            peak = ConnectionPeak(database)
            commits0 = transactions(database)
            cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            server0 = server_cpu_seconds()
            start = time.perf_counter()
            procs, first = [], 0
            for size in sizes:
                cmd = [sys.executable, "-m", "search.cli", "replay", name, "--storage", worker_url, "--curves", str(args.curves),
                       "--threads", str(size), "--trial-seconds", str(trial_seconds), "--compress", str(args.compress),
                       "--first", str(first)]
                procs.append(subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                              env={**os.environ, "PYTHONPATH": str(ROOT)}))
                first += size
            faults = Faults(args, name, url, procs, sizes, start)
            reports: list[dict[str, Any]] = []
            for p in procs:
                out, err = p.communicate()
                if p in faults.killed:
                    continue
                if p.returncode != 0:
                    raise RuntimeError(f"replay process failed ({p.returncode}): {err.strip().splitlines()[-3:]}")
                reports += json.loads(out.strip().splitlines()[-1])
            wall = time.perf_counter() - start
            cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # the replay processes, waited for above
            worker_cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
            server1 = server_cpu_seconds()
            faults.join()
            connections = peak.stop()
            commits = transactions(database) - commits0
            if server is not None:
                server.terminate()
                server.wait()
            study = optuna.load_study(study_name=name, storage=url)
            losses = lost_and_duplicated(study)
            trials = study.get_trials(deepcopy=False)
            n_evals = math.ceil(64000 / 16000)
            pause = trial_seconds / n_evals / args.compress
            slept = sum(len(t.intermediate_values) for t in trials) * pause
            ideal_wall = slept / workers
            starts = [t.datetime_start for t in trials if t.datetime_start is not None]
            ends = [t.datetime_complete for t in trials if t.datetime_complete is not None]
            span = (max(ends) - min(starts)).total_seconds()  # first trial's start to last trial's end
            steady = steady_state(trials, workers, pause)
            claims = sorted(c for r in reports for c in r["claim_seconds"])
            holds = sorted(h for r in reports for h in r.get("lock_seconds", []))
            ended = losses["ended"]
            complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None]
            return {
                "path": "proxy" if via_proxy else "direct", "proposals": args.proposals, "workers": workers,
                "processes": processes,
                "connections": args.connections,
                "trial_seconds": trial_seconds, "compress": args.compress,
                "trials": ended, "wall_s": round(wall, 1), "span_s": round(span, 1),
                "trials_per_min": round(ended / span * 60, 1), "ideal_trials_per_min": round(ended / ideal_wall * 60, 1),
                "of_ideal": round(ideal_wall / span, 3), **steady,
                "claim_p50_ms": round(1000 * statistics.median(claims), 1) if claims else None,
                "claim_p95_ms": round(1000 * claims[int(0.95 * (len(claims) - 1))], 1) if claims else None,
                **lock_figures(holds, span, trial_seconds / args.compress),
                "server_transactions_per_trial": round(commits / max(ended, 1), 1),
                "sql_statements_per_trial": round(sum(r["statements"] for r in reports) / max(ended, 1), 1)
                if not via_proxy else None,
                "sql_seconds_per_trial": round(sum(r["storage_seconds"] for r in reports) / max(ended, 1), 3),
                "worker_cpu_s_per_trial": round(worker_cpu / max(ended, 1), 3),  # start-up included
                # what one PostgreSQL must supply per trial: with the ideal rate, the server cores N workers need
                "server_cpu_s_per_trial": round((server1 - server0) / max(ended, 1), 3)
                if server0 is not None and server1 is not None else None,
                "host_cores": os.cpu_count(),
                "peak_connections": connections, "lost": losses["lost"], "duplicated": losses["duplicated"],
                "running_left": losses["running"], "waiting_left": losses["waiting"], **faults.row(trials),
                "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in trials),
                "best": round(min(float(t.value) for t in complete), 2) if complete else None,  # type: ignore[arg-type]
            }
    finally:
        drop_database(database)


class Faults:
    """``--kill`` and ``--restart-db`` during a run, from a thread; what they did, for the row."""

    def __init__(self, args: argparse.Namespace, name: str, url: str, procs: list[subprocess.Popen[str]],
                 sizes: list[int], start: float) -> None:
        self.args, self.name, self.url, self.procs, self.sizes, self.start = args, name, url, procs, sizes, start
        self.killed: list[subprocess.Popen[str]] = []
        self.killed_workers, self.killed_trials, self.restart_s = 0, 0, None
        self.restart_at: float | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        if args.kill or args.restart_db is not None:
            self._thread.start()

    def _run(self) -> None:
        if self.args.kill:
            self._kill()
        if self.args.restart_db is not None:
            time.sleep(max(0.0, self.start + self.args.restart_db - time.perf_counter()))
            self.restart_at = time.time()
            t0 = time.perf_counter()
            subprocess.run(self.args.restart_command, shell=True, check=True)
            self.restart_s = round(time.perf_counter() - t0, 1)

    def _kill(self) -> None:
        """Once every worker runs a trial, SIGKILL the processes holding the first ``--kill`` share of workers."""
        import signal

        import optuna

        from search import attrs

        workers = sum(self.sizes)
        study = optuna.load_study(study_name=self.name, storage=self.url)
        while True:
            running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
            if len(running) >= workers or any(p.poll() is not None for p in self.procs):
                break
            time.sleep(0.5)
        time.sleep(self.args.kill_after)  # mid-trial, past the first checkpoints
        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        for p, size in zip(self.procs, self.sizes, strict=True):
            if self.killed_workers >= self.args.kill * workers:
                break
            p.send_signal(signal.SIGKILL)
            self.killed.append(p)
            self.killed_workers += size
            self.killed_trials += sum(t.user_attrs.get(attrs.DEVICE, "").endswith(f":{p.pid}") for t in running)

    def join(self) -> None:
        if self._thread.ident is not None:  # started
            self._thread.join()

    def row(self, trials: list[Any]) -> dict[str, Any]:
        from search import attrs

        if not self.args.kill and self.args.restart_db is None:
            return {}
        retried = sum(t.system_attrs.get(attrs.FAILED_TRIAL) is not None for t in trials)
        return {"killed_workers": self.killed_workers, "killed_running_trials": self.killed_trials,
                "db_restart_s": self.restart_s, "retries": retried}


def lock_figures(holds: list[float], span: float, trial_s: float, target: float = 0.9) -> dict[str, Any]:
    """The study lock: how long each claim held it (p50, p95, mean), its busy share of the run, and how many workers
    it could serve: ``lock_saturates_at`` = trial_s / mean hold (one claim per trial; beyond it the lock is busy all
    the time), ``lock_max_workers_90``: the largest N whose claims, queued at the lock as one server with a fixed
    service time (M/D/1: wait = rho h / (2 (1 - rho)), rho = N h / trial_s), still leave trial_s / (trial_s + h +
    wait) >= ``target`` of the ideal. This bounds what the lock alone allows; the database's other per-trial work
    (heartbeats, reports) is measured by the run itself, up to the workers it ran."""
    if not holds:
        return {}
    mean = statistics.fmean(holds)
    n, step = 1, 1
    while step:  # the largest N meeting the target (efficiency falls as N grows): doubling, then halving
        rho = (n + step) * mean / trial_s
        wait = rho * mean / (2 * (1 - rho)) if rho < 1 else math.inf
        if trial_s / (trial_s + mean + wait) >= target:
            n, step = n + step, step * 2
        else:
            step //= 2
    return {"lock_hold_p50_ms": round(1000 * statistics.median(holds), 1),
            "lock_hold_p95_ms": round(1000 * holds[int(0.95 * (len(holds) - 1))], 1),
            "lock_hold_mean_ms": round(1000 * mean, 1), "lock_busy_share": round(sum(holds) / span, 4),
            "lock_saturates_at": int(trial_s / mean), "lock_max_workers_90": n}


def steady_state(trials: list[Any], workers: int, pause: float) -> dict[str, Any]:
    """Utilisation while every worker has work: from the start of the N-th trial (all N workers busy) to the start
    of the last one (after it, workers run out of trials: the study's tail, not coordination). Each trial counts
    its replayed sleep, in proportion to the part of its run inside that window."""
    runs = sorted((t.datetime_start.timestamp(), t.datetime_complete.timestamp(), len(t.intermediate_values) * pause)
                  for t in trials if t.datetime_start is not None and t.datetime_complete is not None)
    if len(runs) <= workers:
        return {"steady_s": None, "steady_of_ideal": None}
    lo, hi = runs[workers - 1][0], runs[-1][0]
    busy = sum(sleep * max(0.0, min(end, hi) - max(start, lo)) / max(end - start, 1e-9) for start, end, sleep in runs)
    ended = sum(lo <= end <= hi for _, end, _ in runs)
    mean_sleep = statistics.mean(sleep for _, _, sleep in runs)
    return {"steady_s": round(hi - lo, 1), "steady_trials_per_min": round(ended / (hi - lo) * 60, 1),
            "steady_ideal_trials_per_min": round(workers / mean_sleep * 60, 1),
            "steady_of_ideal": round(busy / (workers * (hi - lo)), 3)}


def ask_times(sizes: list[int], study_file: Path, running: list[int]) -> list[dict[str, Any]]:
    """TPE's ask time (constant liar, multivariate, as the MNIST study) in a study already holding n finished trials
    and r running ones (constant liar reads and models every running trial): wall and CPU ms per ask, what each
    worker's own machine spends per trial proposing it."""
    import optuna

    from search.spec.study_file import StudySpec
    from search.strategy.samplers import build_sampler

    spec = StudySpec.from_dict({**yaml.safe_load(study_file.read_text()), "name": "ask"}, source="ask benchmark")
    out = []
    for n, r in ((n, r) for n in sizes for r in running):
        database, url = new_database()
        try:
            study = optuna.create_study(study_name="ask", storage=url, sampler=build_sampler(spec))
            rng = optuna.samplers.RandomSampler(seed=0)
            filler = optuna.create_study(sampler=rng)
            for _ in range(n):
                t = filler.ask({p.name: p.distribution() for p in spec.space})
                filler.tell(t, float(rng._rng.rng.uniform(5, 100)))  # noqa: SLF001 - a value per filler trial
            study.add_trials(filler.get_trials(deepcopy=False))
            space = {p.name: p.distribution() for p in spec.space}
            for _ in range(r):  # running trials, each with its parameters (what constant liar reads)
                study.ask(space)
            times, cpu = [], []
            for _ in range(5):
                t0, c0 = time.perf_counter(), time.process_time()
                trial = study.ask(space)
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
                study.tell(trial, 50.0)
            out.append({"trials_in_study": n, "running_trials": r, "ask_ms_median": round(1000 * statistics.median(times), 1),
                        "ask_cpu_ms_median": round(1000 * statistics.median(cpu), 1)})
        finally:
            drop_database(database)
    return out


def run_packed(workers: int, pack: int, args: argparse.Namespace) -> dict[str, Any]:
    """``workers`` real packed workers (``gan-search worker --pack``) on PostgreSQL: statements and claims per trial."""
    import optuna

    from search.execution.replay import lost_and_duplicated
    from search.spec.study_file import StudySpec
    from search.strategy.schedulers import scheduler_for
    from search.strategy.study import create_or_load_study

    database, url = new_database()
    try:
        with tempfile.TemporaryDirectory() as artifacts:
            n_trials = workers * pack * args.trials_per_worker
            raw = {"name": f"packed-{workers}x{pack}", "objective": "g_loss",
                   "train": {"dataset": "digits", "arch": "dcgan", "g_width": 8, "d_width": 8, "latent_dim": 8,
                             "batch_size": 32, "device": "cpu", "amp": "off", "channels_last": "off"},
                   "space": {"lr_g": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True},
                             "batch_size": [16, 32, 64]},  # packs of 75 to 300 steps: members end apart
                   "sampler": {"name": "random", "seed": 0}, "pruner": {"name": "none"},
                   "budget": {"n_trials": n_trials, "trial_images": 4800, "eval_every_images": 1600},
                   "storage": {"url": url, "artifacts": artifacts, "heartbeat_interval": 10, "grace_period": 60}}
            spec = StudySpec.from_dict(raw, source="cluster benchmark (packed)")
            scheduler_for(spec).plan(create_or_load_study(spec), spec.n_trials)
            start = time.perf_counter()
            env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
            procs = [subprocess.Popen([sys.executable, "-m", "search.cli", "worker", spec.name, "--storage", url,
                                       "--pack", str(pack)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, env=env) for _ in range(workers)]
            reports = []
            for p in procs:
                out, err = p.communicate()
                if p.returncode != 0:
                    raise RuntimeError(f"worker failed ({p.returncode}): {err.strip().splitlines()[-3:]}")
                reports.append(json.loads(out.strip().splitlines()[-1]))
            wall = time.perf_counter() - start
            study = optuna.load_study(study_name=spec.name, storage=url)
            losses = lost_and_duplicated(study)
            ended = max(losses["ended"], 1)
            return {"path": "packed", "workers": workers, "pack": pack, "trials": losses["ended"],
                    "wall_s": round(wall, 1),
                    "sql_statements_per_trial": round(sum(r["statements"] for r in reports) / ended, 1),
                    "claims_per_trial": round(sum(len(r["claim_seconds"]) for r in reports) / ended, 2),
                    "sql_seconds_per_trial": round(sum(r["storage_seconds"] for r in reports) / ended, 3),
                    "lost": losses["lost"], "duplicated": losses["duplicated"]}
    finally:
        drop_database(database)


def main() -> None:
    ap = bench_parser(__doc__, "cluster")
    ap.add_argument("--workers", type=int, nargs="*", default=[1, 16, 64, 256])
    ap.add_argument("--trial-seconds", type=float, nargs="+", default=[60.0])
    ap.add_argument("--compress", type=float, default=1.0)
    ap.add_argument("--trials-per-worker", type=int, default=3)
    ap.add_argument("--processes", type=int, default=8, help="processes the replay threads are spread over")
    ap.add_argument("--study", type=Path, default=ROOT / "studies" / "mnist-dcgan.yaml")
    ap.add_argument("--curves", type=Path, default=ROOT / "benchmarks" / "results" / "search-mnist-2026-11-26.json")
    ap.add_argument("--ask-sizes", type=int, nargs="*", default=[])
    ap.add_argument("--ask-running", type=int, nargs="*", default=[0], help="running trials beside --ask-sizes")
    ap.add_argument("--proposals", choices=["sampler", "recorded"], default="sampler",
                    help="sampler: the study file's (TPE on this host); recorded: recorded trials' parameters, no CPU")
    ap.add_argument("--paths", nargs="+", default=["direct"], choices=["direct", "proxy"])
    ap.add_argument("--proxy-threads", type=int, default=16)
    ap.add_argument("--connections", type=int, default=0,
                    help="storage.connections: connections each worker keeps open (0: one per call)")
    ap.add_argument("--kill", type=float, default=0.0, help="SIGKILL processes holding this share of the workers")
    ap.add_argument("--kill-after", type=float, default=20.0, help="seconds after every worker is busy")
    ap.add_argument("--restart-db", type=float, default=None, help="restart PostgreSQL this many seconds in")
    ap.add_argument("--restart-command", default="pg_ctlcluster 15 main restart -m fast")
    ap.add_argument("--pack", type=int, default=0, help="K > 0: real packed workers (gan-search worker --pack K), "
                                                        "statements and claims per trial")
    args = ap.parse_args()
    rows: list[dict[str, Any]] = []
    if args.pack:
        for n in args.workers:
            row = run_packed(n, args.pack, args)
            print(json.dumps(row), flush=True)
            rows.append(row)
        write_result(args, {"rows": rows})
        return
    for seconds in args.trial_seconds:
        for n in args.workers:
            for path in args.paths:
                row = run(n, seconds, args, via_proxy=path == "proxy")
                print(json.dumps(row), flush=True)
                rows.append(row)
    for row in ask_times(args.ask_sizes, args.study, args.ask_running):
        print(json.dumps(row), flush=True)
        rows.append(row)
    write_result(args, {"rows": rows})


if __name__ == "__main__":
    main()
