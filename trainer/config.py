"""TrainConfig: every hyperparameter and the budget of one training run, frozen and validated."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from trainer.errors import ConfigError

# What each evaluation measures beside fid/kid (trainer.metrics): all higher-is-better
COVERAGE_METRICS = ("precision", "recall", "density", "coverage", "class_min_share", "class_entropy", "modes", "mode_kl")
MODE_METRICS = ("modes", "mode_kl")  # where each channel holds a class (stacked-mnist): distinct triples, KL to the data

Metric = Literal["fid", "kid", "none"]
FeatureNet = Literal["domain", "inception"]
Switch = Literal["auto", "on", "off"]
DNorm = Literal["none", "batch", "layer"]
SWITCHES = ("amp", "channels_last")  # the Switch fields

DCGAN_SIZES = (8, 16, 28, 32, 64)
AUGMENTS = ("color", "translation", "cutout")  # DiffAugment's transforms (trainer/augment.py)


def augment_policy(augment: str) -> tuple[str, ...]:
    """``"color,translation"`` -> ("color", "translation"); "" -> () (no augmentation)."""
    return tuple(p.strip() for p in augment.split(",") if p.strip())


@dataclass(frozen=True)
class TrainConfig:
    # --- data ---
    dataset: str = "digits"  # a registered dataset (digits: offline, the default) or a plug-in 'pkg.module:load'
    data_root: str | None = None  # folder of the dataset files (mnist/fashion-mnist/cifar10/idx/folder)
    download: bool = False  # download torchvision datasets into data_root when missing
    image_size: int = 0  # side in pixels after resizing; 0 keeps the dataset's own size
    holdout_fraction: float = 0.2  # share of images held out for evaluation where no test split exists
    # --- models ---
    arch: str = "dcgan"  # mlp (the article's, fixed), dcgan (conv), or a plug-in 'pkg.module:build'
    latent_dim: int = 64  # size of the noise vector z
    g_width: int = 32  # generator base width (mlp: hidden = 4w, 8w, 16w; dcgan: channels)
    d_width: int = 32  # discriminator base width
    spectral_norm: bool = False  # spectral normalisation on every discriminator layer
    d_norm: DNorm = "none"  # dcgan discriminator normalisation after each conv but the first: batch (pytorch/examples), layer
    d_mbstd: bool = False  # dcgan D sees its batch's spread (minibatch std, Karras et al. 2018): against dropped modes
    d_pack: int = 1  # PacGAN (Lin et al. 2018): dcgan D judges d_pack samples at once, stacked as channels; 1: off
    classes: int = 0  # > 0: class-conditional dcgan over labels 0..classes-1 (G: one-hot beside z, D: projection); 0: off
    augment: str = ""  # DiffAugment for D's inputs, real and fake alike: any of color, translation, cutout ("": off)
    # --- objective ---
    loss: str = "bce"  # bce (non-saturating), hinge, wgan-gp, lsgan, or a plug-in 'pkg.module:LossClass'
    gp_weight: float = 10.0  # gradient-penalty weight (wgan-gp only)
    r1_weight: float = 0.0  # R1 penalty weight on real images; 0 turns it off
    # --- optimisation ---
    lr_g: float = 2e-4  # Adam learning rate of the generator
    lr_d: float = 2e-4  # Adam learning rate of the discriminator
    beta1: float = 0.5  # Adam beta1 for both networks
    beta2: float = 0.999  # Adam beta2 for both networks
    batch_size: int = 64  # images per discriminator step
    n_critic: int = 1  # discriminator steps per generator step
    ema_decay: float = 0.0  # EMA decay of the generator weights; 0 turns EMA off
    ema_warmup: bool = True  # the decay ramps up as min(ema_decay, (1 + t) / (10 + t)); false: ema_decay from step 0
    # --- budget and evaluation ---
    seed: int = 0  # seeds weights, noise and batch order
    budget_images: int = 100_000  # real images shown to the discriminator before training stops
    eval_every_images: int = 25_000  # evaluate (and checkpoint) every this many images
    eval_metric: Metric = "fid"  # metric computed at each evaluation
    eval_samples: int = 1000  # generated (and at most held-out real) images per evaluation
    share_samples: int = 0  # generated images the class shares are counted on (domain classifier); 0: eval_samples
    feature_net: FeatureNet = "domain"  # feature network of FID/KID
    feature_weights: str | None = None  # Inception weights file (feature_net=inception); None downloads
    # --- hardware ---
    device: str = "auto"  # auto (cuda if present, else cpu), cpu, cuda, cuda:N
    amp: Switch = "auto"  # bf16 autocast: auto = timed against fp32 once per machine and shape (trainer.precision)
    channels_last: Switch = "auto"  # channels_last memory format (conv nets): auto = timed likewise
    # --- plug-ins ---
    extra: dict[str, Any] = field(default_factory=dict)  # free-form settings passed to plug-ins (searchable: extra.KEY)
    # --- schedules (population-based training replays them) ---
    schedules: dict[str, Any] = field(default_factory=dict)  # {field: [[images, value], ...]} piecewise constant

    def __post_init__(self) -> None:
        for name in SWITCHES:  # YAML 1.1 reads on/off (and yes/no, true/false) as booleans: take them as on/off
            if isinstance(getattr(self, name), bool):
                object.__setattr__(self, name, "on" if getattr(self, name) else "off")
        for f in dataclasses.fields(self):
            _check_type(f.name, getattr(self, f.name), _hints()[f.name])
        from trainer.registry import ARCHS, DATASETS, LOSSES

        for registry in (DATASETS, ARCHS, LOSSES):
            registry.validate(getattr(self, registry.kind))
        for key, value in self.extra.items():
            if not isinstance(key, str) or not key.isidentifier():
                raise ConfigError(f"extra keys must be identifiers, but got extra key {key!r}.")
            if not isinstance(value, (str, int, float, bool, list, type(None))):
                raise ConfigError(f"extra.{key} must be a YAML scalar or list, but got {type(value).__name__}.")
        _check_schedules(self)
        _positive(self, "latent_dim", "g_width", "d_width", "batch_size", "n_critic", "budget_images",
                  "eval_every_images", "eval_samples", "lr_g", "lr_d")
        _nonnegative(self, "gp_weight", "r1_weight", "seed")
        if not 0.0 < self.holdout_fraction < 1.0:
            raise ConfigError(f"holdout_fraction must be in (0, 1), but got holdout_fraction={self.holdout_fraction!r}.")
        for name in ("beta1", "beta2", "ema_decay"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), but got {name}={value!r}.")
        if self.image_size < 0:
            raise ConfigError(f"image_size must be >= 0 (0 keeps the dataset's size), but got image_size={self.image_size}.")
        if self.arch == "dcgan" and self.image_size not in (0, *DCGAN_SIZES):
            raise ConfigError(f"image_size must be one of {DCGAN_SIZES} for arch='dcgan', but got image_size={self.image_size}.")
        if self.d_norm != "none" and self.arch == "mlp":
            raise ConfigError(f"d_norm must be 'none' for arch='mlp' (the article's discriminator is fixed), "
                              f"but got d_norm={self.d_norm!r}.")
        if self.d_mbstd and self.arch == "mlp":
            raise ConfigError("d_mbstd must be false for arch='mlp' (the article's discriminator is fixed), "
                              f"but got d_mbstd={self.d_mbstd!r}.")
        if self.d_pack < 1:
            raise ConfigError(f"d_pack must be >= 1 (1: off), but got d_pack={self.d_pack}.")
        if self.d_pack > 1:
            if self.arch != "dcgan":
                raise ConfigError(f"d_pack > 1 (a packing discriminator) needs arch='dcgan', but got arch={self.arch!r}.")
            if self.batch_size % self.d_pack:
                raise ConfigError(f"batch_size must be a multiple of d_pack={self.d_pack} (D judges packs of "
                                  f"d_pack images), but got batch_size={self.batch_size}.")
            if self.classes:
                raise ConfigError(f"d_pack must be 1 with classes > 0 (a pack's images have labels of their own), but "
                                  f"got d_pack={self.d_pack} with classes={self.classes}.")
            if self.loss == "wgan-gp":
                raise ConfigError(f"d_pack must be 1 with loss='wgan-gp' (its penalty interpolates single images, not "
                                  f"packs), but got d_pack={self.d_pack}.")
        if self.classes < 0 or self.classes == 1:
            raise ConfigError(f"classes must be 0 (unconditional) or >= 2 (the dataset's label count), but got "
                              f"classes={self.classes}.")
        if self.classes and self.arch != "dcgan":
            raise ConfigError(f"classes > 0 (class-conditional networks) needs arch='dcgan', but got arch={self.arch!r} "
                              f"with classes={self.classes}.")
        if self.d_norm == "batch" and (self.loss == "wgan-gp" or self.r1_weight > 0):
            raise ConfigError("d_norm='batch' mixes a batch's samples, so a gradient penalty (loss='wgan-gp', "
                              f"r1_weight > 0) is no longer per-sample: use d_norm='layer' or 'none', but got "
                              f"d_norm='batch' with loss={self.loss!r}, r1_weight={self.r1_weight!r}.")
        policy = augment_policy(self.augment)
        if any(p not in AUGMENTS for p in policy) or len(set(policy)) != len(policy):
            raise ConfigError(f"augment must be '' or a comma-separated list of {', '.join(AUGMENTS)} (each once), but "
                              f"got augment={self.augment!r}.")
        if self.eval_samples < 2:
            raise ConfigError(f"eval_samples must be >= 2, but got eval_samples={self.eval_samples}.")
        if self.share_samples and self.share_samples < self.eval_samples:
            raise ConfigError(f"share_samples must be 0 (eval_samples) or >= eval_samples={self.eval_samples}, but got "
                              f"share_samples={self.share_samples}.")
        if self.dataset in ("idx", "folder") and not self.data_root:
            raise ConfigError(f"data_root is required for dataset={self.dataset!r}.")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, but got device={self.device!r}.")

    # ---- derived values ----
    def at(self, images: int) -> TrainConfig:
        """This config with every scheduled field at its value after ``images`` real images (no schedules left)."""
        if not self.schedules:
            return self
        values = {name: value_at(points, images) for name, points in self.schedules.items()}
        return dataclasses.replace(self, schedules={}, **values)

    @property
    def total_steps(self) -> int:
        """Generator steps in the budget (each step shows batch_size * n_critic real images)."""
        return math.ceil(self.budget_images / (self.batch_size * self.n_critic))

    # ---- in and out ----
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str | None = None) -> TrainConfig:
        prefix = f"{source}: " if source else ""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{prefix}expected a mapping of TrainConfig fields, but got {type(data).__name__}.")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{prefix}unknown key {unknown[0]!r}; allowed keys: {', '.join(sorted(known))}.")
        data = _lift_schedules(data)
        coerced = {k: _coerce(v, _hints()[k]) for k, v in data.items()}
        try:
            return cls(**coerced)
        except ConfigError as exc:
            raise ConfigError(f"{prefix}{exc}") from None

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], overrides: Iterable[str] = ()) -> TrainConfig:
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"config file {str(path)!r} cannot be read: {exc.strerror}.") from None
        try:
            data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (yaml.YAMLError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: not valid YAML/JSON ({str(exc).splitlines()[0]}).") from None
        data = dict(data or {})
        data.update(parse_overrides(overrides))
        return cls.from_dict(data, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | os.PathLike[str]) -> None:
        path = Path(path)
        text = json.dumps(self.to_dict(), indent=2) if path.suffix == ".json" else self.to_yaml()
        path.write_text(text)

    def replace(self, **changes: Any) -> TrainConfig:
        return self.from_dict({**self.to_dict(), **changes})


SCHEDULABLE = ("lr_g", "lr_d", "beta1", "beta2", "n_critic", "gp_weight", "r1_weight")  # may change mid-run


def value_at(points: list[list[Any]], images: int) -> Any:
    """The value of a piecewise-constant schedule ``[[0, v0], [i1, v1], ...]`` after ``images`` images."""
    value = points[0][1]
    for start, v in points:
        if images >= start:
            value = v
    return value


def _lift_schedules(data: Mapping[str, Any]) -> dict[str, Any]:
    """``lr_g: {schedule: [[0, 2e-4], [64000, 1e-4]]}`` -> ``lr_g: 2e-4`` plus ``schedules: {lr_g: [...]}``."""
    out = dict(data)
    schedules = dict(out.get("schedules") or {})
    for name in SCHEDULABLE:
        value = out.get(name)
        if isinstance(value, Mapping):
            if set(value) != {"schedule"}:
                raise ConfigError(f"{name} must be a number or {{schedule: [[images, value], ...]}}, but got {value!r}.")
            schedules[name] = value["schedule"]
            points = value["schedule"]
            out[name] = points[0][1] if isinstance(points, list) and points and isinstance(points[0], list | tuple) \
                and len(points[0]) == 2 else None
    if schedules:
        out["schedules"] = schedules
    return out


def _check_schedules(cfg: TrainConfig) -> None:
    for name, points in cfg.schedules.items():
        if name not in SCHEDULABLE:
            raise ConfigError(f"schedules may set {', '.join(SCHEDULABLE)}, but got schedule for {name!r}.")
        ok = isinstance(points, list) and points and all(
            isinstance(p, list | tuple) and len(p) == 2 and isinstance(p[0], int) and not isinstance(p[0], bool)
            for p in points)
        if not ok:
            raise ConfigError(f"{name} schedule must be [[images, value], ...] with int images, but got {points!r}.")
        starts = [p[0] for p in points]
        if starts[0] != 0 or any(b <= a for a, b in zip(starts, starts[1:], strict=False)):
            raise ConfigError(f"{name} schedule must start at 0 images and increase, but got starts {starts}.")
        if points[0][1] != getattr(cfg, name):
            raise ConfigError(f"{name} must equal its schedule's first value {points[0][1]!r}, but got {getattr(cfg, name)!r}.")
        for start, value in points:  # each value is checked as the field itself would be
            try:
                dataclasses.replace(cfg, schedules={}, **{name: _coerce(value, _hints()[name])})
            except ConfigError as exc:
                raise ConfigError(f"{name} schedule at {start} images: {exc}") from None


def parse_overrides(overrides: Iterable[str]) -> dict[str, Any]:
    """Turn ``["lr_g=1e-3", "arch=mlp"]`` into a dict; values are parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, but got {item!r}.")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            out[key.strip()] = raw
    return out


