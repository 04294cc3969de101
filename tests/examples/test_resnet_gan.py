"""A user's own GAN as a plug-in (examples/resnet_gan): study -> export -> production training -> load_generator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from typer.testing import CliRunner

from search.cli import app

ROOT = Path(__file__).resolve().parents[2]
STUDY = ROOT / "examples" / "resnet_gan" / "study.yaml"


def study_file(tmp: Path, **changes: Any) -> Path:
    raw = yaml.safe_load(STUDY.read_text())
    raw["train"].update(device="cpu", extra={"depth": 1, "n_images": 1500})
    raw["budget"] = {"n_trials": 3, "trial_images": 640, "eval_every_images": 320}
    raw["storage"] = {"url": f"sqlite:///{tmp / 'study.db'}", "artifacts": str(tmp / "artifacts")}
    for key, value in changes.items():
        raw[key] = {**raw[key], **value} if isinstance(value, dict) and key in raw else value
    path = tmp / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "search.cli", *args], cwd=cwd, env=env, capture_output=True, text=True)


@pytest.mark.slow
def test_plugin_gan_study_export_train_and_load(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["run", str(study_file(tmp_path)), "--export", str(tmp_path / "best")])
    assert result.exit_code == 0, result.output
    config = yaml.safe_load((tmp_path / "best" / "config.yaml").read_text())
    assert config["arch"] == "examples.resnet_gan.nets:build" and config["extra"]["depth"] in (0, 1, 2)

    trained = cli("train", "--config", str(tmp_path / "best" / "config.yaml"), "--out", str(tmp_path / "prod"),
                  "--set", "budget_images=640")
    assert trained.returncode == 0, trained.stderr
    assert json.loads(trained.stdout.strip().splitlines()[-1])["images_seen"] >= 640

    code = ("import sys; from trainer import load_generator; g = load_generator(sys.argv[1]); "
            "x = g.sample(5); print(type(g).__name__, tuple(x.shape), float(x.min()) >= -1, float(x.max()) <= 1)")
    fresh = subprocess.run([sys.executable, "-c", code, str(tmp_path / "prod")], cwd=ROOT,
                           env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
    assert fresh.returncode == 0, fresh.stderr
    assert fresh.stdout.split() == ["ResGenerator", "(5,", "1,", "16,", "16)", "True", "True"]

    elsewhere = subprocess.run([sys.executable, "-c", code, str(tmp_path / "prod")], cwd=tmp_path,
                               env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, capture_output=True,
                               text=True)
    assert elsewhere.returncode != 0  # without the plug-in's package: a one-line answer saying what to install
    assert "module 'examples' is not installed; install the package that provides it" in elsewhere.stderr


def test_a_plugin_knob_is_searched(tmp_path: Path) -> None:
    path = study_file(tmp_path, sampler={"name": "random", "seed": 1, "args": {}}, warm_start=[],
                      budget={"n_trials": 5, "trial_images": 320, "eval_every_images": 320})
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 0, result.output
    trials = optuna.load_study(study_name="resnet-shapes", storage=f"sqlite:///{tmp_path / 'study.db'}").trials
    depths = [t.params["extra.depth"] for t in trials]
    assert len(set(depths)) >= 2  # the knob was varied ...
    assert all(t.user_attrs["config"]["extra"]["depth"] == t.params["extra.depth"] for t in trials)  # ... and used


@pytest.mark.parametrize(("change", "message"), [
    ({"arch": "no_such_pkg.nets:build"}, "module 'no_such_pkg' is not installed"),
    ({"arch": "examples.resnet_gan.nets:nope"}, "has no attribute 'nope'"),
    ({"arch": "examples.resnet_gan.data:load"}, "arch='examples.resnet_gan.data:load' failed to build"),
    ({"dataset": "examples.resnet_gan.nets:ResBlock"}, "dataset="),
    ({"loss": "examples.resnet_gan.nets:build"}, "loss='examples.resnet_gan.nets:build'"),
])
def test_a_broken_plugin_exits_2_and_creates_nothing(tmp_path: Path, change: dict[str, str], message: str) -> None:
    result = CliRunner().invoke(app, ["run", str(study_file(tmp_path, train=change))])
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1 and message in result.output, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.yaml"]
