"""The shared GAN trainer: one training loop for search trials and production runs (no Optuna here)."""

from trainer.config import TrainConfig, parse_overrides
from trainer.data import ImageData, load_data
from trainer.errors import ConfigError, DataError, Diverged, GanSearchError
from trainer.io import load_generator, save_generator, save_grid
from trainer.loop import EvalEvent, Prepared, TrainResult, prepare, resolve_device, train
from trainer.losses import GANLoss
from trainer.metrics import evaluate, make_evaluator
from trainer.models import Generator, build_discriminator, build_generator, build_models
from trainer.registry import ARCHS, DATASETS, LOSSES

__all__ = [
    "ARCHS", "DATASETS", "LOSSES", "ConfigError", "DataError", "Diverged", "EvalEvent", "GANLoss", "GanSearchError",
    "Generator", "ImageData", "Prepared", "TrainConfig", "TrainResult", "build_discriminator", "build_generator",
    "build_models", "evaluate", "load_data", "load_generator", "make_evaluator", "parse_overrides", "prepare",
    "resolve_device", "save_generator", "save_grid", "train",
]
