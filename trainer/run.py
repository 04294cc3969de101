"""Above the loop and the metrics: ``prepare`` (device, data and evaluator, once per process) and ``evaluate``
(score a saved generator folder). Nothing below imports this module, so the trainer has no import circles:
config <- models/losses/data <- step <- precision <- loop <- run, and metrics <- run."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trainer.config import TrainConfig
from trainer.data import ImageData, load_data
from trainer.errors import ConfigError
from trainer.io import CONFIG_FILE, load_generator
from trainer.loop import resolve_device
from trainer.metrics import (
    check_samples,
    class_shares,
    feature_network,
    features,
    frechet_distance,
    kernel_distance,
    make_evaluator,
    manifold_metrics,
    real_features,
    sampled,
    statistics,
)
from trainer.noise import Evaluator, fixed_sampler


@dataclass(frozen=True)
class Prepared:
    """What every run of one dataset shares: the device, the data on it, and the evaluator (None without a metric)."""

    device: torch.device
    data: ImageData
    evaluator: Evaluator | None


def prepare(cfg: TrainConfig, device: str | torch.device | None = None) -> Prepared:
    """Resolve the device, load the data onto it and build the evaluator, once per process."""
    dev = resolve_device(str(device) if device is not None else cfg.device)
    data = load_data(cfg, dev)
    return Prepared(dev, data, make_evaluator(cfg, data, dev))


def evaluate(run_dir: str | os.PathLike[str], *, metrics: tuple[str, ...] = ("fid", "kid"), samples: int | None = None,
             data_root: str | None = None, device: str | None = None) -> dict[str, Any]:
    """FID, KID, class shares and/or precision/recall/density/coverage of the generator saved in ``run_dir``
    against its dataset's held-out split (one pass)."""
    for name in metrics:
        if name not in ("fid", "kid", "classes", "coverage"):
            raise ConfigError(f"metric must be fid, kid, classes or coverage, but got {name!r}.")
    folder = Path(run_dir)
    if not (folder / CONFIG_FILE).is_file():
        raise ConfigError(f"{folder} must hold {CONFIG_FILE} and the generator (a `gan-search train` output).")
    overrides = [f"data_root={data_root}"] if data_root else []
    overrides += [f"eval_samples={samples}"] if samples is not None else []
    overrides += [f"device={device}"] if device else []
    cfg = TrainConfig.from_file(folder / CONFIG_FILE, overrides)
    setup = prepare(cfg.replace(eval_metric="none"))  # device and data; the features are scored in one pass below
    dev, data = setup.device, setup.data
    gen = load_generator(folder, dev)
    net, key = feature_network(cfg, data, dev)
    real = real_features(net, key, data, cfg.eval_samples)
    if "fid" in metrics:
        check_samples(cfg, real)
    out: dict[str, Any] = {}
    count = max(cfg.eval_samples, cfg.share_samples if "classes" in metrics else 0)
    every = features(net, sampled(fixed_sampler(gen, cfg.seed + 1, dev), count))  # the noise training's evaluations use
    fake = every[:cfg.eval_samples]
    if "classes" in metrics:
        shares = class_shares(net, every)
        out.update(class_shares=shares, class_share_min=min(shares), class_share_max=max(shares))
    if "coverage" in metrics:
        out.update(manifold_metrics(real, fake))
    if "fid" in metrics:
        out["fid"] = frechet_distance(statistics(real), statistics(fake))
    if "kid" in metrics:
        out["kid"] = kernel_distance(real, fake)
    return out


__all__ = ["Prepared", "evaluate", "prepare"]
