"""Several trials per worker as vectorised packs: recorded, pruned and retried exactly as single trials."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from search import api
from search.execution.launch import placement
from tests.search.conftest import small_study, write_study
from tests.search.execution.test_distributed import CLI, assert_exact, make_study

FP32 = {"amp": "off", "channels_last": "off"}  # packs run without channels_last: compare like with like


def _study(tmp: Path, name: str) -> Path:
    return write_study(tmp, small_study(
        name, tmp, objective="fid", train={"eval_metric": "fid", **FP32},
        budget={"n_trials": 6, "trial_images": 960, "eval_every_images": 320},
        pruner={"name": "median", "args": {"n_startup_trials": 2}}))


@pytest.mark.slow
def test_a_packed_worker_records_and_prunes_trials_as_single_trials(tmp_path: Path) -> None:
    """Random sampler, seeded per trial number: the same trials run alone and in packs of 3, side by side."""
    for sub in ("alone", "packed"):
        (tmp_path / sub).mkdir()
    alone = api.run(_study(tmp_path / "alone", "alone"))
    packed = api.run(_study(tmp_path / "packed", "packed"), pack=3)
    a, p = alone.study.get_trials(), packed.study.get_trials()
    assert len(a) == len(p) == 6
    assert {t.state for t in p} == {TrialState.COMPLETE, TrialState.PRUNED}  # the pruner acted inside packs
    for ta, tp in zip(a, p, strict=True):
        assert tp.params == ta.params and tp.state == ta.state
        assert tp.intermediate_values.keys() == ta.intermediate_values.keys()
        for mark, value in ta.intermediate_values.items():  # FID of the same weights, within float rounding
            assert tp.intermediate_values[mark] == pytest.approx(value, rel=1e-4)
        assert tp.user_attrs.get("prune_reason", "").split(":")[0] == ta.user_attrs.get("prune_reason", "").split(":")[0]
        assert [g["mark"] for g in tp.user_attrs["grids"]][-1] == [g["mark"] for g in ta.user_attrs["grids"]][-1]
        assert tp.user_attrs["precision"]["mode"] == "fp32"
        if tp.state == TrialState.COMPLETE:
            assert tp.user_attrs["generator_artifact"] and tp.user_attrs["shape"] == [1, 8, 8]


@pytest.mark.slow
def test_a_searched_arch_trains_in_packs_grouped_by_arch(tmp_path: Path) -> None:
    """space: {arch: [dcgan, mlp]}: a packed worker packs the dcgan trials (pack_key holds the arch), trains the
    MLP's alone (its dropout draws from torch's global generator), and every trial ends as it does alone."""
    from trainer import TrainConfig
    from trainer.pack import pack_key

    assert pack_key(TrainConfig(arch="dcgan")) != pack_key(TrainConfig(arch="mlp"))
    runs = {}
    for sub in ("alone", "packed"):
        (tmp_path / sub).mkdir()
        path = write_study(tmp_path / sub, small_study(
            sub, tmp_path / sub, train=FP32, space={"arch": ["dcgan", "mlp"], "lr_g": {"type": "float", "low": 1e-4,
                                                                                      "high": 1e-3, "log": True}},
            sampler={"name": "random", "seed": 1}, budget={"n_trials": 5, "trial_images": 640, "eval_every_images": 320}))
        runs[sub] = api.run(path, pack=4 if sub == "packed" else 1).study.get_trials()
    assert {t.params["arch"] for t in runs["packed"]} == {"dcgan", "mlp"}
    for ta, tp in zip(runs["alone"], runs["packed"], strict=True):
        assert tp.params == ta.params and tp.state == ta.state == TrialState.COMPLETE
        assert tp.value == pytest.approx(ta.value, rel=1e-4)


@pytest.mark.slow
def test_a_killed_packed_worker_has_each_member_retried_from_its_checkpoint(tmp_path: Path, postgres_url: str) -> None:
    make_study(tmp_path, postgres_url, "packkill", budget={"n_trials": 2, "trial_images": 16000,
                                                            "eval_every_images": 1600}, train=FP32)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    victim = subprocess.Popen([*CLI, "worker", "packkill", "--storage", postgres_url, "--pack", "2"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    study = optuna.load_study(study_name="packkill", storage=postgres_url)
    deadline = time.time() + 120
    running: list[optuna.trial.FrozenTrial] = []
    while time.time() < deadline:
        running = study.get_trials(states=(TrialState.RUNNING,))
        if len(running) == 2 and all(len(t.user_attrs.get("loss_history", [])) >= 2 for t in running):
            break  # both members mid-trial, each with a checkpoint artifact
        if victim.poll() is not None:
            raise AssertionError(victim.stderr.read().decode() if victim.stderr else "worker exited")
        time.sleep(0.2)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed = sorted(t.number for t in running)
    assert len(killed) == 2

    api.work("packkill", postgres_url, pack=2)  # waits out the grace period, fails both, retries both in a pack
    trials = assert_exact(postgres_url, "packkill", 2)
    for number in killed:
        assert trials[number].state == TrialState.FAIL
        retry = next(t for t in trials if t.system_attrs.get("failed_trial") == number)
        assert retry.state == TrialState.COMPLETE and retry.user_attrs["resumed_from_trial"] == number
        marks = [h["mark"] for h in retry.user_attrs["loss_history"]]
        assert marks == list(range(1600, 16001, 1600))  # continued from the checkpoint, not from zero
    assert not list((tmp_path / "artifacts").glob("checkpoint-*"))


@pytest.mark.slow
def test_workers_per_device_and_pack_are_validated_before_anything_is_written(tmp_path: Path) -> None:
    study_file = write_study(tmp_path, small_study("bad", tmp_path))
    for args, message in ((["--pack", "0"], "pack must be >= 1"),
                          (["--workers-per-device", "0"], "workers_per_device must be >= 1"),
                          (["--workers", "2", "--workers-per-device", "2"], "not both")):
        proc = subprocess.run([*CLI, "run", str(study_file), *args], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert not (tmp_path / "study.db").exists() and not (tmp_path / "artifacts").exists()


def test_placement_puts_workers_per_device_on_each_gpu_in_turn() -> None:
    places = placement(4, per_device=2)
    assert len(places) == 4
    if places[0][0] != "cpu":  # on a GPU machine: two consecutive workers per card
        assert places[0][0] == places[1][0] == "cuda:0"


def test_a_packed_worker_with_free_slots_claims_once_per_interval_not_per_step(tmp_path: Path) -> None:
    """One trial of 60 generator steps, a pack of 3: once the plan is used up the two free slots asked the study lock
    (stale sweep + claim, ~8 statements) at every step; now at most once per claim interval."""
    from search import StudySpec, create_or_load_study, plan
    from search.execution.worker import claim_interval, work

    raw = small_study("poll", tmp_path, train=FP32, budget={"n_trials": 1, "trial_images": 1920,
                                                             "eval_every_images": 960})
    spec = StudySpec.from_file(write_study(tmp_path, raw))
    plan(create_or_load_study(spec), spec.n_trials)
    report = work("poll", spec.storage, pack=3)
    assert report.trials == 1
    assert len(report.claim_seconds) <= 2 + report.seconds / claim_interval(spec), (len(report.claim_seconds),
                                                                                    report.seconds)
