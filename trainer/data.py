"""Datasets decoded once into tensors in [-1, 1] on the training device, with a deterministic split."""

from __future__ import annotations

import gzip
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from trainer.config import TrainConfig
from trainer.errors import ConfigError, DataError
from trainer.registry import DATASETS

log = logging.getLogger(__name__)

SPLIT_SEED = 20240101  # the held-out split is part of the dataset definition, not of the run's seed
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


@dataclass(frozen=True)
class ImageData:
    """Images (N, C, H, W) in [-1, 1] and integer labels (N,) (-1 where unknown)."""

    train: torch.Tensor
    train_labels: torch.Tensor
    holdout: torch.Tensor
    holdout_labels: torch.Tensor
    fingerprint: str  # identifies the exact pixels of both splits (for caches)
    channel_classes: int = 0  # K > 0: each channel holds one of K classes and a label is their base-K code (modes)

    @property
    def shape(self) -> tuple[int, int, int]:
        c, h, w = self.train.shape[1:]
        return int(c), int(h), int(w)

    @property
    def num_classes(self) -> int:
        return int(self.train_labels.max().item()) + 1 if self.train_labels.numel() else 0

    def to(self, device: torch.device | str) -> ImageData:
        return ImageData(self.train.to(device), self.train_labels.to(device), self.holdout.to(device),
                         self.holdout_labels.to(device), self.fingerprint, self.channel_classes)


# ---------------------------------------------------------------- readers (uint8 arrays, N x H x W [x C])
def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (MNIST format), gzip-compressed or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file.")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{path}: header says {dims} but holds {data.size} values.")
    return data.reshape(dims)


def _find_idx(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def load_idx_folder(folder: Path) -> tuple[list[tuple[np.ndarray, np.ndarray]], bool]:
    """Load the MNIST-format splits found in ``folder``; returns ([(images, labels)...], has_official_split)."""
    splits = []
    for prefix in ("train", "t10k"):
        images = _find_idx(folder, f"{prefix}-images-idx3-ubyte")
        labels = _find_idx(folder, f"{prefix}-labels-idx1-ubyte")
        if images is not None:
            x = read_idx(images)
            y = read_idx(labels) if labels is not None else np.full(len(x), -1, dtype=np.int64)
            splits.append((x, y.astype(np.int64)))
    return splits, len(splits) == 2


TORCHVISION = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "cifar10": "CIFAR10"}
# where a system package installs a dataset (Debian's dataset-fashion-mnist): read when no data_root is given
SYSTEM_FOLDERS: dict[str, list[Path]] = {"fashion-mnist": [Path("/usr/share/datasets/fashion-mnist")]}


def _idx_candidates(root: Path, dataset: str) -> list[Path]:
    return [root, root / TORCHVISION.get(dataset, "") / "raw"]


def _root(cfg: TrainConfig) -> Path:
    """``data_root``, or where no data_root is given, the first system folder holding the dataset's files."""
    if cfg.data_root:
        return Path(cfg.data_root)
    for folder in SYSTEM_FOLDERS.get(cfg.dataset, []):  # the files' presence, not their ~30 MB decoded twice
        if _find_idx(folder, "train-images-idx3-ubyte") is not None:
            return folder
    return Path("data")


