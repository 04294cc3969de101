"""The search service end to end on the embedded SQLite store (real Optuna, real training)."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml
from click.testing import Result
from optuna.artifacts import get_all_artifact_meta
from optuna.trial import TrialState
from typer.testing import CliRunner

from search import StudySpec, create_or_load_study, plan, run_workers
from search.cli import app
from tests.search.conftest import small_study, write_study
from trainer import TrainConfig


def run_cli(*args: str) -> Result:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result


def test_run_status_export_and_train_the_exported_config(tmp_path: Path) -> None:
    study_file = write_study(tmp_path, small_study("e2e", tmp_path))
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    result = run_cli("run", str(study_file))
    assert "3/3 trials done (3 complete, 0 pruned, 0 failed), 0 running" in result.output
    status = json.loads(run_cli("status", "e2e", "--storage", storage, "--json").stdout)
    assert status["states"] == {"COMPLETE": 3} and status["best_value"] is not None

    # a plain Optuna session sees the trials, intermediate values, user attributes and artifacts
    study = optuna.load_study(study_name="e2e", storage=storage)
    for trial in study.trials:
        assert sorted(trial.intermediate_values) == [320, 640]
        attrs = trial.user_attrs
        assert {"config", "seed", "images_seen", "wall_seconds", "images_per_s", "device", "final_value",
                "best_value", "loss_history"} <= set(attrs)
        assert TrainConfig.from_dict(attrs["config"]).lr_g == trial.params["lr_g"]
        names = {m.filename for m in get_all_artifact_meta(trial, storage=study._storage)}
        assert names == {"samples-000000320.png", "samples-000000640.png", "curves.svg", "generator.safetensors"}
        assert [g["mark"] for g in attrs["grids"]] == [320, 640]  # one grid per evaluation, named by images
        assert attrs["samples_artifact"] == attrs["grids"][-1]["artifact"]

    out = tmp_path / "best"
    run_cli("export", "e2e", "--storage", storage, "--out", str(out))
    assert {"config.yaml", "generator.safetensors", "samples.png", "metrics.json", "report.html"} <= {
        p.name for p in out.iterdir()}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["value"] == study.best_value
    assert "plotly" in (out / "report.html").read_text()[:200_000].lower()
    cfg = TrainConfig.from_file(out / "config.yaml")
    assert cfg.lr_g == study.best_params["lr_g"] and cfg.loss == study.best_params["loss"]

    again = tmp_path / "again"
    run_cli("train", "--config", str(out / "config.yaml"), "--out", str(again), "--set", "eval_metric=none")
    assert (again / "generator.safetensors").is_file()


def test_rerun_continues_the_same_study(tmp_path: Path) -> None:
    study_file = write_study(tmp_path, small_study("again", tmp_path, budget={"n_trials": 2}))
    run_cli("run", str(study_file))
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    first = optuna.load_study(study_name="again", storage=storage)
    run_cli("run", str(study_file))  # nothing left to do: the study already has its 2 trials
    assert len(first.trials) == 2
    run_cli("run", str(study_file), "--n-trials", "3")
    study = optuna.load_study(study_name="again", storage=storage)
    assert study._study_id == first._study_id
    assert [t.number for t in study.trials] == [0, 1, 2]
    assert all(t.state == TrialState.COMPLETE for t in study.trials)


def test_a_hopeless_learning_rate_is_pruned_before_its_budget(tmp_path: Path) -> None:
    study = small_study("prune", tmp_path, objective="fid",
                        space={"lr_g": {"type": "float", "low": 1e-9, "high": 1e-2, "log": True}},
                        pruner={"name": "median", "args": {"n_startup_trials": 2}},
                        budget={"n_trials": 3, "trial_images": 3200, "eval_every_images": 640})
    study["space"].pop("loss", None)
    spec = StudySpec.from_file(write_study(tmp_path, study))
    optuna_study = create_or_load_study(spec)
    for lr in (2e-3, 2e-3, 1e-9):  # two reasonable trials, then a hopeless one
        optuna_study.enqueue_trial({"lr_g": lr})
    run_workers(spec.name, spec.storage, 1)
    trials = optuna_study.get_trials()
    hopeless = trials[2]
    assert [t.state for t in trials[:2]] == [TrialState.COMPLETE] * 2
    assert hopeless.state == TrialState.PRUNED
    assert hopeless.user_attrs["images_seen"] < 3200
    assert "median pruner" in hopeless.user_attrs["prune_reason"]
    assert hopeless.user_attrs["samples_artifact"]


def test_the_guard_prunes_a_diverging_run_with_its_reason(tmp_path: Path) -> None:
    study = small_study("guard", tmp_path, guard={"max_loss": 0.05}, budget={"n_trials": 1})
    spec = StudySpec.from_file(write_study(tmp_path, study))
    plan(create_or_load_study(spec), 1)
    run_workers(spec.name, spec.storage, 1)
    trial = optuna.load_study(study_name="guard", storage=spec.storage).trials[0]
    assert trial.state == TrialState.PRUNED
    assert "above max_loss=0.05" in trial.user_attrs["prune_reason"]
    assert trial.user_attrs["images_seen"] < 640


def test_a_trial_that_raises_is_failed_with_its_reason_and_the_study_goes_on(tmp_path: Path) -> None:
    study = small_study("fails", tmp_path, budget={"n_trials": 2})
    spec = StudySpec.from_file(write_study(tmp_path, study))
    optuna_study = create_or_load_study(spec)
    optuna_study.enqueue_trial({"lr_g": 1e-3, "loss": "bce"}, user_attrs={"seed_override": -1})  # invalid seed
    plan(optuna_study, 2)
    run_workers(spec.name, spec.storage, 1)
    trials = optuna_study.get_trials()
    assert trials[0].state == TrialState.FAIL and "seed must be >= 0" in trials[0].user_attrs["fail_reason"]
    assert trials[1].state == TrialState.COMPLETE


def test_export_without_a_complete_trial_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    spec = StudySpec.from_file(write_study(tmp_path, small_study("empty", tmp_path)))
    create_or_load_study(spec)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["export", "empty", "--storage", spec.storage, "--out", str(out)])
    assert result.exit_code == 2 and "no complete trial" in result.output
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
    result = CliRunner().invoke(app, ["status", "nope", "--storage", spec.storage])
    assert result.exit_code == 2 and "study 'nope' not found" in result.output


def test_export_retrain_and_seed_confirmation(tmp_path: Path) -> None:
    study_file = write_study(tmp_path, small_study("confirm", tmp_path))
    run_cli("run", str(study_file))
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    out = tmp_path / "best"
    result = run_cli("export", "confirm", "--storage", storage, "--out", str(out), "--confirm", "2", "--seeds", "2",
                     "--retrain", "960")
    metrics = json.loads((out / "metrics.json").read_text())
    table = metrics["confirmation"]
    assert len(table) == 2 and all(len(row["seed_values"]) == 2 for row in table)
    assert table[0]["mean"] <= table[1]["mean"] and metrics["trial"] == table[0]["export_run"]
    assert metrics["retrain"]["images"] == 960
    assert yaml.safe_load((out / "config.yaml").read_text())["budget_images"] == 960
    study = optuna.load_study(study_name="confirm", storage=storage)
    assert sum("confirm_of" in t.user_attrs for t in study.trials) == 4  # recorded in the study
    assert json.loads(result.stdout.strip().splitlines()[-1])["trial"] == table[0]["export_run"]


@pytest.mark.slow
def test_export_confirms_at_the_production_budget_and_exports_that_run(tmp_path: Path) -> None:
    """The study file's ``export: {confirm: 2, seeds: 2, images: 960}``: four fresh-seed runs at 960 images (the
    trials trained 640), recorded in the study; the export is the winning config's run itself (its generator, its
    config), not a retrain. The same flags given again re-use those runs."""
    study_file = write_study(tmp_path, small_study("prod", tmp_path, objective="fid",
                                                   export={"confirm": 2, "seeds": 2, "images": 960}))
    run_cli("run", str(study_file))
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    bad = CliRunner().invoke(app, ["export", "prod", "--storage", storage, "--out", str(tmp_path / "x"), "--confirm",
                                   "0", "--images", "960"])
    assert bad.exit_code == 2 and "images needs --confirm K >= 1" in bad.output
    assert not (tmp_path / "x").exists()
    study = optuna.load_study(study_name="prod", storage=storage)
    assert not [t for t in study.trials if "confirm_of" in t.user_attrs]  # the refused export ran nothing
    out = tmp_path / "best"
    run_cli("export", "prod", "--storage", storage, "--out", str(out))
    metrics = json.loads((out / "metrics.json").read_text())
    table = metrics["confirmation"]
    assert len(table) == 2 and all(r["images"] == 960 and len(r["seed_values"]) == 2 for r in table)
    assert table[0]["mean"] <= table[1]["mean"] and "recall" in table[0]["metrics"] and "retrain" not in metrics
    study = optuna.load_study(study_name="prod", storage=storage)
    runs = [t for t in study.trials if "confirm_of" in t.user_attrs]
    assert len(runs) == 4 and all(t.user_attrs["images_seen"] == 960 and t.user_attrs["confirm_images"] == 960
                                  for t in runs)
    recorded = study.user_attrs["confirmations"][-1]
    assert recorded["images"] == 960 and [r["trial"] for r in recorded["rows"]] == [r["trial"] for r in table]
    exported = study.trials[metrics["trial"]]
    assert exported.number == table[0]["export_run"] and exported.user_attrs["confirm_of"] == table[0]["trial"]
    again = json.loads(run_cli("export", "prod", "--storage", storage, "--out", str(tmp_path / "again"), "--confirm",
                               "2", "--seeds", "2", "--images", "960").stdout.strip().splitlines()[-1])
    assert again["trial"] == exported.number and len(optuna.load_study(study_name="prod", storage=storage).trials) == len(
        study.trials)  # flags equal to the rule: the recorded runs are re-used, none trained twice
    cfg = TrainConfig.from_file(out / "config.yaml")
    assert cfg.budget_images == 960 and cfg.seed == exported.user_attrs["seed"]
    from optuna.artifacts import download_artifact

    from search.store.artifacts import artifact_store

    download_artifact(artifact_store=artifact_store(str(tmp_path / "artifacts")), file_path=str(tmp_path / "g.st"),
                      artifact_id=exported.user_attrs["generator_artifact"])
    assert (tmp_path / "g.st").read_bytes() == (out / "generator.safetensors").read_bytes()
    assert "Confirmed at the production budget" in (out / "report.html").read_text()


def test_a_class_conditional_study_runs_and_exports_a_generator_that_samples_every_class(tmp_path: Path) -> None:
    """``train: {classes: 10}``: trials train class-conditional networks (alone, not in packs); the exported
    generator rebuilds from its folder with the training split's class prior and draws every class."""
    study_file = write_study(tmp_path, small_study("cond", tmp_path, objective="fid", train={"classes": 10}))
    run_cli("run", str(study_file))
    out = tmp_path / "best"
    run_cli("export", "cond", "--storage", f"sqlite:///{tmp_path / 'study.db'}", "--out", str(out))
    import torch

    from trainer import load_data, load_generator

    gen = load_generator(out)
    assert TrainConfig.from_file(out / "config.yaml").classes == 10
    assert abs(float(gen.class_prior.sum()) - 1.0) < 1e-6 and float(gen.class_prior.min()) > 0.05
    counts = torch.bincount(load_data(TrainConfig()).train_labels, minlength=10).float()  # digits' training split
    assert torch.allclose(gen.class_prior, counts / counts.sum())  # its proportions, not the uniform default
    assert not torch.allclose(gen.class_prior, torch.full((10,), 0.1))

    labels = gen.label_of(torch.randn(2000, gen.latent_dim, generator=torch.Generator().manual_seed(0)))
    assert torch.bincount(labels, minlength=10).min() > 100  # each class ~200 of 2000


