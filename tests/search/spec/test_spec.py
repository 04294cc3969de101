from __future__ import annotations

import math
import warnings
from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner

from search import SpecError, StudySpec, build_pruner, build_sampler, suggest_config
from search.cli import app
from search.registries import PRUNERS, SAMPLERS
from tests.search.conftest import small_study, write_study

ROOT = Path(__file__).resolve().parents[3]


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
        ({"sampler": {"name": "bayes"}}, "sampler.name: must be one of "),
        ({"pruner": {"name": "early"}}, "pruner.name: must be one of "),
        ({"space": {"lr_g": {"type": "float", "low": -1.0, "high": 1e-3}}}, "space.lr_g: lr_g must be > 0"),
        ({"space": {"loss": ["bce", "wasserstein"]}}, "space.loss: loss must be one of"),
        ({"objective": "is"}, "objective: must be one or a list of fid, kid, g_loss, mode_kl, precision, recall"),
        ({"objective": ["fid", "fid"]}, "objective: lists a metric twice"),
        ({"objective": ["fid", "recall"], "direction": "minimize"}, "direction: must be minimize or maximize, one per"),
        ({"objective": ["fid", "recall"], "pruner": {"name": "median"}}, "pruner.name: must be none with several"),
        ({"objective": ["g_loss", "recall"]}, "objective: g_loss is measured without an evaluator"),
        ({"constraints": {"class_min_share": "> 0.07"}}, "constraints.class_min_share: must be '>= NUMBER' or"),
        ({"constraints": {"class_min_share": ">= lots"}}, "constraints.class_min_share: must be '>= NUMBER' or"),
        ({"constraints": {"sharpness": ">= 1"}}, "constraints.sharpness: must constrain one of fid, kid, mode_kl, precision"),
        ({"objective": "fid", "constraints": {"class_min_share": ">= 0.07"}, "train": {"feature_net": "inception"}},
         "constraints.class_min_share: class shares need feature_net: domain"),
        ({"objective": "modes"}, "objective: modes and mode_kl need feature_net: domain and a dataset whose channels"),
        ({"objective": "fid", "constraints": {"mode_kl": "<= 0.1"}},
         "constraints.mode_kl: modes and mode_kl need feature_net: domain"),
        ({"objective": "fid", "constraints": {"fid": "<= 30"}, "constraints_at": "end"},
         "constraints_at: must be one of search, export, but got 'end'"),
        ({"constraints_at": "export"}, "constraints_at: export needs constraints: to judge"),
        ({"budget": {"n_trials": 0}}, "budget.n_trials: must be an int >= 1"),
        ({"train": {"lr_g": "fast"}}, "lr_g must be a float"),
        ({"sampler": {"name": "grid"}}, "grid needs every space entry to be categorical"),
        ({"extra": 1}, "extra: unknown key"),
        ({"guard": {"grow_evals": "three"}}, "guard.grow_evals: must be an int >= 0"),
        ({"space": {"image_size": [8, 16]}}, "space.image_size: 'image_size' is shared by all trials"),
        ({"space": {"classes": [0, 10]}}, "space.classes: 'classes' is shared by all trials"),
        ({"storage": {"url": "sqlite:///x.db", "connections": -1}}, "storage.connections: must be an int >= 0"),
        ({"export": {"confirm": -1}}, "export.confirm: must be an int >= 0"),
        ({"export": {"confirm": 2, "seeds": 0}}, "export.seeds: must be an int >= 1"),
        ({"export": {"confirm": 2, "images": "192k"}}, "export.images: must be an int >= 1"),
        ({"export": {"images": 192000}}, "export.images: needs export.confirm >= 1"),
        ({"export": {"confirm": 2, "retrain": 9}}, "export.retrain: unknown key; allowed: confirm, seeds, images"),
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


def test_a_conditional_study_on_wrong_labels_exits_2_and_creates_nothing(tmp_path: Path) -> None:
    """classes: 3 on digits (10 labels): refused when the data is checked, before any storage is touched."""
    study = small_study("cond", tmp_path, train={"classes": 3})
    result = CliRunner().invoke(app, ["run", str(write_study(tmp_path, study))])
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1 and "classes=3 needs training labels 0..2" in result.output
    _nothing_written(tmp_path)


def _drive(spec: StudySpec, n_trials: int = 8) -> optuna.Study:
    """Real Optuna trials through the study's sampler and pruner: suggestions -> TrainConfig -> reports."""
    study = optuna.create_study(sampler=build_sampler(spec), pruner=build_pruner(spec))

    def objective(trial: optuna.Trial) -> float:
        cfg = suggest_config(trial, spec)
        value = abs(math.log10(cfg.lr_g) + 3.3) + (cfg.loss == "hinge")
        for mark in (320, 640, 960):
            trial.report(value + 1.0 / mark, mark)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return value

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # experimental samplers warn
        study.optimize(objective, n_trials=n_trials)
    return study


@pytest.mark.parametrize("name", SAMPLERS.names())
def test_each_registered_sampler_searches(tmp_path: Path, name: str) -> None:
    raw = small_study("s", tmp_path, sampler={"name": name, "seed": 0})
    if name == "grid":  # a grid needs every space entry categorical
        raw["space"] = {"lr_g": [1e-4, 5e-4], "loss": ["bce", "hinge"]}
    study = _drive(StudySpec.from_dict(raw))
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) >= 4 and len({tuple(sorted(t.params.items())) for t in complete}) >= 4  # it proposed


@pytest.mark.parametrize("name", PRUNERS.names())
def test_each_registered_pruner_builds_and_judges(tmp_path: Path, name: str) -> None:
    pruner = {"name": name, **({"args": {"upper": 2.0}} if name == "threshold" else {})}  # threshold needs a bound
    study = _drive(StudySpec.from_dict(small_study("p", tmp_path, pruner=pruner)), n_trials=12)
    states = {t.state for t in study.trials}
    assert states <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    assert optuna.trial.TrialState.COMPLETE in states
