"""Replay workers: the real service path without training, at 32 workers on the real PostgreSQL, SIGKILLs included."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from search import StudySpec, attrs, create_or_load_study
from search.execution.replay import Curves, lost_and_duplicated
from search.strategy.schedulers import scheduler_for
from tests.search.conftest import small_study, write_study

ROOT = Path(__file__).resolve().parents[3]
CLI = [sys.executable, "-m", "search.cli"]


def write_curves(tmp: Path) -> Path:
    """Recorded curves of the small study's space: a good rate and loss, a bad one, and one in between."""
    rows = [{"params": {"lr_g": 3e-4, "loss": "bce"}, "curve": {"320": 40.0, "640": 20.0}},
            {"params": {"lr_g": 9e-4, "loss": "hinge"}, "curve": {"320": 90.0, "640": 80.0}},
            {"params": {"lr_g": 1e-4, "loss": "hinge"}, "curve": {"320": 60.0}}]  # a pruned recording
    path = tmp / "curves.json"
    path.write_text(json.dumps(rows))
    return path


def test_curves_are_looked_up_by_the_nearest_parameters(tmp_path: Path) -> None:
    spec = StudySpec.from_dict(small_study("c", tmp_path))
    curves = Curves.load(write_curves(tmp_path))
    near = curves.nearest({"lr_g": 3.3e-4, "loss": "bce"}, spec.space)
    assert near.params["lr_g"] == 3e-4 and curves.value_at(near, 0.5) == 40.0 and curves.value_at(near, 1.0) == 20.0
    pruned = curves.nearest({"lr_g": 1.1e-4, "loss": "hinge"}, spec.space)
    assert curves.value_at(pruned, 1.0) == 60.0  # a recording that stopped early holds its last value


