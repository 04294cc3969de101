from __future__ import annotations

import pytest
import torch

from trainer import TrainConfig, build_discriminator, build_generator


@pytest.mark.parametrize("size", [8, 16, 28, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_dcgan_shapes(size: int, channels: int) -> None:
    cfg = TrainConfig(arch="dcgan", g_width=8, d_width=8, latent_dim=16, spectral_norm=True)
    gen, disc = build_generator(cfg, (channels, size, size)), build_discriminator(cfg, (channels, size, size))
    images = gen(torch.randn(3, 16)).detach()
    assert images.shape == (3, channels, size, size)
    assert float(images.abs().max()) <= 1.0
    assert disc(images).shape == (3,)


def test_mlp_is_the_articles_fixed_network() -> None:
    cfg = TrainConfig(arch="mlp", latent_dim=100, g_width=64, d_width=64)
    gen, disc = build_generator(cfg, (1, 28, 28)), build_discriminator(cfg, (1, 28, 28))
    widths = [m.out_features for m in gen.modules() if isinstance(m, torch.nn.Linear)]
    assert widths == [256, 512, 1024, 784]
    assert isinstance(list(gen.modules())[-1], torch.nn.Tanh)
    assert not any(isinstance(m, torch.nn.Sigmoid) for m in disc.modules())  # logits, not probabilities
    assert gen.sample(5).shape == (5, 1, 28, 28)
