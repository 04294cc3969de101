"""Workers search, not just run: distinct proposals per worker, warm starts first, a readable plan after a stop."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from search import StudySpec, create_or_load_study, plan, run_workers
from search.cli import app
from search.strategy.study import describe_progress, progress
from tests.search.conftest import small_study, write_study


def _params(url: str, name: str) -> list[tuple[tuple[str, object], ...]]:
    study = optuna.load_study(study_name=name, storage=url)
    return [tuple(sorted(t.params.items())) for t in study.get_trials() if "warm_start" not in t.user_attrs]


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_workers_propose_distinct_parameters(tmp_path: Path, db: str, sampler: str,
                                             request: pytest.FixtureRequest) -> None:
    """3 worker processes, one seeded study: no two search trials share their parameters.

    Before per-trial sampler seeds, every worker built the same seeded sampler and proposed the same values.
    """
    url = f"sqlite:///{tmp_path / 'study.db'}" if db == "sqlite" else request.getfixturevalue("postgres_url")
    raw = small_study(f"distinct-{sampler}", tmp_path, sampler={"name": sampler, "seed": 0},
                      budget={"n_trials": 9, "trial_images": 320, "eval_every_images": 320})
    if sampler == "tpe":
        raw["sampler"]["args"] = {"n_startup_trials": 3}
    raw["storage"]["url"] = url
    spec = StudySpec.from_file(write_study(tmp_path, raw))
    plan(create_or_load_study(spec), spec.n_trials)
    reports = run_workers(spec.name, url, 3)
    assert sum(r.trials for r in reports) == 9 and sum(r.trials > 0 for r in reports) >= 2
    params = _params(url, spec.name)
    assert len(params) == 9 and len(set(params)) == 9, params


@pytest.mark.slow
def test_one_worker_study_is_reproducible(tmp_path: Path) -> None:
    """The same seeded study file proposes the same parameters in the same order (one worker)."""
    proposed = []
    for run in ("a", "b"):
        folder = tmp_path / run
        folder.mkdir()
        raw = small_study("repro", folder, sampler={"name": "tpe", "seed": 3, "args": {"n_startup_trials": 2}},
                          budget={"n_trials": 4, "trial_images": 320, "eval_every_images": 320})
        spec = StudySpec.from_file(write_study(folder, raw))
        plan(create_or_load_study(spec), spec.n_trials)
        run_workers(spec.name, spec.storage, 1)
        proposed.append(_params(spec.storage, spec.name))
    assert proposed[0] == proposed[1]


@pytest.mark.slow
def test_warm_start_configs_run_first(tmp_path: Path) -> None:
    warm = [{"lr_g": 2e-4, "loss": "bce"}, {"lr_g": 5e-4}]
    raw = small_study("warm", tmp_path, warm_start=warm, budget={"n_trials": 4})
    spec = StudySpec.from_file(write_study(tmp_path, raw))
    study = create_or_load_study(spec)
    assert plan(study, spec.n_trials, spec.warm_start) == 2
    assert plan(study, spec.n_trials, spec.warm_start) == 0  # a second `run` does not enqueue them again
    run_workers(spec.name, spec.storage, 1)
    trials = study.get_trials()
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)
    assert trials[0].params == {"lr_g": 2e-4, "loss": "bce"} and trials[0].user_attrs["warm_start"] == 0
    assert trials[1].params["lr_g"] == 5e-4 and trials[1].params["loss"] in ("bce", "hinge")


@pytest.mark.parametrize(("warm", "message"), [
    ([{"beta1": 0.5}], "warm_start[0].beta1: not a searched key; allowed: loss, lr_g"),
    ([{"loss": "wgan"}], "warm_start[0].loss: must be one of ['bce', 'hinge'], but got 'wgan'"),
    ([{"lr_g": 1.0}], "warm_start[0].lr_g: must be within [0.0001, 0.001], but got 1.0"),
    ({"lr_g": 1e-4}, "warm_start: must be a list of parameter mappings"),
    (["dcgan"], "warm_start[0].preset: must be one of "),
    (["stylegan2"], "warm_start[0].lr_g: must be within [0.0001, 0.001], but got 0.002 (preset 'stylegan2')"),
    ([{"preset": "sngan", "loss": "wgan"}], "warm_start[0].loss: must be one of ['bce', 'hinge'], but got 'wgan'"),
    (["tests.search.spec.test_presets:NOPE"], "warm_start[0].preset: warm_start preset='tests.search.spec.test_presets:NOPE': "
                                         "module 'tests.search.spec.test_presets' has no attribute 'NOPE'"),
])
def test_bad_warm_start_exits_2_and_creates_nothing(tmp_path: Path, warm: object, message: str) -> None:
    study_file = write_study(tmp_path, small_study("badwarm", tmp_path, warm_start=warm))
    result = CliRunner().invoke(app, ["run", str(study_file)])
    assert result.exit_code == 2 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "study.db").exists() and not (tmp_path / "artifacts").exists()


@pytest.mark.slow
def test_a_timed_out_study_leaves_a_readable_plan_and_resumes(tmp_path: Path) -> None:
    """A stop leaves no unstarted rows; status says what is done and what is left; a re-run finishes the plan."""
    raw = small_study("stopped", tmp_path, budget={"n_trials": 12, "trial_images": 640, "eval_every_images": 320})
    study_file = write_study(tmp_path, raw)
    runner = CliRunner()
    first = runner.invoke(app, ["run", str(study_file), "--timeout", "0.5", "--json"])
    assert first.exit_code == 0, first.output
    done = json.loads(first.stdout.strip().splitlines()[-1])["progress"]
    assert 1 <= done["done"] < 12 and done["waiting"] == 0 and done["running"] == 0
    assert done["to_create"] == 12 - done["done"]
    study = optuna.load_study(study_name="stopped", storage=f"sqlite:///{tmp_path / 'study.db'}")
    assert not study.get_trials(states=(TrialState.WAITING,))  # nothing that would run silently later
    status = runner.invoke(app, ["status", "stopped", "--storage", f"sqlite:///{tmp_path / 'study.db'}"])
    first_line = status.output.splitlines()[0]
    assert first_line.startswith(f"{done['done']}/12 trials done") and f"{12 - done['done']} not started" in first_line
    assert "`gan-search run` or `gan-search worker` continues" in first_line

    second = runner.invoke(app, ["run", str(study_file), "--json"])
    assert second.exit_code == 0, second.output
    after = json.loads(second.stdout.strip().splitlines()[-1])["progress"]
    assert after["done"] == after["complete"] == 12 and after["to_create"] == 0
    assert describe_progress(progress(study)) == "12/12 trials done (12 complete, 0 pruned, 0 failed), 0 running"
