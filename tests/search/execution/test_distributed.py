"""Many workers on the real PostgreSQL and MariaDB servers: exact trial counts, SIGKILL recovery, many connections."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from search import StudySpec, create_or_load_study, plan, run_workers
from search.store.storage import redact
from tests.search.conftest import small_study, write_study

CLI = [sys.executable, "-m", "search.cli"]


def make_study(tmp: Path, url: str, name: str, **overrides: object) -> StudySpec:
    study = small_study(name, tmp, **overrides)
    study["storage"]["url"] = url
    spec = StudySpec.from_file(write_study(tmp, study))
    plan(create_or_load_study(spec), spec.n_trials)
    return spec


def assert_exact(url: str, name: str, n: int) -> list[optuna.trial.FrozenTrial]:
    trials = optuna.load_study(study_name=name, storage=url).get_trials()
    numbers = [t.number for t in trials]
    assert len(set(numbers)) == len(numbers)
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == n
    return trials


@pytest.mark.slow
@pytest.mark.parametrize("db", ["postgres", "mariadb"])
def test_four_workers_run_exactly_n_trials(tmp_path: Path, db: str, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("postgres_url" if db == "postgres" else "mysql_url")
    spec = make_study(tmp_path, url, f"four-{db}", budget={"n_trials": 10, "trial_images": 320})
    reports = run_workers(spec.name, url, 4)
    assert sum(r.trials for r in reports) == 10 and len(reports) == 4
    trials = assert_exact(url, spec.name, 10)
    assert [t.number for t in trials] == list(range(10))


@pytest.mark.slow
def test_sixteen_workers_share_postgres_without_connection_errors(tmp_path: Path, postgres_url: str) -> None:
    spec = make_study(tmp_path, postgres_url, "sixteen", budget={"n_trials": 32, "trial_images": 64,
                                                                 "eval_every_images": 64})
    reports = run_workers(spec.name, postgres_url, 16)
    assert sum(r.trials for r in reports) == 32
    assert_exact(postgres_url, spec.name, 32)


@pytest.mark.slow
def test_killed_worker_trial_is_retried_from_its_checkpoint(tmp_path: Path, postgres_url: str) -> None:
    make_study(tmp_path, postgres_url, "kill", budget={"n_trials": 2, "trial_images": 16000, "eval_every_images": 1600})
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    victim = subprocess.Popen([*CLI, "worker", "kill", "--storage", postgres_url], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    study = optuna.load_study(study_name="kill", storage=postgres_url)
    deadline = time.time() + 120
    killed_number = None
    while time.time() < deadline and killed_number is None:
        for t in study.get_trials(states=(TrialState.RUNNING,)):
            if len(t.user_attrs.get("loss_history", [])) >= 2:  # mid-trial, with a checkpoint artifact
                killed_number = t.number
        time.sleep(0.2)
    assert killed_number is not None, victim.stderr.read().decode() if victim.poll() is not None else "no progress"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    marks_before = [h["mark"] for h in study.get_trials()[killed_number].user_attrs["loss_history"]]

    run_workers("kill", postgres_url, 1)  # waits out the grace period, fails the stale trial, retries it
    trials = assert_exact(postgres_url, "kill", 2)
    dead = trials[killed_number]
    assert dead.state == TrialState.FAIL
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == killed_number)
    assert retry.state == TrialState.COMPLETE and retry.user_attrs["resumed_from_trial"] == killed_number
    marks = [h["mark"] for h in retry.user_attrs["loss_history"]]
    assert marks[: len(marks_before)] == marks_before  # inherited, then continued
    assert marks == list(range(1600, 16001, 1600))  # the images-seen counter did not restart from zero
    assert sorted(retry.intermediate_values) == marks
    assert not list((tmp_path / "artifacts").glob("checkpoint-*"))  # resume checkpoints are removed when done


@pytest.mark.slow
def test_dask_backend_on_a_local_cluster(tmp_path: Path, postgres_url: str) -> None:
    spec = make_study(tmp_path, postgres_url, "dask", budget={"n_trials": 4})
    reports = run_workers(spec.name, postgres_url, 2, backend="dask")
    assert sum(r.trials for r in reports) == 4
    assert_exact(postgres_url, spec.name, 4)


def test_password_is_never_printed() -> None:
    assert redact("postgresql+psycopg://alice:s3cret@db:5432/x") == "postgresql+psycopg://alice:***@db:5432/x"
    from typer.testing import CliRunner

    from search.cli import app

    result = CliRunner().invoke(app, ["status", "x", "--storage", "postgresql+psycopg://alice:s3cret@127.0.0.1:1/x"])
    assert result.exit_code != 0 and "s3cret" not in result.output


@pytest.mark.slow
def test_ctrl_c_stops_a_worker_cleanly_and_requeues_its_trial(tmp_path: Path, postgres_url: str) -> None:
    make_study(tmp_path, postgres_url, "sigint", budget={"n_trials": 1, "trial_images": 48000, "eval_every_images": 1600})
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    # a shell's background job (`pytest ... &`) inherits SIGINT ignored, and Python keeps an ignored SIGINT:
    # the worker gets the disposition a terminal's Ctrl-C meets
    worker = subprocess.Popen([*CLI, "worker", "sigint", "--storage", postgres_url], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    study = optuna.load_study(study_name="sigint", storage=postgres_url)
    deadline = time.time() + 120
    while time.time() < deadline:
        running = study.get_trials(states=(TrialState.RUNNING,))
        if running and len(running[0].user_attrs.get("loss_history", [])) >= 2:
            break
        time.sleep(0.2)
    worker.send_signal(signal.SIGINT)
    _, err = worker.communicate(timeout=60)
    assert worker.returncode == 130 and "error: interrupted" in err
    trials = study.get_trials()
    assert trials[0].state == TrialState.FAIL and "interrupted" in trials[0].user_attrs["fail_reason"]
    assert trials[1].state == TrialState.WAITING and trials[1].system_attrs["failed_trial"] == 0
    run_workers("sigint", postgres_url, 1)
    finished = assert_exact(postgres_url, "sigint", 1)
    assert finished[1].user_attrs["resumed_from_trial"] == 0


def test_placement_splits_cpu_cores_between_workers() -> None:
    from search.execution.launch import placement

    places = placement(4)
    assert len(places) == 4
    if places[0][0] == "cpu":
        assert {p[1] for p in places} == {max(1, (os.cpu_count() or 1) // 4)}
    else:  # on a GPU machine: round-robin over the visible devices
        assert places[0][0] == "cuda:0"
