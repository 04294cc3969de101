"""Workers as a Slurm job array: the job script, bad input, and a real single-node Slurm (scripts/slurm-single-node.sh)
running 4 workers on PostgreSQL with one task cancelled and one requeued mid-trial."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from search import attrs
from search.execution.slurm import SlurmJob, worker_name
from tests.search.conftest import small_study, write_study
from tests.search.execution.test_distributed import assert_exact

ROOT = Path(__file__).resolve().parents[3]
CLI = [sys.executable, "-m", "search.cli"]


def _cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def test_job_script_runs_one_worker_per_array_task_and_hands_trials_back() -> None:
    job = SlurmJob(study="s", storage="postgresql+psycopg://u@db:5432/x", workers=4, artifacts="/shared/art",
                   gpus_per_worker=1, cpus_per_worker=8, partition="gpu", time="2:00:00",
                   sbatch_args=("--qos=high",), setup=("module load cuda",), workdir="/home/u/proj", command="gan-search")
    script = job.script()
    for line in ("#SBATCH --array=0-3", "#SBATCH --requeue", "#SBATCH --signal=B:USR1@120", "export GAN_SEARCH_MAX_REQUEUES=10",
                 "#SBATCH --gres=gpu:1",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --partition=gpu", "#SBATCH --time=2:00:00", "#SBATCH --qos=high",
                 "#SBATCH --chdir=/home/u/proj", "module load cuda",
                 "export GAN_SEARCH_STORAGE=${GAN_SEARCH_STORAGE:-postgresql+psycopg://u@db:5432/x}",
                 "exec gan-search worker s --artifacts /shared/art"):
        assert line in script.splitlines(), line
    assert script.index("module load cuda") < script.index("exec gan-search")  # the setup runs before the worker
    assert "--gres" not in SlurmJob(study="s", storage="sqlite:///x.db", workers=1).script()


def test_job_script_never_holds_the_database_password() -> None:
    script = SlurmJob(study="s", storage="postgresql+psycopg://u:s3cret@db:5432/x", workers=2).script()
    assert "s3cret" not in script
    assert '"${GAN_SEARCH_STORAGE:?' in script  # read from the environment sbatch passes on


@pytest.mark.parametrize(("args", "message"), [
    (["--workers", "0"], "workers must be >= 1"),
    (["--workers", "2", "--time", "5h"], "time must be a Slurm time limit"),
    (["--workers", "2", "--sbatch-arg", "qos=high"], "sbatch_args must be long options"),
    (["--workers", "2", "--partition", "gpu; rm -rf /"], "partition must be a Slurm partition name"),
    (["--workers", "2", "--gpus-per-worker", "2"], "gpus_per_worker must be 0 or 1"),
    (["--workers", "2", "--max-requeues", "-1"], "max_requeues must be >= 0"),
])
def test_bad_job_options_exit_2_and_write_nothing(tmp_path: Path, args: list[str], message: str) -> None:
    path = write_study(tmp_path, small_study("bad", tmp_path))
    proc = _cli("slurm", str(path), *args, "--script-only", cwd=tmp_path)
    assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]  # no database, no script, no folder


@pytest.mark.parametrize("name", ["team a/run 1", "-dash", "x" * 101])
@pytest.mark.parametrize("command", ["slurm", "run"])
def test_a_bad_study_name_exits_2_before_anything_is_written(tmp_path: Path, name: str, command: str) -> None:
    """A study name names files, Slurm jobs and folders: one rule, checked in every command before the database."""
    raw = small_study("bad", tmp_path)
    raw["name"] = name
    path = tmp_path / "bad.yaml"
    path.write_text(__import__("yaml").safe_dump(raw))
    args = ["--workers", "2", "--script-only"] if command == "slurm" else []
    proc = _cli(command, str(path), *args, cwd=tmp_path)
    assert proc.returncode == 2 and "name: must be a study name of letters" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


@pytest.mark.parametrize("command", [["worker", "a/b"], ["status", "a b"], ["export", "a/b", "--out", "x"]])
def test_commands_taking_a_study_name_check_it_first(tmp_path: Path, command: list[str]) -> None:
    proc = _cli(*command, "--storage", f"sqlite:///{tmp_path / 'none.db'}", cwd=tmp_path)
    assert proc.returncode == 2 and "study name must be a study name" in proc.stderr, proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_every_value_in_the_job_script_is_quoted() -> None:
    script = SlurmJob(study="s", storage="sqlite:///x.db", workers=1, workdir="/home/u/my proj",
                      log_dir="runs/slurm logs", artifacts="/a b").script()
    assert "#SBATCH --chdir='/home/u/my proj'" in script
    assert "#SBATCH --output='runs/slurm logs/%x-%A_%a.out'" in script and "--artifacts '/a b'" in script


@pytest.mark.parametrize(("limit", "seconds", "warning"), [("1", 60, 15), ("2:00:00", 7200, 120), ("1-0", 86400, 120),
                                                           ("0:90", 90, 22), ("1-2:3", 93780, 120)])
def test_the_time_limit_warning_fits_in_the_limit(limit: str, seconds: int, warning: int) -> None:
    from search.execution.slurm import time_seconds

    assert time_seconds(limit) == seconds
    job = SlurmJob(study="s", storage="sqlite:///x.db", workers=1, time=limit)
    assert job.stop_warning == warning and f"#SBATCH --signal=B:USR1@{warning}" in job.script()


def test_without_sbatch_nothing_is_written(tmp_path: Path) -> None:
    path = write_study(tmp_path, small_study("nosbatch", tmp_path))
    bare = tmp_path / "bin"
    bare.mkdir()
    proc = _cli("slurm", str(path), "--workers", "2", cwd=tmp_path, env={"PATH": str(bare)})
    assert proc.returncode == 2 and "sbatch not found on PATH" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin", "nosbatch.yaml"]


def test_script_only_creates_the_study_and_writes_the_script_beside_it(tmp_path: Path) -> None:
    path = write_study(tmp_path, small_study("only", tmp_path))
    proc = _cli("slurm", str(path), "--workers", "3", "--script-only", "--setup", "source ~/venv/bin/activate",
                cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["job_id"] is None and out["script"] == str(tmp_path / "only.slurm.sh")
    script = (tmp_path / "only.slurm.sh").read_text()
    assert "#SBATCH --array=0-2" in script and "source ~/venv/bin/activate" in script
    assert os.access(tmp_path / "only.slurm.sh", os.X_OK)
    assert len(optuna.load_study(study_name="only", storage=f"sqlite:///{tmp_path / 'study.db'}").trials) == 0


def test_worker_name_is_the_slurm_array_task(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "41")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert worker_name().startswith("slurm 41_3@")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID")
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert worker_name().endswith(f":{os.getpid()}")


# ---------------------------------------------------------------- a real Slurm
@pytest.fixture(scope="session")
def slurm() -> Iterator[None]:
    """The single-node Slurm of scripts/slurm-single-node.sh (started here if it is not up; needs root or sudo)."""
    if shutil.which("sbatch") is None:
        pytest.skip("Slurm is not installed (Debian: slurm-wlm munge; CI starts it with scripts/slurm-single-node.sh)")
    proc = subprocess.run([str(ROOT / "scripts" / "slurm-single-node.sh")], capture_output=True, text=True, timeout=180)
    if proc.returncode != 0:
        pytest.skip(f"single-node Slurm could not start: {proc.stderr.strip()[-300:]}")
    yield


def _state(task: str) -> str:
    return subprocess.run(["squeue", "-h", "-j", task, "-o", "%T"], capture_output=True, text=True).stdout.strip()


def _squeue(job: str) -> list[str]:
    """The job's tasks still queued or running (a failed query, such as slurmctld busy, counts as still there)."""
    proc = subprocess.run(["squeue", "-h", "-j", job, "-o", "%i %T"], capture_output=True, text=True)
    if proc.returncode != 0:
        return ["?"]
    return proc.stdout.split()[::2]


