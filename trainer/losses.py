"""GAN losses on discriminator logits, and the gradient penalties."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from trainer.config import TrainConfig
from trainer.registry import LOSSES

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# ---- discriminator losses: (real logits, fake logits) -> scalar
def d_bce(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return F.softplus(-real).mean() + F.softplus(fake).mean()  # = BCE(real, 1) + BCE(fake, 0)


def d_hinge(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


def d_wasserstein(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return fake.mean() - real.mean()


def d_least_squares(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((real - 1.0) ** 2).mean() + 0.5 * (fake**2).mean()


# ---- generator losses: fake logits -> scalar
def g_bce(fake: torch.Tensor) -> torch.Tensor:
    return F.softplus(-fake).mean()  # non-saturating: BCE(fake, 1)


def g_mean(fake: torch.Tensor) -> torch.Tensor:
    return -fake.mean()  # hinge and WGAN


def g_least_squares(fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((fake - 1.0) ** 2).mean()


class GANLoss:
    """A GAN objective: the D loss, the G loss and any penalty it needs; built as ``Loss(cfg)``.

    ``d_loss(real_logits, fake_logits)`` and ``g_loss(fake_logits)`` take float logits of shape (B,);
    ``penalty(disc, real, fake, rng)`` returns a scalar added to the D loss (or None), and may call ``disc``
    again (gradient penalties). A plug-in loss need not subclass this: the three methods suffice.
    """

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg

    def d_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def g_loss(self, fake: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def penalty(self, disc: nn.Module, real: torch.Tensor, fake: torch.Tensor,
                rng: torch.Generator | None) -> torch.Tensor | None:
        return None


@LOSSES.register("bce")
class NonSaturatingLoss(GANLoss):
    def d_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return d_bce(real, fake)

    def g_loss(self, fake: torch.Tensor) -> torch.Tensor:
        return g_bce(fake)


@LOSSES.register("hinge")
class HingeLoss(GANLoss):
    def d_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return d_hinge(real, fake)

    def g_loss(self, fake: torch.Tensor) -> torch.Tensor:
        return g_mean(fake)


@LOSSES.register("wgan-gp")
class WassersteinGPLoss(GANLoss):
    def d_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return d_wasserstein(real, fake)

    def g_loss(self, fake: torch.Tensor) -> torch.Tensor:
        return g_mean(fake)

    def penalty(self, disc: nn.Module, real: torch.Tensor, fake: torch.Tensor,
                rng: torch.Generator | None) -> torch.Tensor | None:
        return self.cfg.gp_weight * gradient_penalty(disc, real.detach(), fake, rng)


@LOSSES.register("wgan")
class WassersteinLoss(GANLoss):
    """The Wasserstein critic loss without a gradient penalty (pair it with spectral_norm for the Lipschitz bound)."""

    def d_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return d_wasserstein(real, fake)

    def g_loss(self, fake: torch.Tensor) -> torch.Tensor:
        return g_mean(fake)


@LOSSES.register("lsgan")
class LeastSquaresLoss(GANLoss):
    def d_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return d_least_squares(real, fake)

    def g_loss(self, fake: torch.Tensor) -> torch.Tensor:
        return g_least_squares(fake)


def build_loss(cfg: TrainConfig) -> GANLoss:
    """The loss object of ``cfg.loss`` (a registered name or a plug-in class)."""
    return LOSSES.get(cfg.loss)(cfg)  # type: ignore[no-any-return]


def gradient_penalty(disc: nn.Module, real: torch.Tensor, fake: torch.Tensor,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """WGAN-GP: (||grad D(x_hat)|| - 1)^2 on random interpolates of real and fake."""
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device, generator=generator)
    x_hat = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(disc(x_hat).sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1.0) ** 2).mean()


def r1_penalty(real_logits: torch.Tensor, real: torch.Tensor, index: int | None = None) -> torch.Tensor:
    """R1: ||grad D(x)||^2 on real images (``real`` must require grad); ``index``: run ``index`` of a stack of runs."""
    (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
    return (grad if index is None else grad[index]).pow(2).flatten(1).sum(1).mean()
