"""FID and KID as a chain of small functions: features -> statistics -> distance; coverage beside them.

Feature networks:
  * ``domain``: a small CNN classifier trained by the project on the dataset's training split
    (deterministic from a seed), cached on disk under a key of dataset fingerprint + version + seed.
  * ``inception``: the FID literature's Inception-v3 pool3 features (2048-d), from a weights file or a download.
Real statistics are cached on disk keyed by dataset fingerprint, split, feature network and count.
The distances come from torchmetrics (``_compute_fid``, ``poly_mmd``).

Coverage, in the same feature space at every evaluation: improved precision and recall (Kynkaanniemi et al.
2019) and density and coverage (Naeem et al. 2020) from the ``prdc`` package (the authors' implementation),
and, with the domain classifier, each class's share of the samples (smallest share, normalised entropy).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from torchmetrics.image.fid import _compute_fid
from torchmetrics.image.kid import poly_mmd

from trainer.config import TrainConfig
from trainer.data import ImageData
from trainer.errors import ConfigError, DataError
from trainer.io import cache_dir
from trainer.noise import SampleFn

log = logging.getLogger(__name__)

DOMAIN_VERSION = 1  # bump when DomainNet or its training changes: invalidates cached networks
DOMAIN_SEED = 0  # the domain network is deterministic from this seed
DOMAIN_FEATURES = 128
# Modes (a dataset whose channels each hold one of K classes: K ** C modes). Among N samples a perfect generator shows
# all but e^(-N/M) of M modes and its mode KL reads (M - 1) / 2N too high: at the papers' 26,000 samples for 1,000
# modes (26 a mode) that is 5e-12 of the modes and 0.019 of KL; at 1,000 samples 37% of the modes and 0.5.
MODE_SAMPLES_PER_MODE = 26
MODE_CLASSIFIER_FLOOR = 0.95  # held-out accuracy of the per-channel classifier below which mode counts are refused
KID_SUBSETS, KID_SUBSET_SIZE = 20, 500
PRDC_K = 5  # nearest neighbours of the k-NN manifolds (Naeem et al.'s default)
CLASS_SHARE = "class_share_"  # metrics class_share_0, class_share_1, ...: each class's share of the samples


def save_cached(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """The one cache writer: a unique temporary file renamed into place, so concurrent workers filling the
    same cache entry never read or leave a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# ---------------------------------------------------------------- feature networks