def test_run_export_follows_the_study_files_export_rule(tmp_path: Path) -> None:
    """``run --export`` confirms as the file's ``export:`` says (here the top config, 2 fresh seeds at the trial
    budget) before it exports, as ``gan-search export`` would."""
    study_file = write_study(tmp_path, small_study("rule", tmp_path, objective="fid", export={"confirm": 1, "seeds": 2}))
    out = tmp_path / "best"
    run_cli("run", str(study_file), "--export", str(out))
    table = json.loads((out / "metrics.json").read_text())["confirmation"]
    assert len(table) == 1 and len(table[0]["seed_values"]) == 2 and table[0]["images"] == 640
    study = optuna.load_study(study_name="rule", storage=f"sqlite:///{tmp_path / 'study.db'}")
    assert sum("confirm_of" in t.user_attrs for t in study.trials) == 2


@pytest.mark.slow
@pytest.mark.parametrize("workers", [3])
def test_sqlite_with_several_local_workers(tmp_path: Path, workers: int) -> None:
    study_file = write_study(tmp_path, small_study("sqlite-many", tmp_path, budget={"n_trials": 9}))
    result = run_cli("run", str(study_file), "--workers", str(workers), "--json")
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["states"] == {"COMPLETE": 9}
    assert sum(w["trials"] for w in summary["workers"]) == 9  # each trial claimed by exactly one worker


