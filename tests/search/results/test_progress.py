"""The study-level progress view: a bar on a terminal (a real pseudo-terminal), plain lines elsewhere."""

from __future__ import annotations

import io
import os
import pty
import re
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from search import api
from search.results.progress import Snapshot, render, snapshot, watch
from tests.search.conftest import small_study, write_study

ROOT = Path(__file__).resolve().parents[3]
BAR = re.compile(r"\[[#.]{20}\] (\d+)/(\d+) trials done \| (\d+) pruned \| (\d+) running \| best ")


def _env() -> dict[str, str]:
    return {**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}


@pytest.mark.slow
def test_run_on_a_terminal_draws_one_progress_bar(tmp_path: Path) -> None:
    study_file = write_study(tmp_path, small_study("bar", tmp_path, budget={"n_trials": 4}))
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "search.cli", "run", str(study_file)], cwd=ROOT, env=_env(),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: the process closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    stdout = proc.stdout.read().decode() if proc.stdout else ""
    assert proc.wait(timeout=60) == 0
    term = b"".join(chunks).decode(errors="replace")
    bars = BAR.findall(term)
    assert bars, term[-2000:]
    assert "\r\x1b[K[" in term  # redrawn in place, not one line per update
    assert bars[-1][:2] == ("4", "4") and bars[-1][3] == "0"  # ends at 4/4 done, none running
    done = [int(b[0]) for b in bars]
    assert done == sorted(done)  # the bar only moves forward
    assert "progress:" not in term  # no plain progress lines on a terminal
    assert "4/4 trials done" in stdout  # the summary table still goes to stdout


@pytest.mark.slow
def test_run_off_a_terminal_logs_plain_lines(tmp_path: Path) -> None:
    study_file = write_study(tmp_path, small_study("lines", tmp_path))
    proc = subprocess.run([sys.executable, "-m", "search.cli", "run", str(study_file)], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=120, check=True)
    lines = [line for line in proc.stderr.splitlines() if "progress:" in line]
    assert lines and lines[-1].split("progress: ")[-1].startswith("3/3 trials done | 0 pruned | 0 running | best ")
    assert "\r" not in proc.stderr and "\x1b[" not in proc.stderr and "[####" not in proc.stderr


def test_render_and_eta() -> None:
    s = Snapshot(planned=20, done=5, complete=3, pruned=2, failed=0, running=2, best_value=12.345, best_trial=4,
                 elapsed=75.0, eta=225.0)
    assert render(s) == ("[#####...............] 5/20 trials done | 2 pruned | 2 running | best 12.35 (trial 4) | "
                         "01:15 elapsed, ~03:45 left")
    assert render(s, bar=False).startswith("5/20 trials done")
    assert not s.finished


@pytest.mark.slow
def test_status_watch_follows_a_study_running_elsewhere(tmp_path: Path) -> None:
    spec = api.load_spec(write_study(tmp_path, small_study("watched", tmp_path, budget={"n_trials": 3})))
    api.create(spec)
    worker = subprocess.Popen([sys.executable, "-m", "search.cli", "worker", "watched", "--storage", spec.storage],
                              cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        study = optuna.load_study(study_name="watched", storage=spec.storage)
        t0 = time.monotonic()
        assert snapshot(study, t0).done == 0
        out = io.StringIO()
        final = watch(study, out, interval=0.2)  # returns once the study has nothing left to run
        assert worker.wait(timeout=60) == 0
    finally:
        worker.kill()
    assert final.finished and final.done == 3
    lines = out.getvalue().splitlines()
    assert lines[-1].startswith("3/3 trials done | 0 pruned | 0 running | best ")
    assert len(lines) == len(set(lines))  # a line per change, not per refresh
