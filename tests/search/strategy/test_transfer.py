"""Warm start from a finished study (search/strategy/transfer.py): another study's best configs, fitted to this
study's space, enqueued first; an unknown study is one line, exit 2, nothing written."""

from __future__ import annotations

import logging
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial
from typer.testing import CliRunner

from search import api, attrs
from search.cli import app
from search.spec.study_file import Param
from search.strategy.transfer import fit
from tests.search.conftest import small_study, write_study


def _source(tmp_path: Path) -> str:
    """A finished Optuna study on another problem: wider learning rates, a key this space lacks, a loss it lacks."""
    url = f"sqlite:///{tmp_path / 'source.db'}"
    study = optuna.create_study(study_name="fashion-done", storage=url)
    dists = {"lr_g": FloatDistribution(1e-5, 1e-1, log=True), "loss": CategoricalDistribution(["bce", "hinge", "lsgan"]),
             "batch_size": IntDistribution(16, 256)}
    for value, params in ((7.0, {"lr_g": 5e-2, "loss": "hinge", "batch_size": 32}),   # best: lr clipped
                          (9.0, {"lr_g": 2e-4, "loss": "lsgan", "batch_size": 64}),   # second: loss dropped
                          (30.0, {"lr_g": 3e-4, "loss": "bce", "batch_size": 128}),   # third: not in the top 2
                          (8.0, {"lr_g": 1e-4, "loss": "bce", "batch_size": 64})):    # a seed confirmation: not used
        confirm = value == 8.0
        study.add_trial(create_trial(params=params, distributions=dists, value=value,
                                     user_attrs={attrs.CONFIRM: True} if confirm else {}))
    study.add_trial(create_trial(params={"lr_g": 1e-3, "loss": "bce", "batch_size": 32}, distributions=dists,
                                 state=TrialState.FAIL))
    return url


def test_fit_drops_keys_this_space_lacks_and_clips_values_into_its_ranges() -> None:
    space = (Param("lr_g", "float", 1e-4, 1e-3, log=True), Param("n_critic", "int", 1, 3),
             Param("loss", "categorical", choices=("bce", "hinge")))
    values, notes = fit({"lr_g": 5e-2, "n_critic": 4.6, "loss": "lsgan", "beta2": 0.99, "g_width": 64}, space)
    assert values == {"lr_g": 1e-3, "n_critic": 3}
    assert notes[0] == "dropped beta2, g_width (not searched here)"
    assert "clipped lr_g 0.05 -> 0.001" in notes and "clipped n_critic 4.6 -> 3" in notes
    assert any(n.startswith("dropped loss='lsgan'") for n in notes)


def test_fit_puts_values_on_the_step_grid() -> None:
    """batch size 48 into 32..256 step 32 trained 48 (Optuna only warned); now it lands on the grid."""
    space = (Param("batch_size", "int", 32, 256, step=32), Param("beta1", "float", 0.0, 0.5, step=0.1),
             Param("n_critic", "int", 1, 5, step=2))
    values, notes = fit({"batch_size": 50, "beta1": 0.27, "n_critic": 4}, space)
    assert values == {"batch_size": 64, "beta1": 0.3, "n_critic": 5} or values == {"batch_size": 64, "beta1": 0.3,
                                                                                     "n_critic": 3}
    assert fit({"batch_size": 48}, space)[0]["batch_size"] in (32, 64)
    assert fit({"batch_size": 250}, space)[0] == {"batch_size": 256}
    assert fit({"batch_size": 300}, (Param("batch_size", "int", 32, 250, step=32),))[0] == {"batch_size": 224}
    assert "clipped batch_size 50 -> 64" in notes


def test_warm_start_takes_the_source_studys_trials_in_the_one_ranking_order(tmp_path: Path) -> None:
    """The source's best value misses its constraints: the ranking rule puts the feasible trials first (ordering by
    value alone enqueued the infeasible one first)."""
    url = f"sqlite:///{tmp_path / 'source.db'}"
    study = optuna.create_study(study_name="constrained", storage=url)
    dists = {"lr_g": FloatDistribution(1e-5, 1e-1, log=True)}
    for value, lr, miss in ((1.0, 9e-4, 0.5), (5.0, 2e-4, 0.0), (6.0, 3e-4, 0.0)):
        study.add_trial(create_trial(params={"lr_g": lr}, distributions=dists, value=value,
                                     system_attrs={"constraints": (miss,)}))
    raw = small_study("after-constrained", tmp_path, warm_start=[{"study": "constrained", "storage": url, "top": 2}])
    spec = api.load_spec(write_study(tmp_path, raw))
    assert spec.warm_start == ({"lr_g": 2e-4}, {"lr_g": 3e-4})


def test_a_study_starts_from_another_studys_best_configs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    url = _source(tmp_path)
    raw = small_study("digits-next", tmp_path, warm_start=[{"study": "fashion-done", "storage": url, "top": 2}])
    with caplog.at_level(logging.WARNING, logger="search.strategy.transfer"):
        spec = api.load_spec(write_study(tmp_path, raw))
    assert spec.warm_start == ({"lr_g": 1e-3, "loss": "hinge"}, {"lr_g": 2e-4})  # best first, fitted
    assert spec.raw["warm_start"][0]["from"] == "study fashion-done trial 0"  # where it came from, stored
    assert "clipped lr_g 0.05 -> 0.001" in caplog.text and "dropped batch_size (not searched here)" in caplog.text
    assert "dropped loss='lsgan'" in caplog.text
    study, added = api.create(spec)
    assert added == 2
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [t.system_attrs["fixed_params"] for t in waiting] == [{"lr_g": 1e-3, "loss": "hinge"}, {"lr_g": 2e-4}]
    again = api.load_spec(write_study(tmp_path, raw))  # workers re-read the stored file without the source
    assert again.warm_start == spec.warm_start


@pytest.mark.parametrize(("ref", "message"), [
    ({"study": "nope"}, "warm_start[0].study: cannot read study 'nope' from sqlite:///"),
    ({"study": "fashion-done", "top": 0}, "warm_start[0].top: must be an int >= 1"),
    ({"study": "fashion-done", "tops": 2}, "warm_start[0].tops: unknown key; allowed: study, storage, top"),
])
def test_a_bad_study_reference_is_one_line_exit_2_and_nothing_written(tmp_path: Path, ref: dict[str, object],
                                                                       message: str) -> None:
    url = _source(tmp_path)
    target = tmp_path / "target"
    raw = small_study("next", target, warm_start=[{"storage": url, **ref}])
    result = CliRunner().invoke(app, ["run", str(write_study(tmp_path, raw))])
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1 and message in result.output
    assert not target.exists()  # no database file, no artifacts folder
    assert [s.study_name for s in optuna.get_all_study_summaries(url)] == ["fashion-done"]
