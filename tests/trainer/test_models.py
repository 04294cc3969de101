from __future__ import annotations

import pytest
import torch

from trainer import ConfigError, TrainConfig, build_discriminator, build_generator


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


@pytest.mark.parametrize(("d_norm", "kind"), [("batch", torch.nn.BatchNorm2d), ("layer", torch.nn.GroupNorm)])
def test_dcgan_discriminator_normalises_every_conv_but_the_first(d_norm: str, kind: type) -> None:
    """As pytorch/examples' DCGAN: conv, LeakyReLU; then conv (no bias), norm, LeakyReLU at each later stage.
    ``none`` keeps the network (and its checkpoints' keys) as before the field existed."""
    plain = build_discriminator(TrainConfig(arch="dcgan", d_width=8), (1, 32, 32))
    normed = build_discriminator(TrainConfig(arch="dcgan", d_width=8, d_norm=d_norm), (1, 32, 32))
    convs = [m for m in normed.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len([m for m in normed.modules() if isinstance(m, kind)]) == len(convs) - 1
    assert convs[0].bias is not None and all(c.bias is None for c in convs[1:])
    assert not any(isinstance(m, (torch.nn.BatchNorm2d, torch.nn.GroupNorm)) for m in plain.modules())
    assert all(".norm" not in k for k in plain.state_dict())
    x = torch.randn(4, 1, 32, 32)
    assert normed(x).shape == (4,)
    if d_norm == "layer":  # per-sample: a sample's logit does not depend on the rest of its batch
        torch.testing.assert_close(normed(x[:1]), normed(x)[:1])


def test_minibatch_std_lets_the_discriminator_see_a_batchs_spread() -> None:
    """d_mbstd: one more channel before the last layer, holding the spread of each group of 4 samples; a
    collapsed batch (every sample the same) gets ~0 there (sqrt of the 1e-8 floor), so D scores the same image
    differently in it."""
    cfg = TrainConfig(arch="dcgan", d_width=8, d_mbstd=True)
    disc = build_discriminator(cfg, (1, 28, 28))
    plain = build_discriminator(TrainConfig(arch="dcgan", d_width=8), (1, 28, 28))
    last, plain_last = [m for m in disc.modules() if isinstance(m, torch.nn.Linear)][-1], \
        [m for m in plain.modules() if isinstance(m, torch.nn.Linear)][-1]
    assert last.in_features == plain_last.in_features + 7 * 7  # (16 + 1) channels of 7x7
    x = torch.randn(8, 1, 28, 28)
    collapsed = x[:1].repeat(8, 1, 1, 1)
    with torch.no_grad():
        varied, same = disc(x), disc(collapsed)
        assert not torch.allclose(varied[0], same[0])  # the same image, scored differently beside others
        torch.testing.assert_close(same, same[:1].expand(8))
        torch.testing.assert_close(disc(x[0::2]), disc(x)[0::2])  # groups of 4: sample i groups with i mod 2
    assert disc(torch.randn(6, 1, 28, 28)).shape == (6,)  # 6 is not a multiple of 4: the whole batch is one group
    with pytest.raises(ConfigError, match="d_mbstd must be false for arch='mlp'"):
        TrainConfig(arch="mlp", d_mbstd=True)


def test_a_packing_discriminator_judges_consecutive_images_together() -> None:
    """d_pack (PacGAN): one logit per group of d_pack consecutive images, stacked as channels; a group's logit
    depends on every image of that group and on no other group; configs it cannot serve are refused by name."""
    cfg = TrainConfig(arch="dcgan", d_width=8, d_pack=2)
    disc = build_discriminator(cfg, (3, 28, 28))
    first = [m for m in disc.modules() if isinstance(m, torch.nn.Conv2d)][0]
    assert first.in_channels == 6  # two RGB images
    x = torch.randn(8, 3, 28, 28)
    with torch.no_grad():
        logits = disc(x)
        assert logits.shape == (4,)
        torch.testing.assert_close(disc(x[2:4]), logits[1:2])  # group 1 alone scores as within the batch
        changed = x.clone()
        changed[3] = torch.randn(3, 28, 28)  # the second image of group 1
        moved = disc(changed)
        assert not torch.allclose(moved[1], logits[1])
        torch.testing.assert_close(moved[[0, 2, 3]], logits[[0, 2, 3]])
    for bad, match in [(dict(d_pack=0), "d_pack must be >= 1"), (dict(d_pack=2, arch="mlp"), "d_pack > 1 .* needs arch='dcgan'"),
                       (dict(d_pack=3, batch_size=64), "batch_size must be a multiple of d_pack=3"),
                       (dict(d_pack=2, classes=10), "d_pack must be 1 with classes > 0"),
                       (dict(d_pack=2, loss="wgan-gp"), "d_pack must be 1 with loss='wgan-gp'")]:
        with pytest.raises(ConfigError, match=match):
            TrainConfig(**{"arch": "dcgan", **bad})  # type: ignore[arg-type]
