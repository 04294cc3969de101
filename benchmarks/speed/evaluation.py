"""CPU time of one evaluation on MNIST-sized images: sampling, features and distance measured separately.

    python -m benchmarks.speed.evaluation --samples 10000 --data-root ../shared/data/mnist
"""

from __future__ import annotations

import json
import time

import torch

from benchmarks._common import parser as bench_parser
from trainer import TrainConfig, build_generator, load_data
from trainer.metrics import (
    domain_net,
    features,
    frechet_distance,
    kernel_distance,
    manifold_metrics,
    sampled,
    share_metrics,
    shares_of,
    statistics,
)
from trainer.noise import fixed_sampler


def timed(fn):  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    ap = bench_parser(__doc__, "evaluation")
    ap.add_argument("--samples", type=int, default=10_000)
    ap.add_argument("--data-root", default="../shared/data/mnist")
    args = ap.parse_args()
    cfg = TrainConfig(dataset="idx", data_root=args.data_root, eval_samples=args.samples)
    data = load_data(cfg)
    net, acc = domain_net(data)  # trained once and cached (not timed)
    real = torch.cat([data.train, data.holdout])[: args.samples]
    gen = build_generator(cfg, data.shape).eval()
    fake_images, t_sample = timed(lambda: torch.cat(list(sampled(fixed_sampler(gen, 0), args.samples))))
    fake, t_feat = timed(lambda: features(net, iter(fake_images.split(500))))
    real_f, t_real = timed(lambda: features(net, iter(real.split(500))))
    (stats_f, stats_r), t_stats = timed(lambda: (statistics(fake), statistics(real_f)))
    fid, t_fid = timed(lambda: frechet_distance(stats_r, stats_f))
    kid, t_kid = timed(lambda: kernel_distance(real_f, fake))
    prdc, t_prdc = timed(lambda: manifold_metrics(real_f, fake))  # precision/recall/density/coverage (prdc, k=5)
    shares, t_shares = timed(lambda: share_metrics(shares_of(net, fake)))
    print(json.dumps({
        "samples": args.samples, "image": list(data.shape), "feature_dim": fake.shape[1], "threads": torch.get_num_threads(),
        "domain_accuracy": round(acc, 4), "sample_s": round(t_sample, 3), "features_fake_s": round(t_feat, 3),
        "features_real_s_(cached_per_worker)": round(t_real, 3), "statistics_s": round(t_stats, 4),
        "fid_distance_s": round(t_fid, 4), "kid_distance_s": round(t_kid, 4), "fid": round(fid, 3), "kid": round(kid, 4),
        "prdc_s": round(t_prdc, 4), "class_shares_s": round(t_shares, 4), "recall": round(prdc["recall"], 3),
        "class_min_share": round(shares["class_min_share"], 3),
    }))


if __name__ == "__main__":
    main()
