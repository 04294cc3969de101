"""Differentiable augmentation (DiffAugment, Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN
Training"): the same random transforms applied to the real and the generated images the discriminator sees, in its
steps and in the generator's, differentiable so that the generator learns through them. On small training sets
(an 8k-image split) it keeps the discriminator from memorising the reals.

``augment: "color,translation,cutout"`` (the paper's choice for small data) in a TrainConfig; each transform draws
from the run's own random stream, so a run replays and a pack's member trains as it would alone. Written after the
authors' PyTorch version (github.com/mit-han-lab/data-efficient-gans, ``DiffAugment_pytorch.py``), with the random
draws taken from a ``torch.Generator``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from trainer.config import AUGMENTS, augment_policy


def _uniform(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return torch.rand(x.shape[0], 1, 1, 1, device=x.device, generator=g, dtype=torch.float32).to(x.dtype)


def brightness(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return x + (_uniform(x, g) - 0.5)


def saturation(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (_uniform(x, g) * 2) + mean


def contrast(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * (_uniform(x, g) + 0.5) + mean


def translation(x: torch.Tensor, g: torch.Generator, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to ``ratio`` of its size in each direction, filling with zeros."""
    b, _, h, w = x.shape
    sx, sy = int(h * ratio + 0.5), int(w * ratio + 0.5)
    tx = torch.randint(-sx, sx + 1, size=(b, 1, 1), device=x.device, generator=g)
    ty = torch.randint(-sy, sy + 1, size=(b, 1, 1), device=x.device, generator=g)
    gb, gx, gy = torch.meshgrid(torch.arange(b, device=x.device), torch.arange(h, device=x.device),
                                torch.arange(w, device=x.device), indexing="ij")
    gx = torch.clamp(gx + tx + 1, 0, h + 1)
    gy = torch.clamp(gy + ty + 1, 0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1])
    return padded.permute(0, 2, 3, 1).contiguous()[gb, gx, gy].permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, g: torch.Generator, ratio: float = 0.5) -> torch.Tensor:
    """Zero one square of ``ratio`` of the image's side per image, at a random place."""
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ox = torch.randint(0, h + (1 - ch % 2), size=(b, 1, 1), device=x.device, generator=g)
    oy = torch.randint(0, w + (1 - cw % 2), size=(b, 1, 1), device=x.device, generator=g)
    gb, gx, gy = torch.meshgrid(torch.arange(b, device=x.device), torch.arange(ch, device=x.device),
                                torch.arange(cw, device=x.device), indexing="ij")
    gx = torch.clamp(gx + ox - ch // 2, min=0, max=h - 1)
    gy = torch.clamp(gy + oy - cw // 2, min=0, max=w - 1)
    mask = torch.ones(b, h, w, dtype=x.dtype, device=x.device)
    mask[gb, gx, gy] = 0
    return x * mask.unsqueeze(1)


POLICIES: dict[str, list[Callable[[torch.Tensor, torch.Generator], torch.Tensor]]] = {
    "color": [brightness, saturation, contrast],
    "translation": [translation],
    "cutout": [cutout],
}
assert tuple(POLICIES) == AUGMENTS, "TrainConfig's AUGMENTS names these transforms"


def augment(x: torch.Tensor, policy: str, g: torch.Generator) -> torch.Tensor:
    """``x`` (B, C, H, W) through the transforms of ``policy`` in its order, drawing from ``g``."""
    for name in augment_policy(policy):
        for fn in POLICIES[name]:
            x = fn(x, g)
    return x


__all__ = ["POLICIES", "augment", "brightness", "contrast", "cutout", "saturation", "translation"]
