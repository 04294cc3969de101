"""``dataset: examples.resnet_gan.data:load``: 16x16 shapes (square, disc, cross) drawn on the fly, labelled."""

from __future__ import annotations

import numpy as np

from trainer import TrainConfig

SIZE = 16
CLASSES = ("square", "disc", "cross")


def _draw(kind: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[:SIZE, :SIZE]
    cy, cx = rng.uniform(5, SIZE - 5, size=2)
    r = rng.uniform(2.5, 4.5)
    if kind == 0:
        mask = (abs(yy - cy) <= r) & (abs(xx - cx) <= r)
    elif kind == 1:
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    else:
        mask = ((abs(yy - cy) <= 1) & (abs(xx - cx) <= r)) | ((abs(xx - cx) <= 1) & (abs(yy - cy) <= r))
    return (mask * rng.uniform(160, 255)).astype(np.uint8)


def load(cfg: TrainConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The dataset contract: (train, train_labels, holdout, holdout_labels); ``extra.n_images`` (default 1500)."""
    n = int(cfg.extra.get("n_images", 1500))
    rng = np.random.default_rng(1234)  # the data is part of the dataset's definition, not of the run's seed
    labels = rng.integers(0, len(CLASSES), size=n)
    images = np.stack([_draw(int(k), rng) for k in labels])  # (N, 16, 16) uint8
    n_hold = max(2, int(n * cfg.holdout_fraction))
    return images[n_hold:], labels[n_hold:], images[:n_hold], labels[:n_hold]
