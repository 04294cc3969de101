"""Generator checkpoints (safetensors + config.yaml beside them) and sample grids."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torchvision.utils import save_image

from trainer.config import TrainConfig
from trainer.errors import ConfigError
from trainer.models import Generator, build_generator

GENERATOR_FILE = "generator.safetensors"
CONFIG_FILE = "config.yaml"
SAMPLES_FILE = "samples.png"
METRICS_FILE = "metrics.json"
CHECKPOINT_FILE = "checkpoint.pt"


def cache_dir() -> Path:
    """Where feature networks, real-image statistics and precision decisions are cached: ``$GAN_SEARCH_CACHE`` or
    ``~/.cache/gan-search`` (never the data folder, which may be read-only)."""
    return Path(os.environ.get("GAN_SEARCH_CACHE") or Path.home() / ".cache" / "gan-search")


def save_generator(gen: Generator, cfg: TrainConfig, shape: tuple[int, int, int], out_dir: str | os.PathLike[str]) -> Path:
    """Write generator weights and the config that built them; returns the weights path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in gen.state_dict().items()}
    meta = {"shape": json.dumps(list(shape)), "arch": cfg.arch, "latent_dim": str(cfg.latent_dim)}
    save_file(tensors, str(out / GENERATOR_FILE), metadata=meta)
    cfg.save(out / CONFIG_FILE)
    return out / GENERATOR_FILE


def load_generator(path: str | os.PathLike[str], device: torch.device | str = "cpu") -> Generator:
    """Rebuild a trained generator (eval mode) from a folder written by ``save_generator``."""
    folder = Path(path)
    weights, config = folder / GENERATOR_FILE, folder / CONFIG_FILE
    if not weights.is_file() or not config.is_file():
        raise ConfigError(f"{folder} must hold {GENERATOR_FILE} and {CONFIG_FILE} (a `gan-search train` output).")
    cfg = TrainConfig.from_file(config)
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as fh:
        shape = tuple(json.loads(fh.metadata()["shape"]))
    gen = build_generator(cfg, shape)  # type: ignore[arg-type]
    gen.load_state_dict(load_file(str(weights)))
    return gen.to(device).eval()


def save_grid(images: torch.Tensor, path: str | os.PathLike[str], nrow: int = 8) -> None:
    """Save images in [-1, 1] as one PNG grid."""
    save_image(images.float().cpu(), str(path), nrow=nrow, normalize=True, value_range=(-1, 1))


def write_json(path: str | os.PathLike[str], data: dict[str, Any]) -> None:
    tmp = Path(f"{path}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)
