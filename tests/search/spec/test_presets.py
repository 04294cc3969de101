"""Warm-start presets: a study names published settings; it gets the searched keys, validated like plain values."""

from __future__ import annotations

from pathlib import Path

import pytest

from search import StudySpec, create_or_load_study, plan, run_workers
from search.spec.presets import WARM_STARTS
from search.spec.study_file import SpecError
from tests.search.conftest import small_study

# a plug-in's preset, named by import path in a study file
MINE = {"lr_g": 3e-4, "loss": "hinge", "batch_size": 16}


def test_a_preset_gives_the_searched_keys_and_overrides_win(tmp_path: Path) -> None:
    raw = small_study("presets", tmp_path, warm_start=["pytorch-dcgan", {"preset": "sngan", "lr_g": 5e-4},
                                                       "tests.search.spec.test_presets:MINE"])
    spec = StudySpec.from_dict(raw)
    # the space searches lr_g and loss only: the presets' other settings (batch 64, betas...) are not enqueued
    assert spec.warm_start == ({"lr_g": 2e-4, "loss": "bce"}, {"lr_g": 5e-4, "loss": "hinge"},
                               {"lr_g": 3e-4, "loss": "hinge"})
    study = create_or_load_study(spec)
    assert plan(study, spec.n_trials, spec.warm_start) == 3
    run_workers(spec.name, spec.storage, 1)
    trials = sorted(study.get_trials(), key=lambda t: t.number)
    assert [t.params for t in trials] == list(spec.warm_start)
    assert [t.user_attrs["config"]["batch_size"] for t in trials] == [32, 32, 32]  # train: fixes it


def test_a_preset_keeps_the_train_values_of_searched_keys_it_does_not_set(tmp_path: Path) -> None:
    """A preset is one config: searched keys it does not name (augmentation, widths) keep the study's ``train:``
    values where the space allows them, instead of being sampled around it; a value the space cannot propose is
    left to the sampler. Plain values keep Optuna's enqueue semantics (the rest sampled)."""
    raw = small_study("preset-whole", tmp_path, warm_start=["stylegan2", {"lr_g": 5e-4}],
                      space={"augment": ["", "translation"], "g_width": [8, 16], "d_width": [16, 32],
                             "lr_g": {"type": "float", "low": 1e-4, "high": 3e-3, "log": True}})
    spec = StudySpec.from_dict(raw)
    assert spec.warm_start[0] == {"lr_g": 2e-3, "loss": "bce", "augment": "", "g_width": 8}  # d_width 8: not a choice
    assert spec.warm_start[1] == {"lr_g": 5e-4}
    study = create_or_load_study(spec)
    assert plan(study, spec.n_trials, spec.warm_start) == 2
    run_workers(spec.name, spec.storage, 1, new_trials=False)
    first = min(study.get_trials(), key=lambda t: t.number)
    assert first.user_attrs["config"]["augment"] == "" and first.user_attrs["config"]["g_width"] == 8
    assert first.params["d_width"] in (16, 32)  # sampled: train's 8 is not in the space


def test_a_preset_that_sets_no_searched_key_is_refused(tmp_path: Path) -> None:
    raw = small_study("nokeys", tmp_path, warm_start=[{"preset": "pytorch-dcgan", "n_critic": 1},
                                                      "tests.search.spec.test_presets:MINE"])
    raw["space"] = {"n_critic": {"type": "int", "low": 1, "high": 2}}  # small_study would merge, not replace
    with pytest.raises(SpecError, match=r"warm_start\[1\]\.preset: 'tests.search.spec.test_presets:MINE' sets none of "
                                        r"the searched keys \(n_critic\)"):
        StudySpec.from_dict(raw)


def test_the_registry_checks_what_it_receives() -> None:
    with pytest.raises(ValueError, match="already registered"):
        WARM_STARTS.register("stylegan2")({"lr_g": 1e-3})
    with pytest.raises(TypeError, match="does not fit"):
        WARM_STARTS.register("typo")({"learning_rate": 1e-3})
    with pytest.raises(TypeError, match="does not fit"):
        WARM_STARTS.register("empty")({})
    assert "typo" not in WARM_STARTS.names() and "empty" not in WARM_STARTS.names()


def test_the_shipped_studies_start_from_presets() -> None:
    """Every shipped DCGAN study starts from pytorch/examples' DCGAN settings, resolved within its space."""
    for name in ("mnist-dcgan", "fashion-mnist", "fashion-mnist-gpu", "stacked-mnist", "stacked-mnist-gpu", "cifar10-dcgan"):
        spec = StudySpec.from_file(Path(__file__).parents[3] / "studies" / f"{name}.yaml")
        first = spec.warm_start[0]
        assert first["lr_g"] == first["lr_d"] == 2e-4 and first["beta1"] == 0.5 and first["loss"] == "bce", name
