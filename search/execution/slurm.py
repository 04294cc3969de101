"""Workers as one Slurm job array: a job script users can read and edit, written beside the study file, then
``sbatch``.

Plain ``sbatch`` rather than submitit or dask-jobqueue: each array task is the same ``gan-search worker`` command a
user runs by hand, so the script is the whole story (no pickled callables on a shared folder, no scheduler process
that must stay reachable from the compute nodes), it can be edited for a cluster's modules, conda and GPUs, and
submitted again with ``sbatch FILE``. Slurm's own machinery does the rest: ``--requeue`` puts a preempted or
failed node's task back in the queue, and ``--signal=B:USR1@...`` warns the worker before the time limit.

What a task does when it is stopped (``scancel``, preemption, ``scontrol requeue``): Slurm sends SIGTERM, and
``KillWait`` seconds later SIGKILL. The worker turns SIGTERM into an interrupt: its running trial fails and is
re-enqueued at once, and the retry, on any worker, resumes from the trial's last checkpoint. A task killed outright
loses nothing either: its trial's heartbeat stops, and another worker fails it as stale and re-enqueues it
(``search/store/heartbeat.py``).

The time limit: every task of the array has the same ``--time``, so at the limit all workers would stop together and
leave the study with retries and no worker. Instead the warning (SIGUSR1, ``stop_warning`` seconds before the limit)
hands the running trial back and the task requeues itself (``scontrol requeue``, as submitit does), at most
``max_requeues`` times (``$SLURM_RESTART_COUNT`` counts them): a 12-hour study runs under a 2-hour ``--time``.
Slurm starts a requeued task again once it is eligible (about two minutes after the requeue).
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from search.store.storage import redact
from trainer.errors import ConfigError, GanSearchError

log = logging.getLogger(__name__)

_TIME = re.compile(r"^\d+(-\d+)?(:\d{1,2}){0,2}$")  # Slurm's --time forms: M, M:S, H:M:S, D-H, D-H:M[:S]
STOP_WARNING_S = 120  # SIGUSR1 this long before the time limit (at most a quarter of it): enough to hand a trial back
MAX_REQUEUES_ENV = "GAN_SEARCH_MAX_REQUEUES"  # how often a task may requeue itself at its time limit


@dataclass(frozen=True)
class SlurmJob:
    """One job array of ``workers`` tasks, each a ``gan-search worker`` on ``study``."""

    study: str
    storage: str
    workers: int
    artifacts: str | None = None
    gpus_per_worker: int = 0
    cpus_per_worker: int = 1
    partition: str | None = None
    time: str | None = None
    max_requeues: int = 10  # times a task requeues itself at its time limit (the study outlives --time)
    sbatch_args: tuple[str, ...] = ()
    setup: tuple[str, ...] = ()  # shell lines run before the worker (module load, conda activate, ...)
    log_dir: str = "runs/slurm"
    workdir: str = field(default_factory=os.getcwd)
    command: str = field(default_factory=lambda: _gan_search_command())

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1 array tasks, but got workers={self.workers}.")
        if not 0 <= self.gpus_per_worker <= 1:
            raise ConfigError(f"gpus_per_worker must be 0 or 1 (a worker trains on one device; run more workers "
                              f"for more GPUs), but got gpus_per_worker={self.gpus_per_worker}.")
        if self.max_requeues < 0:
            raise ConfigError(f"max_requeues must be >= 0, but got max_requeues={self.max_requeues}.")
        if self.cpus_per_worker < 1:
            raise ConfigError(f"cpus_per_worker must be >= 1, but got cpus_per_worker={self.cpus_per_worker}.")
        if self.time is not None and not _TIME.match(self.time):
            raise ConfigError(f"time must be a Slurm time limit (minutes, H:M:S or D-H:M:S), but got time={self.time!r}.")
        if self.partition is not None and not re.fullmatch(r"[\w.,-]+", self.partition):
            raise ConfigError(f"partition must be a Slurm partition name, but got partition={self.partition!r}.")
        for arg in self.sbatch_args:
            if not arg.startswith("--") or "\n" in arg:
                raise ConfigError(f"sbatch_args must be long options such as --qos=high, but got {arg!r}.")

    @property
    def stop_warning(self) -> int:
        """Seconds before the time limit at which SIGUSR1 warns the worker: ``STOP_WARNING_S``, at most a quarter of
        the limit (Slurm may send it up to a minute early: a short limit keeps some time to train)."""
        limit = time_seconds(self.time) if self.time else None
        return STOP_WARNING_S if limit is None else max(1, min(STOP_WARNING_S, limit // 4))

    @property
    def password_in_url(self) -> bool:
        return redact(self.storage) != self.storage

    def script(self) -> str:
        """The job script: ``#SBATCH`` lines, the user's setup lines, then the worker."""
        q = shlex.quote
        lines = [
            "#!/bin/bash",
            f"# gan-search workers of study {self.study!r} as one Slurm job array (written by `gan-search slurm`).",
            "# Edit it for your cluster (modules, conda, GPUs) and submit it again with: sbatch THIS_FILE",
            "# Each array task is one worker: it claims trials until the study's plan is done. Stopped (scancel,",
            "# preemption, requeue, the time limit), it hands its running trial back, and the retry resumes from",
            "# the trial's last checkpoint on any worker.",
            f"#SBATCH --job-name={q('gan-search-' + self.study)}",
            f"#SBATCH --array=0-{self.workers - 1}",
            f"#SBATCH --output={q(self.log_dir + '/%x-%A_%a.out')}",
            "#SBATCH --open-mode=append",
            "#SBATCH --requeue",
            f"#SBATCH --signal=B:USR1@{self.stop_warning}",
            f"#SBATCH --chdir={q(self.workdir)}",
            "#SBATCH --ntasks=1",
            f"#SBATCH --cpus-per-task={self.cpus_per_worker}",
        ]
        if self.gpus_per_worker:
            lines.append(f"#SBATCH --gres=gpu:{self.gpus_per_worker}")
        if self.partition:
            lines.append(f"#SBATCH --partition={self.partition}")
        if self.time:
            lines.append(f"#SBATCH --time={self.time}")
        lines += [f"#SBATCH {arg}" for arg in self.sbatch_args]
        lines += ["set -euo pipefail", "# your cluster's environment (module load ..., conda activate ...):"]
        lines += list(self.setup)
        if self.password_in_url:
            lines += ["# the storage URL holds a password, so it is not written here: sbatch passes it from the",
                      "# environment it was called in ($GAN_SEARCH_STORAGE)",
                      ': "${GAN_SEARCH_STORAGE:?set GAN_SEARCH_STORAGE to the study storage URL}"']
        else:
            lines.append(f"export GAN_SEARCH_STORAGE=${{GAN_SEARCH_STORAGE:-{q(self.storage)}}}")
        lines.append('export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"  # torch threads: the CPUs of this task')
        lines += ["# times this task requeues itself when its time limit is near (SIGUSR1); then it ends",
                  f"export {MAX_REQUEUES_ENV}={self.max_requeues}"]
        worker = [self.command, "worker", q(self.study)]
        if self.artifacts:
            worker += ["--artifacts", q(self.artifacts)]
        lines.append("exec " + " ".join(worker))  # exec: the worker is the batch shell, so it gets Slurm's SIGTERM
        return "\n".join(lines) + "\n"


