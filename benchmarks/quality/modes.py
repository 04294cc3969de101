"""Stacked MNIST's mode KL over training, and where it comes from: one config trained once, its modes and mode KL
at every evaluation, and at the end the KL split into each channel's digit imbalance (the marginal KLs) and the
rest (digits not independent across channels), beside the real held-out images' own KL under the same classifier;
and whether the imbalance sits in the digits the classifier reads clearly or in those it hesitates on (top class
probability below 0.9), for the samples and for the real images alike.

    python -m benchmarks.quality.modes --suite benchmarks/results/suite-stacked-mnist-12min-2026-12-05.json \
        --config shipped/seed0 --images 576000 --every 64000 --data-root ../shared/data/mnist --out auto
    python -m benchmarks.quality.modes ... --set d_pack=2 --set g_width=64      # the same with changed fields
    python -m benchmarks.quality.modes ... --save runs/modes-w32                  # keeps the final generator

``--config`` is a key of the suite file's chosen configs (``shipped/seed0``, ``plain/seed1``, ``preset/stylegan2``);
``--set FIELD=VALUE`` changes a TrainConfig field (VALUE read as YAML). Training seed ``--seed``
(1000: the suite's first production seed); samples from a noise stream no evaluation used.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks._common import parser as bench_parser
from benchmarks._common import train_changes, write_result
from trainer import TrainConfig, load_data, make_evaluator, save_generator, train
from trainer.metrics import DOMAIN_FEATURES, ChannelNet, features, mode_metrics, sampled
from trainer.noise import fixed_sampler

log = logging.getLogger("benchmarks.modes")


def digits_of(codes: torch.Tensor, k: int, c: int) -> list[torch.Tensor]:
    """The per-channel classes of mode codes (base-k, channel 0 most significant)."""
    return [(codes // k ** (c - 1 - i)) % k for i in range(c)]


def digit_shares(digits: torch.Tensor, k: int) -> torch.Tensor:
    """Each of the ``k`` digits' share of ``digits`` (all zero when there are none)."""
    return torch.bincount(digits.long(), minlength=k).double() / max(len(digits), 1)


def marginal_kl(q: torch.Tensor, p: torch.Tensor) -> float:
    """KL(q || p) over the digits ``q`` holds."""
    seen = q > 0
    return float((q[seen] * (q[seen] / p[seen]).log()).sum())


def decomposition(codes: torch.Tensor, labels: torch.Tensor, prior: torch.Tensor, k: int, c: int) -> dict[str, Any]:
    """The mode KL of ``codes`` against ``prior``, each channel's marginal KL (its digit shares against the training
    labels' shares on that channel) and the shares themselves. With channels drawn independently (as the data's
    are), the mode KL is the marginal KLs' sum plus the samples' dependence between channels."""
    total = mode_metrics(codes, prior)
    marginal, shares = [], []
    for fake, real in zip(digits_of(codes, k, c), digits_of(labels, k, c), strict=True):
        q = digit_shares(fake, k)
        marginal.append(marginal_kl(q, digit_shares(real, k)))
        shares.append([round(float(x), 4) for x in q])
    return {**total, "channel_kl": marginal, "channel_kl_sum": sum(marginal),
            "dependence": total["mode_kl"] - sum(marginal), "shares": shares}


def confidence(net: ChannelNet, feats: torch.Tensor, labels: torch.Tensor, k: int, c: int,
               threshold: float = 0.9) -> dict[str, Any]:
    """Is the channels' digit imbalance in the digits the classifier reads clearly, or in the ones it hesitates on?
    For each channel: the share of samples whose top class has probability >= ``threshold``, and the marginal KL of
    the confident samples' digits alone and of the others' (each against the training labels' shares)."""
    head = net.net.head
    out: dict[str, Any] = {"threshold": threshold, "confident": [], "kl_confident": [], "kl_unsure": [],
                           "unsure_shares": []}
    with torch.no_grad():
        parts = feats.to(head.weight.device, head.weight.dtype).split(DOMAIN_FEATURES, dim=1)
        for part, real in zip(parts, digits_of(labels, k, c), strict=True):
            top, digit = head(part).softmax(1).double().cpu().max(1)
            p, sure = digit_shares(real, k), top >= threshold
            unsure = digit_shares(digit[~sure], k)
            out["confident"].append(round(float(sure.double().mean()), 4))
            out["kl_confident"].append(round(marginal_kl(digit_shares(digit[sure], k), p), 4))
            out["kl_unsure"].append(round(marginal_kl(unsure, p), 4))
            out["unsure_shares"].append([round(float(x), 4) for x in unsure])
    return out


