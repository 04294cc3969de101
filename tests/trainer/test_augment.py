"""Differentiable augmentation (DiffAugment): what each transform does, that it is differentiable and replays from
the run's stream, and that runs with it train (alone and in packs alike)."""

from __future__ import annotations

import pytest
import torch

from tests.trainer.test_pack import BASE, _same_run
from trainer import ConfigError, TrainConfig, load_data, train
from trainer.augment import augment, cutout, translation
from trainer.pack import train_pack


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_translation_shifts_content_and_cutout_zeroes_one_square() -> None:
    x = torch.zeros(64, 1, 16, 16)
    x[:, :, 7:9, 7:9] = 1.0  # a bright dot in the middle
    moved = translation(x, _gen())
    centres = (moved[:, 0] == 1.0).nonzero()[:, 1:].float().view(64, -1, 2).mean(1)
    assert centres.sub(7.5).abs().max() <= 2.0 and centres.std(0).min() > 0.3  # shifted by up to 16 / 8 = 2 px
    assert moved.shape == x.shape and float(moved.sum()) <= float(x.sum())  # shifted out at the border: zeros in
    ones = torch.ones(64, 3, 16, 16)
    cut = cutout(ones, _gen())
    zero_share = (cut == 0).float().mean(dim=(1, 2, 3))
    assert bool(((zero_share > 0) & (zero_share <= 0.25 + 1e-6)).all())  # one square of half the side, clipped
    assert bool((cut == 0).all(dim=1).eq((cut == 0).any(dim=1)).all())  # the same square in every channel


def test_augmentation_is_differentiable_and_replays_from_its_stream() -> None:
    x = torch.rand(8, 3, 8, 8, requires_grad=True)
    out = augment(x, "color,translation,cutout", _gen(3))
    out.sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    again = augment(x.detach(), "color,translation,cutout", _gen(3))
    assert torch.equal(out.detach(), again) and not torch.equal(again, augment(x.detach(), "color,translation,cutout",
                                                                                 _gen(4)))
    assert torch.equal(augment(x.detach(), "", _gen()), x.detach())


def test_augment_names_what_is_allowed() -> None:
    for bad in ("colour", "translation,translation", "cutout;color"):
        with pytest.raises(ConfigError, match="augment must be '' or a comma-separated list of color, translation, cutout"):
            TrainConfig(augment=bad)


@pytest.mark.parametrize("vectorise", ["off", "on"])
def test_runs_with_augmentation_train_alone_and_in_a_pack_alike(vectorise: str) -> None:
    """A member with DiffAugment (and one without, in the same pack) trains as its single run does: each draws its
    transforms from its own stream. And augmentation changes the run (it is not silently ignored)."""
    data = load_data(BASE)
    cfgs = [BASE.replace(seed=0, augment="color,translation,cutout", budget_images=32 * 20),
            BASE.replace(seed=1, augment="translation", loss="hinge", budget_images=32 * 20),
            BASE.replace(seed=2, budget_images=32 * 20)]
    singles = [train(cfg, data=data) for cfg in cfgs]
    for single, outcome in zip(singles, train_pack(cfgs, data, vectorise=vectorise), strict=True):
        assert outcome.error is None and outcome.result is not None
        _same_run(single, outcome.result)
    plain = train(cfgs[0].replace(augment=""), data=data)
    assert plain.history[-1]["losses"] != singles[0].history[-1]["losses"]
