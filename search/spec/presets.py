"""Warm-start presets: published GAN settings a study file names instead of copying numbers.

``warm_start: [pytorch-dcgan, stylegan2]`` enqueues each preset's values for the keys the study searches
(the others stay as the study's ``train:`` fixes them); ``{preset: stylegan2, ema_decay: 0.9999}`` overrides
some. A plug-in registers its own (``WARM_STARTS.register("mine")({"lr_g": 1e-3, ...})``) or is named by import
path (``warm_start: [pkg.module:SETTINGS]``). Values are the papers' own, not tuned here.
"""

from __future__ import annotations

from search.registries import WARM_STARTS

WARM_STARTS.register("pytorch-dcgan")({  # pytorch/examples dcgan/main.py: BCE, Adam 2e-4, beta1 0.5, batch 64,
    # batch norm in the discriminator after every conv but the first
    "loss": "bce", "lr_g": 2e-4, "lr_d": 2e-4, "beta1": 0.5, "beta2": 0.999, "batch_size": 64, "n_critic": 1,
    "spectral_norm": False, "r1_weight": 0.0, "ema_decay": 0.0, "d_norm": "batch", "d_mbstd": False})
WARM_STARTS.register("article-mlp")({  # the origin article's MLP GAN on MNIST: BCE, Adam 2e-4, batch 256
    "loss": "bce", "lr_g": 2e-4, "lr_d": 2e-4, "beta1": 0.5, "beta2": 0.999, "batch_size": 256, "n_critic": 1,
    "ema_decay": 0.0})
WARM_STARTS.register("sngan")({  # Miyato et al. 2018, standard CNN, setting C: hinge, spectral norm, n_dis 1
    "loss": "hinge", "lr_g": 2e-4, "lr_d": 2e-4, "beta1": 0.5, "beta2": 0.999, "batch_size": 64, "n_critic": 1,
    "spectral_norm": True, "r1_weight": 0.0, "ema_decay": 0.0})
WARM_STARTS.register("sagan")({  # Zhang et al. 2019: hinge, spectral norm, two time-scale rates, Adam(0, 0.9)
    "loss": "hinge", "lr_g": 1e-4, "lr_d": 4e-4, "beta1": 0.0, "beta2": 0.9, "batch_size": 256, "n_critic": 1,
    "spectral_norm": True, "r1_weight": 0.0, "ema_decay": 0.0})
WARM_STARTS.register("wgan-gp")({  # Gulrajani et al. 2017, Algorithm 1: lr 1e-4, Adam(0, 0.9), 5 critic steps
    "loss": "wgan-gp", "gp_weight": 10.0, "lr_g": 1e-4, "lr_d": 1e-4, "beta1": 0.0, "beta2": 0.9, "batch_size": 64,
    "n_critic": 5, "spectral_norm": False, "ema_decay": 0.0})
WARM_STARTS.register("stylegan2")({  # Karras et al. 2020, config F: non-saturating loss + R1 10, Adam 2e-3,
    # betas (0, 0.99), minibatch 32, generator EMA (its 10k-image half-life is ~0.9978 at batch 32: 0.999 here),
    # minibatch standard deviation in D (groups of 4)
    "loss": "bce", "lr_g": 2e-3, "lr_d": 2e-3, "beta1": 0.0, "beta2": 0.99, "batch_size": 32, "n_critic": 1,
    "spectral_norm": False, "r1_weight": 10.0, "ema_decay": 0.999, "d_mbstd": True})

__all__ = ["WARM_STARTS"]