class DomainNet(nn.Module):
    """Small classifier; its penultimate layer (128-d) is the FID feature space."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 32, 3, 1, 1), nn.BatchNorm2d(32), nn.ReLU(),  # (B, 32, H, W)
            nn.Conv2d(32, 64, 3, 2, 1), nn.BatchNorm2d(64), nn.ReLU(),        # (B, 64, H/2, W/2)
            nn.Conv2d(64, 64, 3, 2, 1), nn.BatchNorm2d(64), nn.ReLU(),        # (B, 64, H/4, W/4)
            nn.AdaptiveAvgPool2d(2), nn.Flatten(),                            # (B, 256)
            nn.Linear(256, DOMAIN_FEATURES), nn.ReLU(),                       # (B, 128) features
        )
        self.head = nn.Linear(DOMAIN_FEATURES, num_classes)    # (B, classes) logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _accuracy(net: DomainNet, x: torch.Tensor, y: torch.Tensor) -> float:
    net.eval()
    with torch.no_grad():
        pred = torch.cat([net.logits(x[i:i + 512]).argmax(1) for i in range(0, len(x), 512)])
    return float((pred == y).float().mean())


def train_domain_net(data: ImageData, seed: int = DOMAIN_SEED, steps: int = 600,
                     photometric: bool = False) -> tuple[DomainNet, float]:
    """Train the classifier on the training split (light shift augmentation); returns it and held-out accuracy.
    ``photometric``: each image's brightness (+-0.25) and contrast (x0.75-1.25) also jittered, so that its features
    (and the FID on them) weigh global intensity less against class content (``benchmarks/quality/judges.py``)."""
    if data.num_classes < 2 or bool((data.train_labels < 0).any()):
        raise DataError("feature_net='domain' needs class labels (>= 2 classes); use feature_net='inception'.")
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x, y = data.train.cpu(), data.train_labels.cpu()
    net = DomainNet(x.shape[1], data.num_classes)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    pad = max(1, x.shape[-1] // 14)
    net.train()
    for _ in range(steps):
        idx = torch.randint(len(x), (128,), generator=gen)
        xb = x[idx]
        dx, dy = torch.randint(-pad, pad + 1, (2,), generator=gen).tolist()  # small random shift
        xb = torch.roll(F.pad(xb, (pad,) * 4, value=-1.0), (dx, dy), (2, 3))[..., pad:-pad, pad:-pad]
        if photometric:
            shift = (torch.rand(len(xb), 1, 1, 1, generator=gen) - 0.5) * 0.5
            scale = 0.75 + 0.5 * torch.rand(len(xb), 1, 1, 1, generator=gen)
            mean = xb.mean(dim=(1, 2, 3), keepdim=True)
            xb = ((xb - mean) * scale + mean + shift).clamp(-1.0, 1.0)
        loss = F.cross_entropy(net.logits(xb), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    acc = _accuracy(net, data.holdout.cpu(), data.holdout_labels.cpu())
    return net.eval(), acc


def domain_net(data: ImageData, seed: int = DOMAIN_SEED, cache: Path | None = None) -> tuple[DomainNet, float]:
    """The cached domain network of ``data`` (trained once per machine); returns (net, held-out accuracy)."""
    path = (cache or cache_dir()) / f"domain-{data.fingerprint}-v{DOMAIN_VERSION}-s{seed}.safetensors"
    net = DomainNet(data.shape[0], data.num_classes)
    if path.is_file():
        net.load_state_dict(load_file(str(path)))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            acc = float(fh.metadata()["holdout_accuracy"])
        return net.eval(), acc
    log.info("training the domain feature network (once per dataset; cached at %s)", path)
    net, acc = train_domain_net(data, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_cached(net.state_dict(), path, {"holdout_accuracy": str(acc), "seed": str(seed)})
    log.info("domain network held-out accuracy %.4f", acc)
    return net.eval(), acc


class ChannelNet(nn.Module):
    """The domain classifier applied to each channel alone (Stacked MNIST: one digit per channel). Its features are
    the channels' features side by side (C x 128); ``codes`` reads each channel's class and returns the base-K code
    of the tuple (the mode), as the papers' mode count does with a pretrained MNIST classifier."""

    def __init__(self, net: DomainNet, channels: int, accuracy: float = math.nan) -> None:
        super().__init__()
        self.net, self.channels = net, channels
        self.accuracy = accuracy  # the classifier's held-out accuracy on single channels, stored with mode metrics

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.net(x[:, c:c + 1]) for c in range(self.channels)], dim=1)

    def codes(self, feats: torch.Tensor) -> torch.Tensor:
        head = self.net.head
        with torch.no_grad():
            parts = feats.to(head.weight.device, head.weight.dtype).split(DOMAIN_FEATURES, dim=1)
            classes = [head(p).argmax(1) for p in parts]
        code = torch.zeros_like(classes[0])
        for c in classes:
            code = code * head.out_features + c
        return code


