"""Names of a package that load on first use (PEP 562), so that importing a light module of a group does not
import torch through its siblings."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def exports(package: str, where: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that loads ``name`` from ``package.<where[name]>``
    (an empty module name: ``name`` is the submodule itself)."""

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        if not where[name]:
            return importlib.import_module(f"{package}.{name}")
        return getattr(importlib.import_module(f"{package}.{where[name]}"), name)

    return __getattr__


__all__ = ["exports"]
