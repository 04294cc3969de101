"""Worker-dependent defaults: set where the study file leaves them unset, kept where it sets them, stored."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from search import StudySpec, attrs
from search.strategy.scale import for_workers
from tests.search.conftest import small_study, write_study

ROOT = Path(__file__).resolve().parents[3]


def test_startup_counts_grow_with_the_workers_where_the_file_sets_none(tmp_path: Path) -> None:
    spec = StudySpec.from_dict(small_study("s", tmp_path, sampler={"name": "tpe", "seed": 0},
                                           pruner={"name": "median"}))
    one, many = for_workers(spec, 1), for_workers(spec, 256)
    assert many.sampler["args"]["n_startup_trials"] > one.sampler["args"]["n_startup_trials"] >= 10
    assert many.pruner["args"]["n_startup_trials"] > one.pruner["args"]["n_startup_trials"] >= 5
    assert StudySpec.from_dict(many.raw).sampler == many.sampler  # what the study stores is what workers read
    written = StudySpec.from_dict(small_study("w", tmp_path, sampler={"name": "tpe", "args": {"n_startup_trials": 3}},
                                              pruner={"name": "median", "args": {"n_startup_trials": 2}}))
    kept = for_workers(written, 256)
    assert kept.sampler["args"]["n_startup_trials"] == 3 and kept.pruner["args"]["n_startup_trials"] == 2
    with pytest.raises(ValueError, match="workers must be >= 1"):
        for_workers(spec, 0)


def test_pbt_population_grows_to_the_workers_where_the_file_sets_none(tmp_path: Path) -> None:
    raw = small_study("p", tmp_path)
    raw["space"] = {"lr_g": raw["space"]["lr_g"]}  # PBT searches what can change mid-run
    raw["scheduler"] = {"name": "pbt", "interval_images": 320}  # 2 generations of the 640-image budget
    spec = StudySpec.from_dict(raw)
    many = for_workers(spec, 16)
    assert (spec.scheduler.population, spec.n_trials) == (4, 8)  # type: ignore[union-attr]
    assert (many.scheduler.population, many.n_trials) == (16, 32)  # type: ignore[union-attr]
    assert StudySpec.from_dict(many.raw).scheduler == many.scheduler  # stored as workers read it
    raw["scheduler"]["population"] = 3
    assert for_workers(StudySpec.from_dict(raw), 16).scheduler.population == 3  # type: ignore[union-attr]


@pytest.mark.slow
def test_create_for_many_workers_stores_the_scaled_defaults(tmp_path: Path) -> None:
    path = write_study(tmp_path, small_study("c", tmp_path, sampler={"name": "tpe", "seed": 0}, pruner={"name": "median"}))
    out = subprocess.run([sys.executable, "-m", "search.cli", "create", str(path), "--workers", "64"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["study"] == "c"
    study = optuna.load_study(study_name="c", storage=f"sqlite:///{tmp_path / 'study.db'}")
    stored = StudySpec.from_dict(study.user_attrs[attrs.SPEC])
    assert stored.sampler["args"]["n_startup_trials"] == for_workers(StudySpec.from_file(path), 64).sampler["args"][
        "n_startup_trials"]
    bad = subprocess.run([sys.executable, "-m", "search.cli", "create", str(path), "--workers", "0",
                          "--storage", f"sqlite:///{tmp_path / 'other.db'}"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and "workers must be >= 1" in bad.stderr and not (tmp_path / "other.db").exists()