@DATASETS.register("mnist")
@DATASETS.register("fashion-mnist")
@DATASETS.register("cifar10")
def _load_torchvision(cfg: TrainConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """mnist/fashion-mnist/cifar10: IDX/pickle files under data_root, downloaded by torchvision if asked. Without a
    data_root, fashion-mnist is read where Debian's ``dataset-fashion-mnist`` installs it (the official split)."""
    root = _root(cfg)
    if cfg.dataset != "cifar10":
        for folder in _idx_candidates(root, cfg.dataset):
            splits, official = load_idx_folder(folder)
            if splits:
                if official:
                    (xtr, ytr), (xte, yte) = splits
                    return xtr, ytr, xte, yte
                return _split(*splits[0], cfg.holdout_fraction)
    import torchvision.datasets as tvd

    cls = getattr(tvd, TORCHVISION[cfg.dataset])
    try:
        train = cls(str(root), train=True, download=cfg.download)
        test = cls(str(root), train=False, download=cfg.download)
    except RuntimeError as exc:
        where = " or ".join(str(p) for p in _idx_candidates(root, cfg.dataset))
        if cfg.dataset == "cifar10":
            where = str(root / "cifar-10-batches-py")
        raise DataError(
            f"dataset {cfg.dataset!r} not found under {where} ({exc}); set download: true (needs internet) "
            f"or place the files there (data_root={str(root)!r})."
        ) from None
    return (np.asarray(train.data), np.asarray(train.targets), np.asarray(test.data), np.asarray(test.targets))


STACKED_TRAIN, STACKED_HOLDOUT = 25600, 10000  # per split, each image from 3 digits of that split (25,600: VEEGAN/PacGAN)


@DATASETS.register("stacked-mnist")
def _load_stacked_mnist(cfg: TrainConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, int]]:
    """Stacked MNIST (Metz et al. 2017, 3.3.1; VEEGAN; PacGAN): three MNIST digits drawn independently as the R, G
    and B channels of one image, so 1000 modes (digit triples). Built from the MNIST files under data_root (each
    split from its own digits, deterministic from SPLIT_SEED); the label is the triple's code 100*r + 10*g + b,
    used by the metrics only (the networks stay unconditional unless ``classes`` asks)."""
    xtr, ytr, xte, yte = _load_torchvision(cfg.replace(dataset="mnist"))
    rng = np.random.default_rng(SPLIT_SEED)

    def stack(x: np.ndarray, y: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        pick = rng.integers(0, len(x), size=(n, 3))
        return np.stack([x[pick[:, c]] for c in range(3)], axis=-1), (y[pick] * np.array([100, 10, 1])).sum(1)

    (str_x, str_y), (ste_x, ste_y) = stack(xtr, ytr, STACKED_TRAIN), stack(xte, yte, STACKED_HOLDOUT)
    return str_x, str_y, ste_x, ste_y, {"channel_classes": 10}


def _split(x: np.ndarray, y: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    order = np.random.default_rng(SPLIT_SEED).permutation(len(x))
    n_hold = max(1, int(round(len(x) * fraction)))
    hold, train = order[:n_hold], order[n_hold:]
    return x[train], y[train], x[hold], y[hold]


@DATASETS.register("digits")
def _load_digits(cfg: TrainConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.clip(digits.images * (255.0 / 16.0), 0, 255).round().astype(np.uint8)
    return _split(images, digits.target.astype(np.int64), cfg.holdout_fraction)


@DATASETS.register("folder")
def _load_folder(cfg: TrainConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """An image folder: every image below data_root; the first-level subfolder names are the labels."""
    from PIL import Image

    root = Path(cfg.data_root or "")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under data_root={str(root)!r}.")
    classes = sorted({p.relative_to(root).parts[0] for p in files if len(p.relative_to(root).parts) > 1})
    first = Image.open(files[0])
    mode = "L" if first.mode in ("L", "1", "I", "I;16") else "RGB"
    size = cfg.image_size or first.size[0]
    arrays, labels = [], []
    for p in files:
        with Image.open(p) as im:
            arrays.append(np.asarray(im.convert(mode).resize((size, size), Image.Resampling.BILINEAR)))
        parts = p.relative_to(root).parts
        labels.append(classes.index(parts[0]) if len(parts) > 1 else -1)
    return _split(np.stack(arrays), np.asarray(labels, dtype=np.int64), cfg.holdout_fraction)


def _to_tensor(x: np.ndarray, size: int) -> torch.Tensor:
    t = torch.from_numpy(np.array(x, copy=True))
    t = t.unsqueeze(1) if t.ndim == 3 else t.permute(0, 3, 1, 2)  # (N, C, H, W)
    t = t.float().div(127.5).sub(1.0)
    if size and size != t.shape[-1]:
        t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True).clamp(-1, 1)
    return t.contiguous()


@DATASETS.register("idx")
def _load_idx(cfg: TrainConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A folder of MNIST-format files; without both official splits, one is split by SPLIT_SEED."""
    splits, official = load_idx_folder(Path(cfg.data_root or ""))
    if not splits:
        raise DataError(f"no MNIST-format files (train-/t10k-images-idx3-ubyte[.gz]) in data_root={cfg.data_root!r}.")
    if official:
        (xtr, ytr), (xte, yte) = splits
        return xtr, ytr, xte, yte
    return _split(*splits[0], cfg.holdout_fraction)


def _images(x: Any, size: int, what: str) -> torch.Tensor:
    """uint8 arrays (N, H, W[, C]) or float tensors (N, C, H, W) in [-1, 1] -> float tensors (N, C, H, W)."""
    if isinstance(x, np.ndarray) and x.dtype == np.uint8 and x.ndim in (3, 4):
        return _to_tensor(x, size)
    if isinstance(x, torch.Tensor) and x.is_floating_point() and x.ndim == 4:
        t = x.detach().float().cpu().contiguous()
        if float(t.min()) < -1.0001 or float(t.max()) > 1.0001:
            raise ConfigError(f"dataset: {what} images must lie in [-1, 1], but range over "
                              f"[{float(t.min()):.3g}, {float(t.max()):.3g}].")
        if size and size != t.shape[-1]:
            t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True).clamp(-1, 1)
        return t
    shape = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
    raise ConfigError(f"dataset: {what} images must be uint8 arrays (N, H, W[, C]) or float tensors (N, C, H, W) in "
                      f"[-1, 1], but got {shape}.")


def _labels(y: Any, n: int, what: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y).long().cpu()
    if t.shape != (n,):
        raise ConfigError(f"dataset: {what} labels must have shape ({n},), but got {tuple(t.shape)}.")
    return t


def check_labels(cfg: TrainConfig, data: ImageData) -> None:
    """A class-conditional config (``classes > 0``) needs a label in 0..classes-1 on every training image, and the
    labels' count of classes to be ``classes``."""
    if not cfg.classes:
        return
    labels = data.train_labels
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high + 1 != cfg.classes:
        found = "unlabelled images (label -1)" if low < 0 else f"labels {low}..{high} ({high + 1} classes)"
        raise DataError(f"classes={cfg.classes} needs training labels 0..{cfg.classes - 1}, but dataset="
                        f"{cfg.dataset!r} has {found}; set classes: {0 if low < 0 else high + 1}.")


def load_data(cfg: TrainConfig, device: torch.device | str = "cpu") -> ImageData:
    """Decode the dataset of ``cfg`` (a registered name or a plug-in) once into tensors on ``device``."""
    try:
        loaded: Any = DATASETS.get(cfg.dataset)(cfg)
    except (ConfigError, DataError):
        raise
    except Exception as exc:
        if ":" not in cfg.dataset:  # a built-in's own bug is not the user's input
            raise
        raise ConfigError(f"dataset={cfg.dataset!r} failed while loading: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    meta: dict[str, Any] = {}
    if isinstance(loaded, tuple) and len(loaded) == 5 and isinstance(loaded[4], dict):  # (..., {"channel_classes": K})
        loaded, meta = loaded[:4], loaded[4]
    if not (isinstance(loaded, tuple) and len(loaded) == 4):
        raise ConfigError(f"dataset={cfg.dataset!r} must return (train, train_labels, holdout, holdout_labels), "
                          f"but returned {type(loaded).__name__}.")
    channel_classes = int(meta.get("channel_classes", 0))
    train = _images(loaded[0], cfg.image_size, "train")
    holdout = _images(loaded[2], cfg.image_size, "held-out")
    if train.shape[1:] != holdout.shape[1:] or len(train) < 2 or len(holdout) < 2:
        raise ConfigError(f"dataset={cfg.dataset!r}: train {tuple(train.shape)} and held-out {tuple(holdout.shape)} "
                          "need >= 2 images each, of one shape.")
    ytr, yte = _labels(loaded[1], len(train), "train"), _labels(loaded[3], len(holdout), "held-out")
    digest = hashlib.sha256()  # of the loader's own output, so that a cache key survives a change of conversion
    for part in loaded:
        digest.update(part.detach().cpu().numpy().tobytes() if isinstance(part, torch.Tensor)
                      else np.ascontiguousarray(part).tobytes())
    digest.update(str(cfg.image_size).encode())
    data = ImageData(train, ytr, holdout, yte, digest.hexdigest()[:16], channel_classes)
    check_labels(cfg, data)
    log.info("dataset %s: %d train / %d held-out images of shape %s", cfg.dataset, len(data.train),
             len(data.holdout), data.shape)
    return data.to(device)
