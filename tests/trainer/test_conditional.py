"""Class-conditional networks (``classes > 0``): the label reaches both networks, sampling follows the training
split's class proportions, bad labels are refused before training, and a short run learns the classes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from trainer import ConfigError, ImageData, TrainConfig, build_discriminator, build_generator, load_data, load_generator, train
from trainer.errors import DataError
from trainer.pack import Pack
from trainer.step import RunState, SingleNets, gan_step

SG2 = dict(lr_g=2e-3, lr_d=2e-3, beta1=0.0, beta2=0.99, batch_size=32, ema_decay=0.999, amp="off", channels_last="off")


@pytest.fixture(scope="module")
def digits() -> ImageData:
    return load_data(TrainConfig())


def test_config_refuses_one_class_and_the_articles_fixed_mlp() -> None:
    with pytest.raises(ConfigError, match=r"classes must be 0 \(unconditional\) or >= 2"):
        TrainConfig(classes=1)
    with pytest.raises(ConfigError, match="classes must be 0"):
        TrainConfig(classes=-3)
    with pytest.raises(ConfigError, match="classes > 0 .* needs arch='dcgan'"):
        TrainConfig(arch="mlp", classes=10)


def test_labels_that_do_not_match_classes_are_refused_when_the_data_loads(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"classes=3 needs training labels 0..2, but dataset='digits' has labels 0..9 "
                                        r"\(10 classes\); set classes: 10"):
        load_data(TrainConfig(classes=3))
    for name in [f"{i}.png" for i in range(10)]:  # a folder of images has no labels (-1)
        from PIL import Image
        Image.new("L", (8, 8), 128).save(tmp_path / name)
    with pytest.raises(DataError, match="has unlabelled images"):
        load_data(TrainConfig(dataset="folder", data_root=str(tmp_path), image_size=8, classes=2))
    assert load_data(TrainConfig(classes=10)).num_classes == 10


def test_both_networks_read_the_label() -> None:
    cfg = TrainConfig(classes=10, g_width=8, d_width=8, latent_dim=16)
    gen, disc = build_generator(cfg, (1, 8, 8)).eval(), build_discriminator(cfg, (1, 8, 8))
    z = torch.randn(4, 16)
    with torch.no_grad():
        a, b = gen(z, torch.zeros(4, dtype=torch.long)), gen(z, torch.full((4,), 7))
        assert not torch.allclose(a, b)  # same noise, another class: another image
        assert torch.equal(gen(z), gen(z, gen.label_of(z)))  # without a label, z's own class
        x = a
        assert not torch.allclose(disc(x, torch.zeros(4, dtype=torch.long)), disc(x, torch.full((4,), 7)))
    with pytest.raises(ValueError, match="class-conditional .* pass the labels y"):
        disc(x)


def test_sampled_classes_follow_the_class_prior() -> None:
    gen = build_generator(TrainConfig(classes=4, latent_dim=8), (1, 8, 8))
    z = torch.randn(20_000, 8, generator=torch.Generator().manual_seed(0))
    uniform = torch.bincount(gen.label_of(z), minlength=4) / len(z)
    assert torch.allclose(uniform, torch.full((4,), 0.25), atol=0.015)
    gen.class_prior.copy_(torch.tensor([0.1, 0.0, 0.6, 0.3]))
    skewed = torch.bincount(gen.label_of(z), minlength=4) / len(z)
    assert skewed[1] == 0 and torch.allclose(skewed, torch.tensor([0.1, 0.0, 0.6, 0.3]), atol=0.015)


def test_a_step_needs_labels_and_packs_refuse_conditional_runs(digits: ImageData) -> None:
    cfg = TrainConfig(classes=10, g_width=8, d_width=8, latent_dim=8, batch_size=16, amp="off", channels_last="off")
    nets, run = SingleNets(cfg, digits.shape, torch.device("cpu")), RunState(cfg, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="class-conditional"):
        gan_step(nets, [run], digits.train, False)
    gan_step(nets, [run], digits.train, False, digits.train_labels)
    assert run.step == 1 and run.images_seen == 16
    assert Pack.refuses(cfg) is not None and "class-conditional" in str(Pack.refuses(cfg))


@pytest.mark.slow
def test_a_short_run_learns_the_classes_and_the_export_keeps_the_prior(digits: ImageData, tmp_path: Path) -> None:
    """After 20k images on digits, the domain classifier reads the asked-for class on most samples (1 in 10 by
    chance), and the classes of unlabelled samples come in the training split's proportions."""
    from trainer.metrics import domain_net

    cfg = TrainConfig(classes=10, budget_images=20_000, eval_every_images=20_000, eval_metric="none", **SG2)
    result = train(cfg, data=digits, out_dir=tmp_path)
    net, _ = domain_net(digits)
    wanted = torch.arange(1000) % 10
    with torch.no_grad():
        images = result.generator.sample(1000, generator=torch.Generator().manual_seed(1), labels=wanted)
        read = net.logits(images).argmax(1)
    assert (read == wanted).float().mean() > 0.6
    counts = torch.bincount(digits.train_labels, minlength=10).float()
    assert torch.allclose(result.generator.class_prior, counts / counts.sum())
    loaded = load_generator(tmp_path)
    assert torch.equal(loaded.class_prior, result.generator.class_prior)
    z = torch.randn(8, cfg.latent_dim)
    with torch.no_grad():
        assert torch.allclose(loaded(z), result.generator(z))
