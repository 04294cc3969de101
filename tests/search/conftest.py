"""Real databases for storage tests (a fresh, randomly named database per test run) and small study files."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml


def small_study(name: str, tmp: Path, **overrides: Any) -> dict[str, Any]:
    """A study that trials in a second or two on the CPU (digits, tiny DCGAN)."""
    study: dict[str, Any] = {
        "name": name,
        "objective": "g_loss",
        "train": {"dataset": "digits", "arch": "dcgan", "g_width": 8, "d_width": 8, "latent_dim": 8,
                  "batch_size": 32, "eval_samples": 200, "device": "cpu"},
        "space": {"lr_g": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True},
                  "loss": {"type": "categorical", "choices": ["bce", "hinge"]}},
        "sampler": {"name": "random", "seed": 0},
        "pruner": {"name": "none"},
        "budget": {"n_trials": 3, "trial_images": 640, "eval_every_images": 320},
        "storage": {"url": f"sqlite:///{tmp / 'study.db'}", "artifacts": str(tmp / "artifacts"),
                    "heartbeat_interval": 1, "grace_period": 4},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(study.get(key), dict):
            study[key] = {**study[key], **value}
        else:
            study[key] = value
    return study


def write_study(tmp: Path, study: dict[str, Any]) -> Path:
    path = tmp / f"{study['name']}.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


@pytest.fixture
def postgres_url() -> Iterator[str]:
    psycopg = pytest.importorskip("psycopg")
    name = f"gs_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def mysql_url() -> Iterator[str]:
    pymysql = pytest.importorskip("pymysql")
    name = f"gs_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", autocommit=True)
    except pymysql.err.OperationalError as exc:
        pytest.skip(f"MariaDB not reachable: {exc}")
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}`")
    try:
        yield f"mysql+pymysql://root@127.0.0.1:3306/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()
