"""Promotion by continuation (search/strategy/promotion.py): the study file's rules, a continued trial against an
uninterrupted run of the same images (on the same worker and on another), a killed continuation, and 4 workers on
PostgreSQL deciding every promotion once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from optuna.trial import TrialState
from safetensors.torch import load_file

from search import StudySpec, api, attrs, create_or_load_study, run_workers
from search.errors import SpecError
from search.execution.worker import work
from search.results.selection import best_trial
from search.store.artifacts import artifact_store
from search.strategy.schedulers import scheduler_for
from tests.search.conftest import small_study, write_study
from tests.search.execution.test_distributed import assert_exact
from trainer import TrainConfig, prepare, train

ROOT = Path(__file__).resolve().parents[3]
PROMOTION = {"rungs": [1280], "eta": 3}
FP32 = {"amp": "off", "channels_last": "off"}


def _study(tmp: Path, name: str, **overrides: Any) -> dict[str, Any]:
    raw = small_study(name, tmp, train=FP32, promotion=PROMOTION,
                      budget={"n_trials": 3, "trial_images": 640, "eval_every_images": 320})
    raw.update(overrides)
    return raw


@pytest.mark.parametrize(("promotion", "message"), [
    ({"rungs": [640]}, "promotion.rungs: must increase from budget.trial_images (640)"),
    ({"rungs": [1000]}, "promotion.rungs: each must be a multiple of budget.eval_every_images (320)"),
    ({"rungs": []}, "promotion.rungs: must be a non-empty list"),
    ({"rungs": [1280], "eta": 1}, "promotion.eta: must be an int >= 2"),
    ({"rungs": [1280], "etta": 3}, "promotion.etta: unknown key"),
])
def test_bad_promotion_settings_are_one_line_errors(tmp_path: Path, promotion: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        StudySpec.from_dict(_study(tmp_path, "bad", promotion=promotion))


def test_promotion_refuses_pbt_and_several_objectives(tmp_path: Path) -> None:
    pbt = {"name": "pbt", "population": 2, "interval_images": 320}
    with pytest.raises(SpecError, match="promotion: cannot be combined with scheduler: pbt"):
        StudySpec.from_dict(_study(tmp_path, "pbt", scheduler=pbt, space={"lr_g": {"type": "float", "low": 1e-4,
                                                                                     "high": 1e-3}}))
    with pytest.raises(SpecError, match="promotion: ranks a rung by one objective"):
        StudySpec.from_dict(_study(tmp_path, "multi", objective=["fid", "recall"], pruner={"name": "none"},
                                   train={**FP32, "eval_metric": "fid", "feature_net": "domain"}))


def _generator_of(trial: optuna.trial.FrozenTrial, store: Any, tmp: Path) -> dict[str, torch.Tensor]:
    path = tmp / f"g-{trial.number}.safetensors"
    with store.open_reader(trial.user_attrs[attrs.GENERATOR_ARTIFACT]) as src:
        path.write_bytes(src.read())
    return load_file(str(path))


def _assert_equals_an_uninterrupted_run(study: optuna.Study, spec: StudySpec, tmp: Path) -> optuna.trial.FrozenTrial:
    """The one continuation: rung 1, its parent the best of rung 0, its curve the parent's then its own, and its
    generator the one an uninterrupted run of the same config to the top rung ends with."""
    trials = study.get_trials()
    continued = [t for t in trials if attrs.CONTINUES in t.user_attrs]
    assert len(continued) == 1
    cont = continued[0]
    rung0 = sorted((t for t in trials if t.user_attrs.get(attrs.RUNG, 0) == 0 and t.state == TrialState.COMPLETE),
                   key=lambda t: float(t.value))  # type: ignore[arg-type]
    parent = trials[cont.user_attrs[attrs.CONTINUES]]
    assert parent.number == rung0[0].number and cont.params == parent.params
    assert cont.state == TrialState.COMPLETE and cont.user_attrs[attrs.RUNG] == 1
    assert cont.user_attrs[attrs.PROMOTION] == {"rung": 1, "rank": 1, "of": 3, "top": 1, "value": parent.value,
                                                "cutoff": parent.value}
    assert sorted(cont.intermediate_values) == [320, 640, 960, 1280]  # one curve across the rungs
    assert [h["mark"] for h in cont.user_attrs[attrs.LOSSES]] == [320, 640, 960, 1280]
    assert {k: cont.intermediate_values[k] for k in (320, 640)} == dict(parent.intermediate_values)
    cfg = TrainConfig.from_dict(cont.user_attrs[attrs.CONFIG])
    assert cfg.budget_images == 1280 and cfg.seed == parent.user_attrs[attrs.SEED]
    store = artifact_store(spec.artifacts)
    whole = train(cfg, data=prepare(cfg).data)
    expected = {k: v for k, v in whole.generator.state_dict().items()}
    got = _generator_of(cont, store, tmp)
    assert got and set(got) == set(expected)
    for key, value in got.items():
        torch.testing.assert_close(value, expected[key], rtol=1e-5, atol=1e-6)
    assert best_trial(study).number == cont.number  # the production-budget run is what export takes
    return cont


def test_a_continued_trial_equals_an_uninterrupted_run_on_the_same_worker(tmp_path: Path) -> None:
    result = api.run(write_study(tmp_path, _study(tmp_path, "same")))
    spec = StudySpec.from_dict(_study(tmp_path, "same"))
    assert len(result.study.trials) == 4 and result.summary()["states"] == {"COMPLETE": 4}
    cont = _assert_equals_an_uninterrupted_run(result.study, spec, tmp_path)
    assert "rung 1: continues trial" in scheduler_for(spec).describe(cont)
    shown = api.status("same", spec.storage)["promotions"]
    assert shown == {cont.number: {"continues": cont.user_attrs[attrs.CONTINUES], **cont.user_attrs[attrs.PROMOTION]}}


def test_a_continued_trial_equals_an_uninterrupted_run_on_another_worker(tmp_path: Path) -> None:
    """Rung 0 runs in this process (a worker that takes only enqueued trials: it never promotes); the promotion and
    the continuation happen in another process, `gan-search worker`, which reads the checkpoint from the store."""
    warm = [{"lr_g": lr, "loss": "bce"} for lr in (2e-4, 4e-4, 8e-4)]
    raw = _study(tmp_path, "other", warm_start=warm)
    spec = StudySpec.from_file(write_study(tmp_path, raw))
    scheduler_for(spec).plan(create_or_load_study(spec), spec.n_trials)
    assert work("other", spec.storage, new_trials=False).trials == 3
    study = optuna.load_study(study_name="other", storage=spec.storage)
    assert len(study.trials) == 3 and all(t.user_attrs.get(attrs.RUNG_CHECKPOINT) for t in study.trials)
    proc = subprocess.run([sys.executable, "-m", "search.cli", "worker", "other", "--storage", spec.storage],
                          cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    study = optuna.load_study(study_name="other", storage=spec.storage)
    cont = _assert_equals_an_uninterrupted_run(study, spec, tmp_path)
    assert cont.user_attrs[attrs.DEVICE] and "promoted to rung 1" in proc.stderr


@pytest.mark.slow
def test_a_worker_killed_during_a_continuation_loses_nothing(tmp_path: Path, postgres_url: str) -> None:
    """The continuation's worker is SIGKILLed after its first evaluation past the rung; another worker fails it as
    stale and its retry resumes from the continuation's own checkpoint: one continuation, complete, the curve
    whole."""
    raw = _study(tmp_path, "killcont", promotion={"rungs": [16000], "eta": 3},
                 budget={"n_trials": 3, "trial_images": 640, "eval_every_images": 320})
    raw["storage"].update(url=postgres_url, grace_period=4)
    spec = StudySpec.from_file(write_study(tmp_path, raw))
    scheduler_for(spec).plan(create_or_load_study(spec), spec.n_trials)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    victim = subprocess.Popen([sys.executable, "-m", "search.cli", "worker", "killcont", "--storage", postgres_url],
                              cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    study = optuna.load_study(study_name="killcont", storage=postgres_url)
    deadline, target = time.time() + 180, None
    while time.time() < deadline and target is None:
        for t in study.get_trials(states=(TrialState.RUNNING,)):
            if attrs.CONTINUES in t.user_attrs and len(t.user_attrs.get(attrs.LOSSES, [])) >= 4:
                target = t.number  # two evaluations past the rung: it has a checkpoint of its own
        time.sleep(0.1)
    assert target is not None, victim.stderr.read().decode()[-2000:] if victim.poll() is not None else "no progress"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    run_workers("killcont", postgres_url, 1)
    trials = study.get_trials()
    continuations = [t for t in trials if attrs.CONTINUES in t.user_attrs]
    assert len({t.user_attrs[attrs.CONTINUES] for t in continuations}) == 1  # promoted once
    done = [t for t in continuations if t.state == TrialState.COMPLETE]
    assert len(done) == 1 and done[0].user_attrs[attrs.RESUMED_FROM] == target
    assert sorted(done[0].intermediate_values) == list(range(320, 16001, 320))
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]


@pytest.mark.slow
def test_four_workers_on_postgres_promote_each_trial_once_and_by_the_rule(tmp_path: Path, postgres_url: str) -> None:
    """9 trials, eta 3, two rungs above the trial budget: every promotion is decided once under the study lock,
    none is lost, each decision ranks its trial within the top 1/eta of what its rung had completed, and at the
    end every trial in the final top 1/eta of a rung has been promoted."""
    raw = _study(tmp_path, "asha4", promotion={"rungs": [1280, 1920], "eta": 3}, sampler={"name": "random", "seed": 1},
                 budget={"n_trials": 9, "trial_images": 640, "eval_every_images": 320})
    raw["storage"]["url"] = postgres_url
    spec = StudySpec.from_file(write_study(tmp_path, raw))
    scheduler_for(spec).plan(create_or_load_study(spec), spec.n_trials)
    run_workers("asha4", postgres_url, 4)
    study = optuna.load_study(study_name="asha4", storage=postgres_url)
    trials = study.get_trials()
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING, TrialState.FAIL)]
    continued = [t for t in trials if attrs.CONTINUES in t.user_attrs]
    parents = [t.user_attrs[attrs.CONTINUES] for t in continued]
    assert len(parents) == len(set(parents))  # no trial promoted twice
    assert sum(attrs.CONTINUES not in t.user_attrs for t in trials) == 9  # the plan, exactly
    for t in continued:
        d, parent = t.user_attrs[attrs.PROMOTION], trials[t.user_attrs[attrs.CONTINUES]]
        assert d["rung"] == parent.user_attrs[attrs.RUNG] + 1 == t.user_attrs[attrs.RUNG]
        assert d["value"] == parent.value and 1 <= d["rank"] <= d["top"] == d["of"] // 3
        assert d["cutoff"] >= d["value"]  # minimised: the parent is no worse than the rung's cutoff then
    for rung in (0, 1):
        at_rung = sorted((t for t in trials if t.user_attrs.get(attrs.RUNG) == rung), key=lambda t: float(t.value))
        assert {t.number for t in at_rung[:len(at_rung) // 3]} <= set(parents), rung
    assert [t for t in trials if t.user_attrs.get(attrs.RUNG) == 2]  # the production budget was reached
    assert_exact(postgres_url, "asha4", len(trials))


def test_racing_drops_a_finalist_that_cannot_win_on_a_scripted_objective() -> None:
    """Scripted values per (config, seed): config 1 is clearly worse (dropped once the noise is measured), config 2
    is within the noise of the leader (it keeps racing); before any config has two seeds nobody is dropped."""
    from search.results.selection import seed_noise, still_racing

    script = {0: [10.0, 10.6, 9.4], 1: [14.0, 14.5, 13.5], 2: [10.5, 10.1, 10.9]}
    first = {c: v[:1] for c, v in script.items()}
    assert seed_noise(first) is None and still_racing(first, 1.0, None) == [0, 2, 1]
    two = {c: v[:2] for c, v in script.items()}
    noise = seed_noise(two)
    assert noise is not None and 0.2 < noise < 0.6
    assert still_racing(two, 1.0, noise) == [0, 2]  # 1 is behind by ~4, ten standard errors
    assert still_racing(two, -1.0, noise) == [1]  # maximised, 1 leads and the rest are out
    assert still_racing({0: [1.0, 1.2], 1: [1.15]}, 1.0, 0.0) == [0]  # zero noise: any gap drops


def test_the_export_races_the_finalists_and_trains_none_again(tmp_path: Path) -> None:
    """6 trials, eta 3: 2 reach the production budget by continuation; the export gives fresh seeds while a finalist
    can still win (at most 3 runs each), records the race with its measured noise, and exports the winner's best
    run; the finalists' own runs are not retrained (their seeds are not among the fresh ones)."""
    raw = _study(tmp_path, "race", budget={"n_trials": 6, "trial_images": 640, "eval_every_images": 320},
                 export={"seeds": 3})
    result = api.run(write_study(tmp_path, raw), export_to=tmp_path / "best")
    study = result.study
    race = study.user_attrs[attrs.CONFIRMATIONS][-1]
    assert race["race"] is True and race["images"] == 1280
    rows = race["rows"]
    finals = [t for t in study.trials if t.user_attrs.get(attrs.RUNG) == 1]
    assert sorted(r["trial"] for r in rows) == sorted(t.number for t in finals) and len(rows) == 2
    for row in rows:
        assert row["runs"][0] == row["trial"] and 1 <= len(row["runs"]) <= 3
        assert row["seeds"][0] == 0 and all(s >= 10_000 for s in row["seeds"][1:])  # fresh seeds only
    winner = rows[0]
    assert winner["raced_out_after"] is None and winner["mean"] <= min(r["mean"] for r in rows)
    exported = __import__("json").loads((tmp_path / "best" / "metrics.json").read_text())
    assert exported["trial"] == winner["export_run"]
    assert exported["value"] == min(winner["seed_values"])
    retrains = [t for t in study.trials if attrs.CONFIRM in t.user_attrs]
    assert len(retrains) == sum(len(r["runs"]) - 1 for r in rows)
