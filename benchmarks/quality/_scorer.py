"""The suite's independent scorer: FID, recall and coverage under a feature network the search never optimised.

The service's FID uses its domain classifier (``trainer.metrics.DomainNet``: 3x3 convolutions, batch norm, seed 0).
Judging the search's winners by the very network they were selected on would reward overfitting its features, so
the suite scores production runs with a second classifier of another architecture (5x5 convolutions, max pooling,
GELU, no batch norm, 96-d features) and another seed, trained on the training split only; the reference is the
held-out split. On data whose channels each hold a class (Stacked MNIST) it is trained on single channels and
applied to each, as the mode count is.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from trainer.data import ImageData
from trainer.metrics import channel_data, features, frechet_distance, manifold_metrics, sampled, statistics
from trainer.noise import SampleFn

SCORER_SEED = 7
SCORER_FEATURES = 96


class AltNet(nn.Module):
    """The second classifier: its penultimate layer is the scorer's feature space."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, 24, 5, 1, 2), nn.GELU(), nn.MaxPool2d(2),
            nn.Conv2d(24, 48, 5, 1, 2), nn.GELU(), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(3), nn.Flatten(), nn.Linear(48 * 9, SCORER_FEATURES), nn.Tanh(),
        )
        self.head = nn.Linear(SCORER_FEATURES, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class _ChannelAlt(nn.Module):
    def __init__(self, net: AltNet, channels: int) -> None:
        super().__init__()
        self.net, self.channels = net, channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.net(x[:, c:c + 1]) for c in range(self.channels)], dim=1)


def train_alt(data: ImageData, steps: int = 800) -> tuple[AltNet, float]:
    """The second classifier trained on ``data``'s training split; its held-out accuracy."""
    gen = torch.Generator().manual_seed(SCORER_SEED)
    torch.manual_seed(SCORER_SEED)
    x, y = data.train.cpu(), data.train_labels.cpu()
    net = AltNet(x.shape[1], int(y.max()) + 1)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    for _ in range(steps):
        idx = torch.randint(len(x), (128,), generator=gen)
        loss = F.cross_entropy(net.head(net(x[idx])), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        pred = torch.cat([net.head(net(data.holdout[i:i + 512].cpu())).argmax(1) for i in range(0, len(data.holdout), 512)])
    return net, float((pred == data.holdout_labels.cpu()).float().mean())


@dataclass
class Scorer:
    net: nn.Module
    real: torch.Tensor  # features of the held-out split (up to ``samples`` images)
    accuracy: float
    samples: int

    def __call__(self, sample: SampleFn) -> dict[str, float]:
        fake = features(self.net, sampled(sample, self.samples))
        out = {"fid_alt": frechet_distance(statistics(self.real), statistics(fake))}
        prdc = manifold_metrics(self.real, fake)
        return out | {"recall_alt": prdc["recall"], "coverage_alt": prdc["coverage"]}


def make_scorer(data: ImageData, samples: int = 5000) -> Scorer:
    """The independent scorer of ``data`` (trained here, in a few CPU seconds to a minute)."""
    if data.channel_classes:
        single, acc = train_alt(channel_data(data))
        net: nn.Module = _ChannelAlt(single, data.shape[0])
    else:
        net, acc = train_alt(data)
    n = min(samples, len(data.holdout))
    real = features(net, iter([data.holdout[i:i + 500].cpu() for i in range(0, n, 500)]))
    return Scorer(net.eval(), real, acc, n)


__all__ = ["AltNet", "Scorer", "make_scorer", "train_alt"]