def _claim_all(url: str, study_file: str) -> list[int]:
    from search.execution.worker import _claim
    from search.store.storage import make_storage

    spec = StudySpec.from_file(study_file).with_overrides(storage=url)
    storage = make_storage(url)
    study = optuna.load_study(study_name="claims", storage=storage)
    claimed = []
    while (taken := _claim(study, spec, storage, True)) is not None:
        taken.heartbeat.close()  # the heartbeat runs from the claim on; this test only claims
        claimed.append(taken.trial.number)
    return claimed


@pytest.mark.slow
@pytest.mark.parametrize("db", ["sqlite", "postgres", "mariadb"])
def test_concurrent_claims_never_take_a_trial_twice(tmp_path: Path, db: str, request: pytest.FixtureRequest) -> None:
    """4 processes claim 30 enqueued trials and create 30 more: each is taken once, and no more are created."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    url = {"sqlite": lambda: f"sqlite:///{tmp_path / 'claims.db'}", "postgres": lambda: request.getfixturevalue("postgres_url"),
           "mariadb": lambda: request.getfixturevalue("mysql_url")}[db]()
    raw = small_study("claims", tmp_path)
    raw["storage"]["url"] = url
    study_file = write_study(tmp_path, raw)
    study = create_or_load_study(StudySpec.from_file(study_file))
    for _ in range(30):
        study.enqueue_trial({})
    plan(study, 60)
    with ProcessPoolExecutor(4, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = list(pool.map(_claim_all, [url] * 4, [str(study_file)] * 4))
    claimed = [n for r in results for n in r]
    assert sorted(claimed) == list(range(60))  # every trial claimed exactly once, exactly 60 in all
    assert len(study.get_trials(deepcopy=False)) == 60


def test_the_plan_is_counted_from_narrow_queries_as_from_the_trials(tmp_path: Path, postgres_url: str) -> None:
    """``planned_trials`` on a database reads states and marks only; it must count what ``counted`` counts: a failed
    trial a retry replaces, a surplus row and a confirmation do not count."""
    from search import attrs
    from search.strategy.study import _planned_rows, counted, planned_trials, retried_numbers

    raw = small_study("plan", tmp_path)
    raw["storage"]["url"] = postgres_url
    study = create_or_load_study(StudySpec.from_dict(raw))
    for _ in range(2):
        study.tell(study.ask(), 1.0)
    dead = study.ask()
    study.tell(dead, state=TrialState.FAIL)
    extra = study.ask()
    study._storage.set_trial_system_attr(extra._trial_id, attrs.SURPLUS, True)  # noqa: SLF001
    study.tell(extra, state=TrialState.FAIL)
    confirm = study.ask()
    confirm.set_user_attr(attrs.CONFIRM, 0)
    study.tell(study.ask(), state=TrialState.FAIL)  # failed, not retried: counts
    study.enqueue_trial({})  # the dead trial's retry, WAITING
    retry = study.get_trials()[-1]
    study._storage.set_trial_system_attr(retry._trial_id, attrs.FAILED_TRIAL, dead.number)  # noqa: SLF001
    trials = study.get_trials(deepcopy=False)
    by_bodies = sum(1 for t in trials if counted(t, retried_numbers(trials)))
    assert _planned_rows(study) == by_bodies == planned_trials(study) == 4  # 2 complete, the retry, the failed one
