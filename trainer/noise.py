"""The evaluation noise: a generator's fixed, seeded latent stream (``fixed_sampler``), which every FID,
precision/recall, class share and sample grid is counted on, and the ``SampleFn``/``Evaluator`` types that carry it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Protocol

import torch
from torch import nn


class SampleFn(Protocol):
    """``(n, start)`` -> images ``start .. start + n - 1`` of an evaluation's noise stream, (n, C, H, W) in [-1, 1].
    Callers stream a large count in chunks (``trainer.metrics.sampled``) by advancing ``start``; a sampler that
    ignored ``start`` would score one chunk over and over."""

    def __call__(self, n: int, start: int = 0) -> torch.Tensor: ...


Evaluator = Callable[[SampleFn], dict[str, float]]
NOISE_BLOCK = 256  # images per seeded noise block of ``fixed_sampler``


def block_seed(seed: int, block: int) -> int:
    """The 32-bit seed of noise block ``block`` of stream ``seed``, hashed from both. Not ``seed << 32 | block``: the
    CPU generator (mt19937) keeps only the low 32 bits of its seed, so every stream got the same noise."""
    return int.from_bytes(hashlib.blake2b(f"{seed}:{block}".encode(), digest_size=4).digest(), "little")


def fixed_sampler(net: nn.Module, seed: int, device: torch.device | str | None = None,
                  latent_dim: int | None = None) -> SampleFn:
    """A generator's ``SampleFn`` over a fixed noise stream: image i gets the same noise at every call (each
    evaluation scores the same latents, so marks compare like with like), distinct images get distinct noise,
    the result does not depend on how the caller chunks the stream, and no training RNG stream is touched.
    Noise comes in blocks of ``NOISE_BLOCK`` latents, block b seeded by (seed, b). ``latent_dim``: the net's own
    ``latent_dim`` unless given (a plain module that maps (N, latent_dim) noise to images)."""
    dim = int(net.latent_dim if latent_dim is None else latent_dim)  # type: ignore[arg-type]

    def noise(block: int, dev: torch.device) -> torch.Tensor:
        g = torch.Generator(device=dev).manual_seed(block_seed(seed, block))
        return torch.randn(NOISE_BLOCK, dim, device=dev, generator=g)

    @torch.no_grad()
    def sample(n: int, start: int = 0) -> torch.Tensor:
        if n < 1 or start < 0:
            raise ValueError(f"sample needs n >= 1 and start >= 0, but got {n=} and {start=}.")
        dev = torch.device(device) if device is not None else next(net.parameters()).device
        first, last = start // NOISE_BLOCK, (start + n - 1) // NOISE_BLOCK
        offset = start - first * NOISE_BLOCK
        z = torch.cat([noise(b, dev) for b in range(first, last + 1)])[offset:offset + n]
        was_training = net.training
        net.eval()
        try:
            return torch.cat([net(z[i:i + NOISE_BLOCK]).float() for i in range(0, n, NOISE_BLOCK)])
        finally:
            net.train(was_training)

    return sample


__all__ = ["NOISE_BLOCK", "Evaluator", "SampleFn", "block_seed", "fixed_sampler"]
