"""The shared GAN trainer: one training loop for search trials and production runs (no Optuna here).

The names below load on first use (PEP 562): ``trainer.config`` and ``trainer.registry`` import without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_WHERE = {
    "TrainConfig": "config", "parse_overrides": "config", "ImageData": "data", "load_data": "data",
    "ConfigError": "errors", "DataError": "errors", "Diverged": "errors", "GanSearchError": "errors",
    "load_generator": "io", "save_generator": "io", "save_grid": "io", "TrainResult": "loop", "resolve_device": "loop",
    "train": "loop", "GANLoss": "losses", "make_evaluator": "metrics", "Generator": "models",
    "build_discriminator": "models", "build_generator": "models", "build_models": "models", "ARCHS": "registry",
    "DATASETS": "registry", "LOSSES": "registry", "Prepared": "run", "evaluate": "run", "prepare": "run",
    "EvalEvent": "step",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'trainer' has no attribute {name!r}")
    return getattr(importlib.import_module(f"trainer.{_WHERE[name]}"), name)


if TYPE_CHECKING:
    from trainer.config import TrainConfig, parse_overrides
    from trainer.data import ImageData, load_data
    from trainer.errors import ConfigError, DataError, Diverged, GanSearchError
    from trainer.io import load_generator, save_generator, save_grid
    from trainer.loop import TrainResult, resolve_device, train
    from trainer.losses import GANLoss
    from trainer.metrics import make_evaluator
    from trainer.models import Generator, build_discriminator, build_generator, build_models
    from trainer.registry import ARCHS, DATASETS, LOSSES
    from trainer.run import Prepared, evaluate, prepare
    from trainer.step import EvalEvent

__all__ = [
    "ARCHS", "ConfigError", "DATASETS", "DataError", "Diverged", "EvalEvent", "GANLoss", "GanSearchError",
    "Generator", "ImageData", "LOSSES", "Prepared", "TrainConfig", "TrainResult", "build_discriminator",
    "build_generator", "build_models", "evaluate", "load_data", "load_generator", "make_evaluator",
    "parse_overrides", "prepare", "resolve_device", "save_generator", "save_grid", "train",
]
