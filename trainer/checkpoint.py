"""Training checkpoints: a plain dict (config, counters, history, weights, optimiser states, RNG streams) written
atomically; read with ``weights_only=True``; resumed by copying a whitelist of keys onto a run whose config
matches (rates, budget and schedules may change)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from trainer.config import SCHEDULABLE, TrainConfig
from trainer.errors import ConfigError
from trainer.io import CHECKPOINT_FILE

if TYPE_CHECKING:
    from trainer.step import Modules, RunState


def save_checkpoint(path: Path, run: RunState, nets: Modules) -> None:
    """A plain dict: config, counters, history, weights, optimiser states and RNG streams (written atomically)."""
    state = {
        "config": run.cfg.to_dict(), "step": run.step, "images_seen": run.images_seen, "eval_index": run.eval_index,
        "seconds": run.seconds, "history": run.history,
        "gen": nets.g.state_dict(), "disc": nets.d.state_dict(),
        "ema": nets.ema.state_dict() if nets.ema is not None else None,
        "opt_g": nets.opt_g.state_dict(), "opt_d": nets.opt_d.state_dict(),
        "rng": run.rng.get_state(), "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # a kill mid-write leaves the previous checkpoint intact


def read_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """The checkpoint's dict (tensors only: ``weights_only``); an unreadable file is a one-line ``ConfigError``."""
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise ConfigError(f"checkpoint {path} does not exist.") from None
    except Exception as exc:  # truncated, corrupt, not a checkpoint: torch raises many kinds
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ConfigError(f"checkpoint {path} is unreadable (truncated or not a checkpoint: "
                          f"{type(exc).__name__}: {first[:160]}).") from None
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise ConfigError(f"checkpoint {path} is not a gan-search checkpoint (missing {', '.join(missing)}).")
    return state  # type: ignore[no-any-return]


CHECKPOINT_KEYS = ("config", "step", "images_seen", "eval_index", "seconds", "history", "gen", "disc", "ema",
                   "opt_g", "opt_d", "rng", "torch_rng", "cuda_rng")


def load_checkpoint(path: Path, run: RunState, nets: Modules, device: torch.device) -> None:
    """Resume ``run`` and ``nets`` from ``path``: the config must match (rates and budget may change)."""
    state = read_checkpoint(path, device)
    saved = TrainConfig.from_dict(state["config"])
    cfg = run.cfg
    ignore = {"budget_images", "device", "data_root", "schedules", *SCHEDULABLE}  # rates may change between runs
    diff = sorted(k for k, v in saved.to_dict().items() if k not in ignore and getattr(cfg, k) != v)
    if diff:
        raise ConfigError(f"checkpoint {path} was made with another config (differs in {', '.join(diff)}).")
    nets.g.load_state_dict(state["gen"])
    nets.d.load_state_dict(state["disc"])
    if nets.ema is not None:
        nets.ema.load_state_dict(state["ema"])
    nets.opt_g.load_state_dict(state["opt_g"])
    nets.opt_d.load_state_dict(state["opt_d"])
    run.rng.set_state(state["rng"].cpu())
    torch.set_rng_state(state["torch_rng"].cpu())
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])
    run.step, run.images_seen, run.eval_index = int(state["step"]), int(state["images_seen"]), int(state["eval_index"])
    run.seconds, run.history = float(state["seconds"]), list(state["history"])
    run.resync()


__all__ = ["CHECKPOINT_KEYS", "load_checkpoint", "read_checkpoint", "save_checkpoint"]
