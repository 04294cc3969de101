"""``loss: examples.resnet_gan.losses:RelativisticLoss``: a loss plug-in (relativistic average GAN, RaGAN)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from trainer.losses import GANLoss


class RelativisticLoss(GANLoss):
    """RaGAN (Jolicoeur-Martineau 2018): D judges whether real is more realistic than the average fake.

    The generator loss only sees fake logits here (the trainer's contract), so it uses the running mean of
    the real logits seen in the last discriminator step.
    """

    real_mean = 0.0

    def d_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        self.real_mean = float(real.detach().mean())
        return F.softplus(-(real - fake.mean())).mean() + F.softplus(fake - real.mean()).mean()

    def g_loss(self, fake: torch.Tensor) -> torch.Tensor:
        return F.softplus(-(fake - self.real_mean)).mean()