@pytest.mark.slow
def test_slurm_array_runs_the_study_and_a_cancelled_task_loses_nothing(tmp_path: Path, postgres_url: str,
                                                                        slurm: None) -> None:
    """4 array tasks on PostgreSQL; one is scancel-ed mid-trial and another requeued (scontrol requeue): each hands
    its trial back at once (SIGTERM), the retry resumes from the trial's checkpoint; every trial completes, none is
    lost or run twice."""
    study = small_study("slurm4", tmp_path, budget={"n_trials": 8, "trial_images": 6400, "eval_every_images": 640})
    study["storage"]["url"] = postgres_url
    path = write_study(tmp_path, study)
    proc = _cli("slurm", str(path), "--workers", "4", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    job = out["job_id"]
    assert job
    handle = optuna.load_study(study_name="slurm4", storage=postgres_url)
    cancelled = _stop_mid_trial(handle, job, ["scancel"])
    requeued = _stop_mid_trial(handle, job, ["scontrol", "requeue"], besides=cancelled[1])  # comes back, works on
    deadline = time.time() + 60  # Slurm holds a requeued task for 2 minutes once it is back in the queue: not here
    while time.time() < deadline and _state(requeued[1]) != "PENDING":
        time.sleep(0.2)
    subprocess.run(["scontrol", "update", f"JobId={requeued[1]}", "StartTime=now"], check=True)
    deadline = time.time() + 300
    while time.time() < deadline and _squeue(job):
        time.sleep(1)
    assert not _squeue(job), "the job array did not finish"
    trials = assert_exact(postgres_url, "slurm4", 8)
    for victim, _ in (cancelled, requeued):
        dead = trials[victim]
        assert dead.state == TrialState.FAIL and "interrupted" in dead.user_attrs["fail_reason"]
        retry = next(t for t in trials if t.system_attrs.get("failed_trial") == victim)
        assert retry.state == TrialState.COMPLETE and retry.user_attrs["resumed_from_trial"] == victim
    workers = {t.user_attrs["worker"].split("@")[0] for t in trials}
    assert workers <= {f"slurm {job}_{i}" for i in range(4)} and len(workers) >= 2
    logs = {p.name: p.read_text() for p in (tmp_path / "runs" / "slurm").glob("*.out")}
    assert len(logs) == 4
    for _, task in (cancelled, requeued):
        assert "handing the running trial back" in logs[f"gan-search-slurm4-{task}.out"]
    assert logs[f"gan-search-slurm4-{requeued[1]}.out"].count("joined study") == 2  # the requeued task ran again


def _stop_mid_trial(handle: optuna.Study, job: str, command: list[str], besides: str = "") -> tuple[int, str]:
    """Stop the array task running a trial past its second evaluation (it has a checkpoint): (trial, task)."""
    deadline = time.time() + 240
    while time.time() < deadline:
        for t in handle.get_trials(states=(TrialState.RUNNING,)):
            task = t.user_attrs.get("worker", "").split(" ")[-1].split("@")[0]  # "slurm JOB_TASK@host"
            if len(t.user_attrs.get("loss_history", [])) >= 2 and task.startswith(f"{job}_") and task != besides:
                subprocess.run([*command, task], check=True)
                return t.number, task
        time.sleep(0.3)
    raise AssertionError(f"no trial reached its second evaluation under Slurm for {command}")


@pytest.mark.slow
def test_a_time_limit_requeues_the_tasks_and_the_study_outlives_it(tmp_path: Path, postgres_url: str,
                                                                   slurm: None) -> None:
    """4 array tasks under a 2-minute --time and trials of 2-3 minutes on these shared cores (longer than the 30-90 s
    until the first warning: SIGUSR1 30 s before the limit, or up to a minute earlier): at each warning a task hands
    its trial back and requeues itself.
    With max_retry=0 (hand-backs must not use up retries) every trial completes once, none is lost or run twice,
    and retries resume."""
    study = small_study("slurmtl", tmp_path, budget={"n_trials": 4, "trial_images": 192000, "eval_every_images": 9600})
    study["storage"].update(url=postgres_url, max_retry=0, grace_period=20)
    path = write_study(tmp_path, study)
    proc = _cli("slurm", str(path), "--workers", "4", "--time", "2", "--max-requeues", "8", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    job = json.loads(proc.stdout)["job_id"]
    deadline = time.time() + 600
    while time.time() < deadline and _squeue(job):
        # Slurm holds a requeued task about 2 minutes (BeginTime) before it may start again: release it now
        out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%i %T %r"], capture_output=True, text=True).stdout
        for task, state, reason in (line.split()[:3] for line in out.splitlines() if len(line.split()) >= 3):
            if state == "PENDING" and reason == "BeginTime":
                subprocess.run(["scontrol", "update", f"JobId={task}", "StartTime=now"], capture_output=True)
        time.sleep(1)
    assert not _squeue(job), "the job array did not finish"
    trials = assert_exact(postgres_url, "slurmtl", 4)
    handed_back = [t for t in trials if t.state == TrialState.FAIL]
    assert handed_back and all("interrupted" in t.user_attrs["fail_reason"] for t in handed_back)
    assert any(attrs.RESUMED_FROM in t.user_attrs for t in trials if t.state == TrialState.COMPLETE)
    logs = "".join(p.read_text() for p in (tmp_path / "runs" / "slurm").glob("*.out"))
    assert "SIGUSR1: handing the running trial back" in logs and "requeued (1 of 8)" in logs
    assert "DUE TO TIME LIMIT" not in logs  # no task reached its limit: each requeued itself before it