# ---------------------------------------------------------------- validation helpers
_HINTS: dict[str, Any] = {}


def _hints() -> dict[str, Any]:
    if not _HINTS:
        _HINTS.update(typing.get_type_hints(TrainConfig))
    return _HINTS


def _describe(hint: Any) -> str:
    origin = get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(hint))
    if origin is dict:
        return "a mapping"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in get_args(hint))
    if hint is type(None):
        return "null"
    return "a " + getattr(hint, "__name__", str(hint))


def _matches(value: Any, hint: Any) -> bool:
    origin = get_origin(hint)
    if origin is Literal:
        return value in get_args(hint)
    if origin is not None and type(None) in get_args(hint):
        return any(_matches(value, a) for a in get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if origin is dict:
        return isinstance(value, dict)
    return isinstance(value, hint)


def _check_type(name: str, value: Any, hint: Any) -> None:
    if not _matches(value, hint):
        raise ConfigError(f"{name} must be {_describe(hint)}, but got {name}={value!r}.")


def _coerce(value: Any, hint: Any) -> Any:
    """Accept ints for floats (``lr_g: 1``) and numeric strings YAML left as text (``1e-3``)."""
    if hint is float and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _positive(cfg: TrainConfig, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if value <= 0:
            raise ConfigError(f"{name} must be > 0, but got {name}={value!r}.")


def _nonnegative(cfg: TrainConfig, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if value < 0:
            raise ConfigError(f"{name} must be >= 0, but got {name}={value!r}.")
