from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from search import SpecError, StudySpec
from search.cli import app
from tests.search.conftest import small_study, write_study

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted((ROOT / "studies").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_study_files_are_valid(path: Path) -> None:
    spec = StudySpec.from_file(path)
    assert spec.name == path.stem and spec.space


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"space": {"lr_gg": {"type": "float", "low": 1e-4, "high": 1e-3}}},
         "space.lr_gg: 'lr_gg' is not a TrainConfig field; allowed:"),
        ({"space": {"lr_g": {"type": "float", "low": 1e-2, "high": 1e-3}}}, "space.lr_g: low must be <= high"),
        ({"sampler": {"name": "bayes"}}, "sampler.name: must be one of cmaes, gp, grid, qmc, random, tpe or"),
        ({"pruner": {"name": "early"}}, "pruner.name: must be one of hyperband, median, none, percentile"),
        ({"space": {"lr_g": {"type": "float", "low": -1.0, "high": 1e-3}}}, "space.lr_g: lr_g must be > 0"),
        ({"space": {"loss": ["bce", "wasserstein"]}}, "space.loss: loss must be one of"),
        ({"objective": "is"}, "objective: must be one of fid, kid, g_loss"),
        ({"budget": {"n_trials": 0}}, "budget.n_trials: must be an int >= 1"),
        ({"train": {"lr_g": "fast"}}, "lr_g must be a float"),
        ({"sampler": {"name": "grid"}}, "grid needs every space entry to be categorical"),
        ({"extra": 1}, "extra: unknown key"),
        ({"guard": {"grow_evals": "three"}}, "guard.grow_evals: must be an int >= 0"),
        ({"space": {"image_size": [8, 16]}}, "space.image_size: 'image_size' is shared by all trials"),
    ],
)
def test_invalid_study_files_name_the_key(tmp_path: Path, override: dict[str, object], message: str) -> None:
    study = small_study("bad", tmp_path)
    for key, value in override.items():
        study[key] = {**study[key], **value} if isinstance(value, dict) and key in ("budget", "train") else value
    path = write_study(tmp_path, study)
    with pytest.raises(SpecError) as info:
        StudySpec.from_file(path)
    assert message in str(info.value) and str(path) in str(info.value)


def test_cli_run_with_a_bad_study_exits_2_and_creates_nothing(tmp_path: Path) -> None:
    study = small_study("bad", tmp_path, space={"lr_g": {"type": "float", "low": 1.0, "high": 0.1}})
    result = CliRunner().invoke(app, ["run", str(write_study(tmp_path, study))])
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1 and "space.lr_g: low must be <= high" in result.output
    assert not (tmp_path / "study.db").exists() and not (tmp_path / "artifacts").exists()


def test_storage_env_variable_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GAN_SEARCH_STORAGE", "postgresql+psycopg://u:secret@127.0.0.1/db")
    spec = StudySpec.from_file(write_study(tmp_path, small_study("env", tmp_path)))
    assert spec.storage.startswith("postgresql")


def test_bad_storage_url_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["status", "x", "--storage", "mongodb://u:pw@host/db"])
    assert result.exit_code == 2 and "storage must be a sqlite, postgresql or mysql URL" in result.output
    assert "pw" not in result.output


def _nothing_written(tmp_path: Path) -> None:
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.suffix != ".yaml")
    assert leftovers == [], leftovers


@pytest.mark.parametrize(("part", "args"), [("sampler", {"n_startup_trails": 4}), ("pruner", {"n_warmup_stepz": 1})])
def test_a_typo_in_sampler_or_pruner_args_exits_2_and_writes_nothing(tmp_path: Path, part: str, args: dict) -> None:
    name = {"sampler": "tpe", "pruner": "median"}[part]
    study = small_study("typo", tmp_path, **{part: {"name": name, "args": args}})
    result = CliRunner().invoke(app, ["run", str(write_study(tmp_path, study))])
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert f"{part}.args: {name} does not accept these arguments ({next(iter(args))})" in result.output
    _nothing_written(tmp_path)


def test_commands_on_a_missing_sqlite_file_exit_2_and_create_no_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    for command in (["export", "NOSUCH", "--out", str(tmp_path / "out")], ["status", "NOSUCH"], ["worker", "NOSUCH"]):
        result = CliRunner().invoke(app, [*command, "--storage", url])
        assert result.exit_code == 2 and "no database file at" in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
    _nothing_written(tmp_path)


def test_a_study_whose_data_is_missing_exits_2_and_creates_nothing(tmp_path: Path) -> None:
    study = small_study("nodata", tmp_path, train={"dataset": "idx", "data_root": str(tmp_path / "no-such-folder")})
    result = CliRunner().invoke(app, ["run", str(write_study(tmp_path, study))])
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1 and "no-such-folder" in result.output
    _nothing_written(tmp_path)
