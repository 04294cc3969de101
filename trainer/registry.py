"""One registry each for architectures, datasets and losses; ``"pkg.module:attr"`` plug-ins resolve through it.

Built-ins register themselves exactly as a user's plug-in would (``@ARCHS.register("dcgan")`` in
``trainer/models.py``); a config names either a registered name or an import path. Validation reads the
allowed names from here, so adding a built-in touches one module.

The contracts (small Protocols, checked where they are used):

- arch: ``build(cfg: TrainConfig, shape: (C, H, W)) -> (generator, discriminator)``; the generator has
  ``latent_dim`` and ``sample(n, device=None, generator=None)``, ``forward(z)`` gives images in [-1, 1];
  the discriminator maps images to one logit per image, shape (B,).
- dataset: ``load(cfg: TrainConfig) -> (train, train_labels, holdout, holdout_labels)``: images as uint8
  arrays (N, H, W[, C]) or float tensors (N, C, H, W) in [-1, 1]; labels as int arrays/tensors (-1 when unknown).
- loss: a class built as ``Loss(cfg)`` with ``d_loss(real_logits, fake_logits)``, ``g_loss(fake_logits)`` and
  ``penalty(disc, real, fake, rng)`` (a scalar tensor or None): see ``trainer.losses.GANLoss``.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

from trainer.errors import ConfigError

T = TypeVar("T")
_LOCK = threading.RLock()  # one for every registry: loading built-ins and reading their names


def is_import_path(name: str) -> bool:
    return ":" in name


def import_object(path: str, key: str) -> Any:
    """``"pkg.module:attr"`` -> the object; a one-line ConfigError naming ``key`` when it cannot be had."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"{key} must be a registered name or 'package.module:attribute', but got {key}={path!r}.")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or module_name
        raise ConfigError(f"{key}={path!r}: module {missing!r} is not installed; install the package that provides "
                          f"it (pip install ...) or put its folder on PYTHONPATH.") from None
    except Exception as exc:  # the user's module failed while importing
        raise ConfigError(f"{key}={path!r}: importing {module_name!r} failed: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{key}={path!r}: module {module_name!r} has no attribute {attr!r}.")
        obj = getattr(obj, part)
    return obj


class Registry(Generic[T]):
    """Names -> objects of one kind; ``get`` also resolves import paths. Checks what it receives."""

    def __init__(self, kind: str, check: Callable[[Any], bool], builtins: str) -> None:
        self.kind = kind  # the TrainConfig field it serves ("arch", "dataset", "loss")
        self._check = check
        self._builtins = builtins  # the module whose import registers the built-ins
        self._items: dict[str, T] = {}
        self._declared: set[str] | None = None
        self._loading = False
        self._loaded = False

    def _load_builtins(self) -> None:
        with _LOCK:  # threads (replay workers) may validate and build at once; the import registers re-entrantly
            if not self._loaded and not self._loading:
                self._loading = True
                try:
                    importlib.import_module(self._builtins)
                    self._loaded = True
                finally:
                    self._loading = False

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@ARCHS.register("dcgan")``. The name must be new and not look like an import path."""
        if not isinstance(name, str) or not name or is_import_path(name):
            raise ValueError(f"a {self.kind} name must be a non-empty string without ':', but got {name=}.")

        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered.")
            if not self._check(obj):
                raise TypeError(f"{self.kind} {name!r}: {obj!r} does not fit the {self.kind} contract.")
            self._items[name] = obj
            return obj

        return add

    def declared(self) -> set[str]:
        """The built-in names, read from the built-ins module's source (``X.register("name")`` calls) without
        importing it: validating a config stays cheap and torch-free (replay workers validate study files)."""
        with _LOCK:  # ast.parse is not thread-safe in CPython 3.11
            if self._declared is None:
                self._declared = self._scan()
        return self._declared

    def _scan(self) -> set[str]:
        spec = importlib.util.find_spec(self._builtins)
        source = Path(spec.origin).read_text() if spec is not None and spec.origin else ""
        return {node.args[0].value for node in ast.walk(ast.parse(source))
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "register" and len(node.args) == 1
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)}

    def names(self) -> list[str]:
        """Every name a config may use: the built-ins (declared in their module) and what was registered since."""
        return sorted(self.declared() | set(self._items))

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def validate(self, name: str) -> None:
        """Cheap check used by TrainConfig: a known name, or something shaped like an import path."""
        if is_import_path(name):
            return
        if name not in self.names():
            raise ConfigError(f"{self.kind} must be one of {', '.join(self.names())} or 'package.module:attribute', "
                              f"but got {self.kind}={name!r}.")

    def get(self, name: str) -> T:
        """The registered object, or the imported one (checked against the contract)."""
        if not is_import_path(name):
            self.validate(name)
            self._load_builtins()
            return self._items[name]
        obj = import_object(name, self.kind)
        if not self._check(obj):
            raise ConfigError(f"{self.kind}={name!r}: {type(obj).__name__} {obj!r} does not fit the {self.kind} contract "
                              "(see trainer/registry.py).")
        return obj


def _is_loss_class(obj: Any) -> bool:
    return isinstance(obj, type) and all(callable(getattr(obj, m, None)) for m in ("d_loss", "g_loss", "penalty"))


ARCHS: Registry[Callable[..., Any]] = Registry("arch", callable, "trainer.models")
DATASETS: Registry[Callable[..., Any]] = Registry("dataset", callable, "trainer.data")
LOSSES: Registry[type] = Registry("loss", _is_loss_class, "trainer.losses")

__all__ = ["ARCHS", "DATASETS", "LOSSES", "Registry", "import_object", "is_import_path"]