def main() -> None:
    ap = bench_parser(__doc__, "modes")
    ap.add_argument("--suite", required=True, help="a suite result file holding the chosen configs")
    ap.add_argument("--config", default="shipped/seed0")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    ap.add_argument("--images", type=int, default=192_000)
    ap.add_argument("--every", type=int, default=64_000)
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--samples", type=int, default=26_000, help="generated images the modes are counted on")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--save", type=Path, metavar="DIR", help="keep the final generator under DIR (to look at later)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    if hasattr(os, "sched_getaffinity"):
        torch.set_num_threads(len(os.sched_getaffinity(0)))  # the cores it may run on (taskset)

    records = json.loads(Path(args.suite).read_text())["results"]
    if len(records) != 1:
        raise SystemExit(f"--suite must hold one problem, but {args.suite} holds {', '.join(records)}")
    (problem, record), = records.items()
    if args.config not in record["configs"]:
        raise SystemExit(f"--config must be one of {', '.join(record['configs'])}, but got {args.config!r}")
    changes = train_changes(args.set)
    base = {**record["configs"][args.config], **changes}
    if args.data_root:
        base["data_root"] = args.data_root
    cfg = TrainConfig.from_dict({**base, "seed": args.seed, "device": "cpu", "budget_images": args.images,
                                 "eval_every_images": args.every, "share_samples": args.samples})
    data = load_data(cfg)
    if not data.channel_classes:
        raise SystemExit(f"--suite must hold a problem whose channels each hold a class (stacked-mnist), but got {problem}")
    evaluator = make_evaluator(cfg, data)
    assert evaluator is not None and isinstance(evaluator.net, ChannelNet) and evaluator.prior is not None
    net, prior, k, c = evaluator.net, evaluator.prior, data.channel_classes, data.shape[0]
    labels = data.train_labels.cpu()

    t0 = time.perf_counter()
    result = train(cfg, data=data, evaluator=evaluator)
    minutes = (time.perf_counter() - t0) / 60
    if args.save is not None:
        save_generator(result.generator, cfg, data.shape, args.save)
    curve = [{"images": h["images_seen"], **{m: h["metrics"][m] for m in ("fid", "modes", "mode_kl")}}
             for h in result.history if "mode_kl" in h.get("metrics", {})]
    sample = fixed_sampler(result.generator, 424242)
    fake_feats = features(net, sampled(sample, args.samples))
    real_feats = features(net, (data.holdout[i:i + 1000] for i in range(0, len(data.holdout), 1000)))
    fake, real = net.codes(fake_feats), net.codes(real_feats)
    out = {"problem": problem, "config": args.config, "changes": changes, "images": args.images,
           "train_minutes": round(minutes, 1), "curve": curve,
           "final": {**decomposition(fake, labels, prior, k, c),
                     "confidence": confidence(net, fake_feats, labels, k, c)},
           "real_heldout": {"samples": len(real), **decomposition(real, labels, prior, k, c),
                            "confidence": confidence(net, real_feats, labels, k, c),
                            "finite_sample_floor": (k ** c - 1) / (2 * len(real))},
           "finite_sample_floor": (k ** c - 1) / (2 * args.samples)}
    for point in curve:
        print(f"{point['images']:>8} images: FID {point['fid']:7.2f}  modes {point['modes']:5.0f}  "
              f"mode KL {point['mode_kl']:.3f}")
    f, r = out["final"], out["real_heldout"]
    print(f"final ({args.samples} samples): modes {f['modes']:.0f}, mode KL {f['mode_kl']:.3f} = channels "
          f"{' + '.join(f'{x:.3f}' for x in f['channel_kl'])} + dependence {f['dependence']:.3f}; "
          f"real held-out ({r['samples']}): KL {r['mode_kl']:.3f} (finite-sample floor {r['finite_sample_floor']:.3f})")
    for i, shares in enumerate(f["shares"]):
        print(f"channel {i} digit shares: {' '.join(f'{s:.3f}' for s in shares)}")
    for name, part in (("samples", f), ("real held-out", r)):
        conf = part["confidence"]
        print(f"{name}: confident (p >= {conf['threshold']}) per channel "
              f"{' '.join(f'{x:.3f}' for x in conf['confident'])}; marginal KL confident "
              f"{' '.join(f'{x:.3f}' for x in conf['kl_confident'])}, unsure {' '.join(f'{x:.3f}' for x in conf['kl_unsure'])}")
    if (path := write_result(args, out)) is not None:
        log.info("wrote %s", path)


if __name__ == "__main__":
    main()
