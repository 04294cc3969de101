"""The exponential moving average of the generator's weights, with its warm-up (``train`` and packs alike)."""

from __future__ import annotations

import copy
from typing import Any

import torch


def ema_decay_at(decay: float, updates: int, warmup: bool = True) -> float:
    """The EMA decay at update ``updates`` (0-based): ``min(decay, (1 + t) / (10 + t))`` with the warm-up, else
    ``decay``."""
    return min(decay, (1 + updates) / (10 + updates)) if warmup else decay


def ema_weight(decay: float, updates: int, warmup: bool = True) -> float:
    """The weight of the new value at EMA update ``updates``: ``1 - ema_decay_at(decay, updates, warmup)``."""
    return 1.0 - ema_decay_at(decay, updates, warmup)


class EMA:
    """Exponential moving average of the generator's weights, with a warm-up.

    The decay at update ``t`` (0-based) is ``min(decay, (1 + t) / (10 + t))``: the average follows the
    generator closely at first and reaches ``decay`` only after about ``10 / (1 - decay)`` updates, so an
    EMA generator is never judged on its initial weights (a plain EMA with decay 0.999 still holds ~37%
    of the initial weights after 1,000 steps). ``warmup=False`` (``TrainConfig.ema_warmup``) is that plain EMA.
    """

    def __init__(self, model: torch.nn.Module, decay: float, warmup: bool = True) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), but got {decay=}.")
        self.decay, self.warmup = decay, warmup
        self.module = copy.deepcopy(model).requires_grad_(False)
        self.updates = 0

    def current_decay(self) -> float:
        return ema_decay_at(self.decay, self.updates, self.warmup)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        ema_params: list[torch.Tensor] = list(self.module.parameters())
        params: list[torch.Tensor] = list(model.parameters())
        torch._foreach_lerp_(ema_params, params, ema_weight(self.decay, self.updates, self.warmup))
        for ema_buf, buf in zip(self.module.buffers(), model.buffers(), strict=True):
            ema_buf.copy_(buf)
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])


__all__ = ["EMA", "ema_decay_at", "ema_weight"]
