"""docker-compose.yml: its structure, and the very commands its services run, against the real PostgreSQL."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.search.conftest import small_study, write_study

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_structure(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", "create-study", "worker", "dashboard"}
    pg = services["postgres"]
    assert re.fullmatch(r"postgres:\d+\.\d+[\w.-]*", pg["image"])  # pinned, not latest
    assert "healthcheck" in pg and "pgdata" in compose["volumes"]
    assert pg["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")  # no default secret
    assert services["create-study"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["create-study"]["restart"] == "no"
    worker = services["worker"]
    assert worker["depends_on"]["create-study"]["condition"] == "service_completed_successfully"
    device = worker["deploy"]["resources"]["reservations"]["devices"][0]
    assert "gpu" in device["capabilities"] and "container_name" not in worker  # --scale worker=N works
    dash = services["dashboard"]
    assert all(p.startswith("127.0.0.1:") for p in dash["ports"])
    assert any("artifacts:" in v for v in dash["volumes"])
    assert (ROOT / "Dockerfile").is_file()
    env = (ROOT / ".env.example").read_text()
    assert re.search(r"^POSTGRES_PASSWORD=$", env, re.M)


def render(command: list[str], values: dict[str, str]) -> list[str]:
    """Compose's ${VAR:-default} interpolation, then local paths for the container's volumes."""
    out = []
    for part in command:
        part = re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: values.get(m.group(1), m.group(2)), part)
        out.append(values.get(part, part))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_compose_commands_against_postgres(compose: dict[str, Any], postgres_url: str, tmp_path: Path) -> None:
    study = small_study("compose", tmp_path, budget={"n_trials": 2})
    study_file = write_study(tmp_path, study)
    port = free_port()
    values = {"STUDY_FILE": str(study_file), "STUDY_NAME": "compose", "/artifacts": str(tmp_path / "artifacts"),
              "0.0.0.0": "127.0.0.1", "8080": str(port)}  # the test binds loopback and a free port
    env = {**os.environ, "GAN_SEARCH_STORAGE": postgres_url, "PYTHONPATH": str(ROOT)}
    cli = [sys.executable, "-m", "search.cli"]
    services = compose["services"]
    created = subprocess.run([*cli, *render(services["create-study"]["command"], values)], env=env,
                             capture_output=True, text=True, check=True)
    assert json.loads(created.stdout)["n_trials"] == 2
    worked = subprocess.run([*cli, *render(services["worker"]["command"], values)], env=env,
                            capture_output=True, text=True, check=True)
    assert json.loads(worked.stdout)["trials"] == 2

    dash = subprocess.Popen([*cli, *render(services["dashboard"]["command"], values)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        studies = None
        deadline = time.monotonic() + 90  # a refused connection returns at once: wait on the clock, not a count
        while studies is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as r:
                    studies = json.loads(r.read())["study_summaries"]
            except OSError:
                time.sleep(0.3)
        assert studies is not None, "dashboard did not answer"
        (summary,) = [s for s in studies if s["study_name"] == "compose"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{summary['study_id']}", timeout=5) as r:
            detail = json.loads(r.read())
        assert [t["state"] for t in detail["trials"]] == ["Complete", "Complete"]
        assert all(t["artifacts"] for t in detail["trials"])  # the artifact store is wired in
    finally:
        dash.terminate()
        dash.wait(10)