def channel_data(data: ImageData) -> ImageData:
    """Each channel of ``data`` as a 1-channel image with its own class (what ``ChannelNet``'s classifier learns)."""
    k, c = data.channel_classes, data.shape[0]

    def split(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        digits = [(y // k ** (c - 1 - i)) % k for i in range(c)]
        return torch.cat([x[:, i:i + 1] for i in range(c)]), torch.cat(digits)

    (xtr, ytr), (xte, yte) = split(data.train.cpu(), data.train_labels.cpu()), split(data.holdout.cpu(),
                                                                                      data.holdout_labels.cpu())
    return ImageData(xtr, ytr, xte, yte, f"{data.fingerprint}-channels")


def mode_prior(data: ImageData) -> torch.Tensor:
    """The data's distribution over modes: the product of each channel's class frequencies in the training split
    (channels are drawn independently), shape (K ** C,)."""
    k, c = data.channel_classes, data.shape[0]
    y = data.train_labels.cpu()
    prior = torch.ones(1, dtype=torch.float64)
    for i in range(c):
        freq = torch.bincount((y // k ** (c - 1 - i)) % k, minlength=k).double()
        prior = (prior[:, None] * (freq / freq.sum())[None, :]).flatten()
    return prior


def mode_samples(cfg: TrainConfig, data: ImageData) -> int:
    """Generated images the modes are counted on: ``share_samples``, or by default ``MODE_SAMPLES_PER_MODE`` per
    mode (0 where the dataset has no modes). A ``share_samples`` below that is a one-line ConfigError."""
    if not data.channel_classes:
        return 0
    modes = data.channel_classes ** data.shape[0]
    need = MODE_SAMPLES_PER_MODE * modes
    if cfg.share_samples and cfg.share_samples < need:
        raise ConfigError(f"share_samples must be 0 (then {need}) or >= {need} for the {modes} modes of dataset "
                          f"{cfg.dataset!r} ({MODE_SAMPLES_PER_MODE} a mode: fewer undercount the modes and bias "
                          f"mode_kl up by about (M - 1) / 2N), but got share_samples={cfg.share_samples}.")
    return max(cfg.share_samples, need, cfg.eval_samples)


def mode_metrics(codes: torch.Tensor, prior: torch.Tensor) -> dict[str, float]:
    """``modes``: distinct modes among the samples; ``mode_kl``: KL(samples' mode histogram || the data's)."""
    q = torch.bincount(codes.cpu().long(), minlength=len(prior)).double()
    q = q / q.sum()
    seen = q > 0
    kl = float((q[seen] * (q[seen] / prior[seen].clamp_min(1e-12)).log()).sum())
    return {"modes": float(int(seen.sum())), "mode_kl": max(kl, 0.0)}


class InceptionFeatures(nn.Module):
    """Inception-v3 pool3 features (2048-d) as in the FID literature (torch-fidelity's port of the TF graph).

    ``weights``: a file of the pt_inception-2015-12-05 weights (read with ``weights_only=True``); None downloads it.
    """

    def __init__(self, weights: str | None = None) -> None:
        super().__init__()
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        if weights is None:  # needs internet once; torch-fidelity caches the file
            self.net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
            return
        if not Path(weights).is_file():
            raise ConfigError(f"feature_weights must be an Inception-v3 FID weights file, but {weights!r} does not exist.")
        state = torch.load(weights, map_location="cpu", weights_only=True)  # never unpickles objects
        with tempfile.TemporaryDirectory() as tmp:  # torch-fidelity reads a path; give it plain tensors only
            safe = Path(tmp) / "inception.pth"
            torch.save(state, safe)
            try:
                self.net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                                       feature_extractor_weights_path=str(safe))
            except RuntimeError as exc:
                raise ConfigError(f"feature_weights {weights!r} does not have the Inception-v3 FID layout "
                                  f"({str(exc).splitlines()[0]}).") from None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x             # (B, 3, H, W) in [-1, 1]
        x = ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)       # the extractor resizes to 299 itself
        return self.net(x)[0]                                              # (B, 2048)


# ---------------------------------------------------------------- features -> statistics -> distance
@torch.no_grad()
def features(net: nn.Module, batches: Iterator[torch.Tensor]) -> torch.Tensor:
    """Stack the features of every batch as float64 on the CPU: (N, D)."""
    net.eval()
    device = next(net.parameters()).device
    return torch.cat([net(b.to(device).float()).double().cpu() for b in batches])


def statistics(feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and covariance (D, D) of features (N, D)."""
    return feats.mean(0), torch.cov(feats.T)


def frechet_distance(real: tuple[torch.Tensor, torch.Tensor], fake: tuple[torch.Tensor, torch.Tensor]) -> float:
    return float(_compute_fid(real[0], real[1], fake[0], fake[1]))


def kernel_distance(real: torch.Tensor, fake: torch.Tensor, subsets: int = KID_SUBSETS,
                    subset_size: int = KID_SUBSET_SIZE, seed: int = 0) -> float:
    """Mean unbiased polynomial MMD^2 over random subsets (the KID of Binkowski et al.)."""
    size = min(subset_size, len(real), len(fake))
    g = torch.Generator().manual_seed(seed)
    values = [poly_mmd(real[torch.randperm(len(real), generator=g)[:size]],
                       fake[torch.randperm(len(fake), generator=g)[:size]]) for _ in range(subsets)]
    return float(torch.stack(values).mean())


def manifold_metrics(real: torch.Tensor, fake: torch.Tensor, k: int = PRDC_K) -> dict[str, float]:
    """Precision, recall, density and coverage of ``fake`` (N, D) against ``real`` (M, D) with k-NN manifolds."""
    from prdc import compute_prdc

    if min(len(real), len(fake)) <= k:
        raise ConfigError(f"eval_samples must be > {k} (the neighbours of precision/recall), but got {len(fake)}.")
    with contextlib.redirect_stdout(io.StringIO()):  # prdc prints the set sizes; stdout is for results
        out = compute_prdc(real.numpy(), fake.numpy(), nearest_k=k)
    return {name: float(value) for name, value in out.items()}


def share_metrics(shares: list[float]) -> dict[str, float]:
    """Each class's share, the smallest, and the entropy of the shares over log(classes) (1: every class equal)."""
    entropy = 0.0 - sum(p * math.log(p) for p in shares if p > 0) / math.log(len(shares))  # never -0.0
    return {"class_min_share": min(shares), "class_entropy": entropy,
            **{f"{CLASS_SHARE}{i}": p for i, p in enumerate(shares)}}


def shares_of(net: DomainNet, feats: torch.Tensor) -> list[float]:
    """Share of the images whose features are ``feats`` that the domain classifier assigns to each class."""
    head = net.head
    with torch.no_grad():
        pred = head(feats.to(head.weight.device, head.weight.dtype)).argmax(1)
    counts = torch.bincount(pred, minlength=head.out_features)
    return [float(c) / len(feats) for c in counts]


def _chunks(x: torch.Tensor, size: int = 500) -> Iterator[torch.Tensor]:
    return (x[i:i + size] for i in range(0, len(x), size))


def sampled(sample: SampleFn, n: int, size: int = 500) -> Iterator[torch.Tensor]:
    """Stream images ``0 .. n - 1`` of ``sample``'s stream in batches (never all in memory, never on disk)."""
    for i in range(0, n, size):
        yield sample(min(size, n - i), i)


# ---------------------------------------------------------------- the evaluator used by the loop
@dataclass
class Evaluator:
    """Scores a sampler against cached held-out statistics; built once per worker and reused."""

    net: nn.Module
    net_key: str
    real_feats: torch.Tensor
    real_stats: tuple[torch.Tensor, torch.Tensor]
    samples: int
    metric: str
    share_samples: int = 0  # class shares (modes) over this many generated images (the first ``samples`` score the rest)
    prior: torch.Tensor | None = None  # the data's mode distribution, where the feature network reads modes

    def __call__(self, sample: SampleFn) -> dict[str, float]:
        """The metric (fid or kid), precision/recall/density/coverage and, with the domain classifier, the
        class shares, all from one set of generated features (shares from ``share_samples`` where larger: the
        smallest of 10 shares counted on 2000 images reads ~1 point low, one count's noise being ~0.67)."""
        domain = self.net if isinstance(self.net, (DomainNet, ChannelNet)) else None
        every = features(self.net, sampled(sample, max(self.samples, self.share_samples if domain else 0)))
        if len(every) < self.share_samples:
            raise ValueError(f"the sampler gave {len(every)} images, fewer than the {self.share_samples} asked")
        fake = every[:self.samples]
        if self.metric == "kid":
            out = {"kid": kernel_distance(self.real_feats, fake)}
        else:
            out = {"fid": frechet_distance(self.real_stats, statistics(fake))}
        out |= manifold_metrics(self.real_feats, fake)
        if isinstance(domain, ChannelNet) and self.prior is not None:
            out |= mode_metrics(domain.codes(every), self.prior)
            out |= {"mode_samples": float(len(every)), "mode_classifier_accuracy": round(domain.accuracy, 4)}
        elif isinstance(domain, DomainNet):
            out |= share_metrics(shares_of(domain, every))
        return out


def feature_network(cfg: TrainConfig, data: ImageData, device: torch.device | str = "cpu",
                    cache: Path | None = None) -> tuple[nn.Module, str]:
    """The feature network of ``cfg`` and a key naming exactly what produced its features."""
    if cfg.feature_net == "inception":
        key = "inception-" + (hashlib.sha256(Path(cfg.feature_weights).read_bytes()).hexdigest()[:12]
                              if cfg.feature_weights else "pt_inception-2015-12-05")
        return InceptionFeatures(cfg.feature_weights).to(device), key
    if data.channel_classes:  # one class per channel: the classifier of single channels, applied to each
        single, acc = domain_net(channel_data(data), cache=cache)
        if acc < MODE_CLASSIFIER_FLOOR:
            raise ConfigError(f"the per-channel classifier of dataset {cfg.dataset!r} reads held-out channels at "
                              f"accuracy {acc:.3f}, below the floor {MODE_CLASSIFIER_FLOOR} that mode counts need "
                              "(more or cleaner labelled data).")
        channels = ChannelNet(single, data.shape[0], acc)
        return channels.to(device), f"channels-{data.fingerprint}-v{DOMAIN_VERSION}-s{DOMAIN_SEED}"
    net, _ = domain_net(data, cache=cache)
    return net.to(device), f"domain-{data.fingerprint}-v{DOMAIN_VERSION}-s{DOMAIN_SEED}"


def real_features(net: nn.Module, net_key: str, data: ImageData, n: int, cache: Path | None = None) -> torch.Tensor:
    """Features of the first ``n`` held-out images, cached on disk by (dataset, split, network, n)."""
    n = min(n, len(data.holdout))
    path = (cache or cache_dir()) / f"real-{data.fingerprint}-holdout-{net_key}-{n}.safetensors"
    if path.is_file():
        return load_file(str(path))["features"]
    feats = features(net, _chunks(data.holdout[:n]))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_cached({"features": feats.contiguous()}, path, {"key": json.dumps([data.fingerprint, net_key, n])})
    return feats


def check_samples(cfg: TrainConfig, real: torch.Tensor) -> None:
    dim = real.shape[1]
    if min(cfg.eval_samples, len(real)) <= dim:
        raise ConfigError(
            f"eval_samples must be > the feature dimension {dim} for FID (and the held-out split has {len(real)} "
            f"images), but got eval_samples={cfg.eval_samples}."
        )


def make_evaluator(cfg: TrainConfig, data: ImageData, device: torch.device | str = "cpu",
                   cache: Path | None = None) -> Evaluator | None:
    """Build the evaluator of ``cfg`` (None when eval_metric is 'none')."""
    if cfg.eval_metric == "none":
        return None
    net, key = feature_network(cfg, data, device, cache)
    real = real_features(net, key, data, cfg.eval_samples, cache)
    if cfg.eval_metric == "fid":
        check_samples(cfg, real)
    prior = mode_prior(data) if isinstance(net, ChannelNet) else None
    shares = mode_samples(cfg, data) or cfg.share_samples  # modes: at least 26 samples a mode
    return Evaluator(net, key, real, statistics(real), cfg.eval_samples, cfg.eval_metric, shares, prior)


def class_shares(net: nn.Module, feats: torch.Tensor) -> list[float]:
    """Share of the images (their features) that the domain classifier assigns to each class (mode coverage)."""
    if not isinstance(net, DomainNet):
        raise ConfigError("metric 'classes' needs feature_net='domain' (a classifier of the dataset's labels, one class "
                          "per image).")
    return [round(p, 4) for p in shares_of(net, feats)]
