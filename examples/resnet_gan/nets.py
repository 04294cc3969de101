"""``arch: examples.resnet_gan.nets:build``: a residual generator and discriminator with an ``extra.depth`` knob."""

from __future__ import annotations

import torch
from torch import nn

from trainer import Generator, TrainConfig


class ResBlock(nn.Module):
    def __init__(self, channels: int, norm: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(channels, channels, 3, 1, 1)]
        if norm:
            layers.append(nn.BatchNorm2d(channels))
        layers += [nn.LeakyReLU(0.2), nn.Conv2d(channels, channels, 3, 1, 1)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.5 * self.body(x)


class ResGenerator(Generator):
    """z -> (B, C, S, S) in [-1, 1]: project to S/4, ``depth`` residual blocks per scale, two upsamplings."""

    def __init__(self, latent_dim: int, width: int, depth: int, shape: tuple[int, int, int]) -> None:
        super().__init__()
        c, size, _ = shape
        if size % 4:
            raise ValueError(f"ResGenerator needs an image side divisible by 4, but got {size=}.")
        self.latent_dim, self.width, self.s0 = latent_dim, width, size // 4
        self.project = nn.Linear(latent_dim, width * self.s0 * self.s0)  # (B, w*s0*s0)
        stages: list[nn.Module] = []
        for _ in range(2):  # (B, w, s, s) -> (B, w, 2s, 2s)
            stages += [*(ResBlock(width, norm=True) for _ in range(depth)), nn.Upsample(scale_factor=2)]
        stages += [nn.Conv2d(width, c, 3, 1, 1), nn.Tanh()]  # (B, C, S, S)
        self.body = nn.Sequential(*stages)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(self.project(z).view(-1, self.width, self.s0, self.s0))


class ResDiscriminator(nn.Module):
    """(B, C, S, S) -> (B,) logits: ``depth`` residual blocks per scale, two stride-2 downsamplings."""

    def __init__(self, width: int, depth: int, shape: tuple[int, int, int]) -> None:
        super().__init__()
        c, size, _ = shape
        layers: list[nn.Module] = [nn.Conv2d(c, width, 3, 1, 1), nn.LeakyReLU(0.2)]
        for _ in range(2):  # (B, w, s, s) -> (B, w, s/2, s/2)
            layers += [*(ResBlock(width, norm=False) for _ in range(depth)), nn.Conv2d(width, width, 4, 2, 1),
                       nn.LeakyReLU(0.2)]
        layers += [nn.Flatten(), nn.Linear(width * (size // 4) ** 2, 1)]  # (B, 1)
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).view(-1)


def build(cfg: TrainConfig, shape: tuple[int, int, int]) -> tuple[ResGenerator, ResDiscriminator]:
    """The arch contract: (generator, discriminator) for images of ``shape``; reads ``extra.depth`` (default 1)."""
    depth = int(cfg.extra.get("depth", 1))
    if depth < 0:
        raise ValueError(f"extra.depth must be >= 0, but got {depth=}.")
    return ResGenerator(cfg.latent_dim, cfg.g_width, depth, shape), ResDiscriminator(cfg.d_width, depth, shape)