def test_a_replay_worker_never_imports_torch(tmp_path: Path) -> None:
    raw = small_study("notorch", tmp_path, budget={"n_trials": 3, "trial_images": 640, "eval_every_images": 320})
    spec = StudySpec.from_file(write_study(tmp_path, raw))
    scheduler_for(spec).plan(create_or_load_study(spec), spec.n_trials)
    code = ("import sys, json; from search.execution.replay import Curves, Replay; "
            "from search.execution.launch import replay_workers; "
            f"r = replay_workers('notorch', {spec.storage!r}, Replay(Curves.load({str(write_curves(tmp_path))!r}), 0.2), 2); "
            "print(json.dumps({'torch': 'torch' in sys.modules, 'trials': sum(x.trials for x in r)}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"torch": False, "trials": 3}
    study = optuna.load_study(study_name="notorch", storage=spec.storage)
    for t in study.trials:  # what a real trial records
        assert t.state == TrialState.COMPLETE and t.user_attrs[attrs.CONFIG]["lr_g"] == t.params["lr_g"]
        assert [h["mark"] for h in t.user_attrs[attrs.LOSSES]] == [320, 640] == sorted(t.intermediate_values)


def test_recorded_proposals_replay_the_recorded_parameters_in_order(tmp_path: Path) -> None:
    """Zero-CPU proposals for cluster benchmarks: trial n takes recorded trial n's parameters through the real
    claim/suggest/report path, and every worker's lock hold is reported."""
    from search.execution.launch import replay_workers
    from search.execution.replay import Replay

    curves = write_curves(tmp_path)
    raw = small_study("recorded", tmp_path, budget={"n_trials": 4, "trial_images": 640, "eval_every_images": 320},
                      sampler={"name": "search.execution.replay:recorded_proposals", "args": {"curves": str(curves)}})
    spec = StudySpec.from_file(write_study(tmp_path, raw))
    scheduler_for(spec).plan(create_or_load_study(spec), spec.n_trials)
    reports = replay_workers("recorded", spec.storage, Replay(Curves.load(curves), 0.1), 2)
    recorded = [row["params"] for row in json.loads(curves.read_text())]
    study = optuna.load_study(study_name="recorded", storage=spec.storage)
    assert [t.params for t in study.trials] == [recorded[n % 3] for n in range(4)]
    holds = [h for r in reports for h in r.lock_seconds]
    assert len(holds) == sum(len(r.claim_seconds) for r in reports) and all(0 <= h < 5 for h in holds)


def _proxy(url: str) -> tuple[subprocess.Popen[str], str]:
    """``gan-search proxy`` serving ``url``; its grpc:// URL once it listens."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([*CLI, "proxy", "--storage", url, "--port", str(port), "--threads", "8"], cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return server, f"grpc://127.0.0.1:{port}"
        assert server.poll() is None, server.stderr.read() if server.stderr else ""
        time.sleep(0.2)
    raise AssertionError("the proxy did not start")


@pytest.mark.slow
@pytest.mark.parametrize("path", ["direct", "proxy"])
def test_32_replay_workers_lose_and_duplicate_nothing_when_some_are_killed(tmp_path: Path, postgres_url: str,
                                                                           path: str) -> None:
    """32 workers (8 processes x 4 threads) on PostgreSQL, directly or through `gan-search proxy` (its heartbeats
    and lock-free claims); one process is SIGKILLed mid-trial: its trials are retried, nothing lost or doubled."""
    raw = small_study("r32", tmp_path, budget={"n_trials": 64, "trial_images": 1280, "eval_every_images": 320},
                      sampler={"name": "tpe", "seed": 0}, pruner={"name": "median", "args": {"n_startup_trials": 8}})
    # a grace period well above the heartbeat: on 2 busy cores a live worker's beat can be seconds late, and a
    # trial failed as stale while alive would be retried too (the worker then drops it: search/execution/worker.py)
    raw["storage"].update(url=postgres_url, grace_period=10)
    spec = StudySpec.from_file(write_study(tmp_path, raw))
    scheduler_for(spec).plan(create_or_load_study(spec), spec.n_trials)
    curves = write_curves(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server, url = _proxy(postgres_url) if path == "proxy" else (None, postgres_url)
    procs = [subprocess.Popen([*CLI, "replay", "r32", "--storage", url, "--curves", str(curves), "--threads", "4",
                               "--trial-seconds", "4", "--first", str(4 * i)], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(8)]
    study = optuna.load_study(study_name="r32", storage=postgres_url)
    deadline, victim, running = time.time() + 120, None, []
    while time.time() < deadline and victim is None:  # a process whose trials are mid-way, with checkpoints
        running = [t for t in study.get_trials(states=(TrialState.RUNNING,)) if t.user_attrs.get(attrs.CHECKPOINT)]
        pids = {t.user_attrs[attrs.DEVICE].rpartition(":")[2] for t in running}
        victim = next((p for p in procs if str(p.pid) in pids), None)
        time.sleep(0.1)
    assert victim is not None, [p.poll() for p in procs]
    victim.send_signal(signal.SIGKILL)  # 4 of the 32 workers (12.5%)
    running = study.get_trials(states=(TrialState.RUNNING,))
    killed = {t.number for t in running if t.user_attrs.get(attrs.DEVICE, "").endswith(f":{victim.pid}")}
    assert killed
    for p in procs:
        if p is victim:
            continue
        try:
            out, err = p.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            raise AssertionError(f"a replay worker hung: {err[-4000:]}") from None
        assert p.returncode == 0, err[-2000:]
    if server is not None:
        server.terminate()
        server.wait()
    faults = lost_and_duplicated(study)
    assert faults == {**faults, "lost": 0, "duplicated": 0, "running": 0, "waiting": 0, "ended": 64}
    trials = study.get_trials()
    retries = [t for t in trials if t.system_attrs.get(attrs.FAILED_TRIAL) is not None]
    assert retries and killed <= {t.system_attrs[attrs.FAILED_TRIAL] for t in retries}
    for number in {t.system_attrs[attrs.FAILED_TRIAL] for t in retries}:  # only the victim's trials were retried
        device = trials[number].user_attrs.get(attrs.DEVICE)  # (one it claimed may not have recorded its device yet)
        assert device is None or device.endswith(f":{victim.pid}"), (number, device)
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in retries)
    assert any(attrs.RESUMED_FROM in t.user_attrs for t in retries)  # from the dead trial's checkpoint artifact
    numbers = [t.number for t in trials]
    assert len(set(numbers)) == len(numbers)
    assert not list((tmp_path / "artifacts").glob("checkpoint-*"))  # every slot removed when its trial ended