def time_seconds(limit: str) -> int:
    """Slurm's ``--time`` in seconds (M, M:S, H:M:S, D-H, D-H:M, D-H:M:S)."""
    days, _, rest = limit.rpartition("-") if "-" in limit else ("0", "", limit)
    parts = [int(p) for p in rest.split(":")]
    if "-" in limit:  # D-H[:M[:S]]
        h, m, sec = (parts + [0, 0])[:3]
    elif len(parts) == 1:
        h, m, sec = 0, parts[0], 0
    elif len(parts) == 2:
        h, m, sec = 0, parts[0], parts[1]
    else:
        h, m, sec = parts
    return ((int(days) * 24 + h) * 60 + m) * 60 + sec


def requeue_task() -> bool:
    """Put this Slurm task back in the queue (its time limit is near), unless it has been requeued
    ``$GAN_SEARCH_MAX_REQUEUES`` times already; whether it was. Outside Slurm: False."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    job = f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")
    if not job:
        return False
    restarts = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    limit = int(os.environ.get(MAX_REQUEUES_ENV) or 0)
    if restarts >= limit:
        log.warning("slurm task %s: time limit, requeued %d of %d times already: it ends here", job, restarts, limit)
        return False
    proc = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
    if proc.returncode != 0:
        log.warning("slurm task %s: scontrol requeue failed: %s", job, proc.stderr.strip()[-300:])
        return False
    log.warning("slurm task %s: time limit near; requeued (%d of %d)", job, restarts + 1, limit)
    return True


def _gan_search_command() -> str:
    """This installation's ``gan-search`` (the one beside this Python), so that the job runs the same code."""
    beside = Path(sys.executable).with_name("gan-search")
    found = str(beside) if beside.exists() else shutil.which("gan-search")
    return shlex.quote(found) if found else f"{shlex.quote(sys.executable)} -m search.cli"


def check_sbatch() -> str:
    """``sbatch``'s path, or a one-line error (nothing is written when Slurm is not there)."""
    found = shutil.which("sbatch")
    if found is None:
        raise ConfigError("slurm: sbatch not found on PATH (run gan-search slurm on a Slurm login node, or write the "
                          "job script with --script-only).")
    return found


def script_path(study_file: str | os.PathLike[str], study: str) -> Path:
    """The job script beside the study file: ``studies/NAME.slurm.sh``."""
    return Path(study_file).with_name(f"{study}.slurm.sh")


def write_script(job: SlurmJob, path: Path) -> Path:
    path.write_text(job.script())
    path.chmod(0o755)
    Path(job.workdir, job.log_dir).mkdir(parents=True, exist_ok=True)  # Slurm does not create --output's folder
    return path


def submit(job: SlurmJob, path: Path) -> str:
    """``sbatch --parsable`` the script; the array's job id. The storage URL reaches the job through the
    environment (never through the command line, where ``ps`` would show a password)."""
    env = {**os.environ, "GAN_SEARCH_STORAGE": job.storage}
    proc = subprocess.run([check_sbatch(), "--parsable", str(path)], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise GanSearchError(f"sbatch refused {path}: {proc.stderr.strip().splitlines()[-1] if proc.stderr else ''}")
    job_id = proc.stdout.strip().split(";")[0]
    log.info("submitted job array %s: %d workers of study %s (%s)", job_id, job.workers, job.study, path)
    return job_id


def worker_name() -> str:
    """Who runs a trial, for ``status``: the Slurm array task (job id_task id) where there is one, else host:pid."""
    import socket

    host = socket.gethostname().split(".")[0]
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"slurm {array}_{task}@{host}"
    if job := os.environ.get("SLURM_JOB_ID"):
        return f"slurm {job}@{host}"
    return f"{host}:{os.getpid()}"


__all__ = ["SlurmJob", "check_sbatch", "requeue_task", "script_path", "submit", "time_seconds", "worker_name",
           "write_script"]
