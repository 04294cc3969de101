"""The samplers and pruners a study file may name; the built-ins register themselves in ``search/pruners.py``.

A factory takes the study spec and the file's ``args`` mapping and returns the Optuna object; a plug-in
registers the same way (``@SAMPLERS.register("mine")``) or is named by import path (``name: pkg.mod:make``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from trainer.registry import Registry

SAMPLERS: Registry[Callable[..., Any]] = Registry("sampler", callable, "search.pruners")
PRUNERS: Registry[Callable[..., Any]] = Registry("pruner", callable, "search.pruners")

__all__ = ["PRUNERS", "SAMPLERS"]
