"""How the service's FID and the suite's scorer weigh different faults: real training images, each distorted one
way, scored against the held-out split by both. The search optimises the first; the suite judges by the second;
where they weigh faults differently, the search's winner under one is not the winner under the other.

    python -m benchmarks.quality.judges --problems fashion-mnist mnist --data-root ../shared/data/mnist --out auto

Faults: translation by up to 1 and 3 pixels (DiffAugment's), cutout, brightness, contrast, a 3x3 blur, Gaussian
noise (0.1 on [-1, 1]), and half the classes dropped (a coverage fault). Each row: both FIDs, and each as a share of
its own FID for the coverage fault, so that the two scales can be compared; beside them, the service's FID with its
domain network trained with photometric jitter too (``train_domain_net(photometric=True)``, a candidate default).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import torch
import torch.nn.functional as F

from benchmarks._common import parser as bench_parser
from benchmarks._common import write_result
from benchmarks.quality.suite import problem_spec
from trainer import load_data, make_evaluator
from trainer.augment import brightness, contrast, cutout, translation
from trainer.data import ImageData
from trainer.metrics import ChannelNet, channel_data, features, frechet_distance, sampled, statistics, train_domain_net
from trainer.noise import SampleFn

Fault = Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]


def _blur(x: torch.Tensor) -> torch.Tensor:
    k = torch.tensor([[1.0, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16
    c = x.shape[1]
    return F.conv2d(x, k.expand(c, 1, 3, 3), padding=1, groups=c)


FAULTS: dict[str, Fault] = {
    "none": lambda x, y, g: x,
    "translation 1px": lambda x, y, g: translation(x, g, ratio=0.04),
    "translation 3px (DiffAugment's)": lambda x, y, g: translation(x, g),
    "cutout": lambda x, y, g: cutout(x, g),
    "brightness": lambda x, y, g: brightness(x, g),
    "contrast": lambda x, y, g: contrast(x, g),
    "blur 3x3": lambda x, y, g: _blur(x),
    "noise 0.1": lambda x, y, g: (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(-1, 1),
    "half the classes": lambda x, y, g: x[y < int(y.max()) // 2 + 1],
}


def photometric_net(data: ImageData) -> torch.nn.Module:
    """The service's domain network trained with photometric jitter as well (``train_domain_net(photometric=True)``;
    not cached: a comparison, not what the service uses)."""
    if data.channel_classes:
        single, _ = train_domain_net(channel_data(data), photometric=True)
        return ChannelNet(single, data.shape[0])
    net, _ = train_domain_net(data, photometric=True)
    return net


def photometric_fid(data: ImageData, n: int, net: torch.nn.Module | None = None) -> Callable[[SampleFn], float]:
    """The FID on ``n`` samples under ``net`` (default: a new ``photometric_net``)."""
    net = net if net is not None else photometric_net(data)
    held = data.holdout.cpu()
    real = statistics(features(net, sampled(lambda k, start=0: held[start:start + k], min(n, len(held)))))
    return lambda sample: frechet_distance(real, statistics(features(net, sampled(sample, n))))


def judge(problem: str, data_root: str | None, n: int = 5000) -> list[dict[str, float | str]]:
    from benchmarks.quality._scorer import make_scorer

    base = problem_spec(problem, data_root).train.replace(device="cpu")
    data = load_data(base)
    service, scorer = make_evaluator(base, data), make_scorer(data)
    photometric = photometric_fid(data, base.eval_samples)
    assert service is not None
    x, y = data.train[:n].cpu(), data.train_labels[:n].cpu()
    rows: list[dict[str, float | str]] = []
    for name, fault in FAULTS.items():
        images = fault(x.clone(), y, torch.Generator().manual_seed(0))

        def sample(k: int, start: int = 0, images: torch.Tensor = images) -> torch.Tensor:
            return images[start:start + k]

        s, a = service(sample), scorer(sample)
        rows.append({"fault": name, "fid": s["fid"], "recall": s["recall"], "fid_alt": a["fid_alt"],
                     "recall_alt": a["recall_alt"], "fid_photometric": photometric(sample)})
    cover = rows[-1]
    for r in rows:
        for key in ("fid", "fid_alt", "fid_photometric"):
            r[f"{key}_share"] = float(r[key]) / float(cover[key])
    return rows


def main() -> None:
    ap = bench_parser(__doc__, "judges")
    ap.add_argument("--problems", nargs="+", default=["fashion-mnist"])
    ap.add_argument("--data-root", default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if hasattr(os, "sched_getaffinity"):
        torch.set_num_threads(len(os.sched_getaffinity(0)))
    results = {}
    for problem in args.problems:
        rows = results[problem] = judge(problem, args.data_root)
        print(f"{problem}: {'fault':<32} {'service FID':>11} {'share':>7} {'scorer FID':>10} {'share':>7} "
              f"{'ratio':>7} {'photometric':>11} {'share':>7}")
        for r in rows:
            ratio = float(r["fid_share"]) / max(float(r["fid_alt_share"]), 1e-9)
            print(f"{'':<{len(problem) + 2}}{r['fault']:<32} {r['fid']:>11.2f} {r['fid_share']:>7.3f} "
                  f"{r['fid_alt']:>10.2f} {r['fid_alt_share']:>7.3f} {ratio:>7.1f} {r['fid_photometric']:>11.2f} "
                  f"{r['fid_photometric_share']:>7.3f}")
    write_result(args, {"results": results})


if __name__ == "__main__":
    main()
