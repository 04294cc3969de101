"""The samplers, pruners and warm-start presets a study file may name; the built-ins register themselves in
``search/strategy/samplers.py``, ``search/strategy/pruners.py`` and ``search/spec/presets.py``.

A factory takes the study spec and the file's ``args`` mapping and returns the Optuna object; a plug-in
registers the same way (``@SAMPLERS.register("mine")``) or is named by import path (``name: pkg.mod:make``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from trainer.config import TrainConfig
from trainer.registry import Registry


def _is_preset(obj: Any) -> bool:
    """A warm-start preset: a non-empty mapping of TrainConfig field names to values."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(k, str) and k in fields for k in obj)


SAMPLERS: Registry[Callable[..., Any]] = Registry("sampler", callable, "search.strategy.samplers")
PRUNERS: Registry[Callable[..., Any]] = Registry("pruner", callable, "search.strategy.pruners")
WARM_STARTS: Registry[Mapping[str, Any]] = Registry("warm_start preset", _is_preset, "search.spec.presets")

__all__ = ["PRUNERS", "SAMPLERS", "WARM_STARTS"]
