"""Screen discriminator options for mode coverage: fixed configs trained at the production budget, each scored by
FID and the smallest class share (on ``eval_samples`` and on 10000 generated images) under the domain classifier.

    python benchmarks/coverage_screen.py --arms sg2-mbstd sg2 --seeds 1 0 --images 192000

Arms are the StyleGAN2 optimiser on the MNIST study's networks (``sg2``: Adam 2e-3, betas (0, 0.99), batch 32,
EMA 0.999, BCE) with one option changed (``-mbstd``: minibatch standard deviation in D; ``-layer``: layer norm in
D; ``-w64``: both networks twice as wide; ``-cond``: class-conditional G and D, ``classes: 10``), and
pytorch/examples' optimiser with EMA (``dc-ema``, ``dc-ema-batch``, ``dc-ema-cond``). One JSON line per run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from trainer import TrainConfig, load_data, make_evaluator, train
from trainer.metrics import DomainNet, features, sampled, shares_of
from trainer.step import fixed_sampler

SG2 = {"loss": "bce", "lr_g": 2e-3, "lr_d": 2e-3, "beta1": 0.0, "beta2": 0.99, "batch_size": 32, "ema_decay": 0.999}
DC = {"loss": "bce", "lr_g": 2e-4, "lr_d": 2e-4, "beta1": 0.5, "batch_size": 64, "ema_decay": 0.999}
ARMS = {"sg2": SG2, "sg2-mbstd": {**SG2, "d_mbstd": True}, "sg2-layer": {**SG2, "d_norm": "layer"},
        "sg2-mbstd-w64": {**SG2, "d_mbstd": True, "g_width": 64, "d_width": 64},
        "sg2-cond": {**SG2, "classes": 10}, "sg2-mbstd-cond": {**SG2, "d_mbstd": True, "classes": 10},
        "dc-ema-cond": {**DC, "classes": 10},
        "dc-ema": DC, "dc-ema-batch": {**DC, "d_norm": "batch"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arms", nargs="+", default=["sg2-mbstd", "sg2"], choices=sorted(ARMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 0])
    parser.add_argument("--images", type=int, default=192_000)
    parser.add_argument("--data-root", default="../shared/data/mnist")
    parser.add_argument("--out", default=None, help="also append the JSON lines to this file")
    args = parser.parse_args()
    base = TrainConfig(dataset="mnist", data_root=args.data_root, arch="dcgan", latent_dim=64, g_width=32, d_width=32,
                       budget_images=args.images, eval_every_images=args.images, eval_samples=2000, amp="off",
                       channels_last="off", device="cpu")
    data = load_data(base)
    evaluator = make_evaluator(base, data)
    assert evaluator is not None
    net = evaluator.net  # the domain classifier the evaluator scores with (feature_net: domain)
    assert isinstance(net, DomainNet)
    for seed in args.seeds:
        for name in args.arms:
            cfg = base.replace(seed=seed, **ARMS[name])
            t0 = time.perf_counter()
            result = train(cfg, data=data, evaluator=evaluator)
            sample = fixed_sampler(result.generator, 123)
            with torch.no_grad():
                big = shares_of(net, features(net, sampled(sample, 10_000)))
            m = result.final_metrics
            line = json.dumps({"arm": name, "seed": seed, "fid": round(m["fid"], 2), "recall": round(m["recall"], 3),
                               "min2k": m["class_min_share"], "min10k": round(min(big), 4),
                               "argmin10k": big.index(min(big)), "shares10k": [round(x, 3) for x in big],
                               "s": round(time.perf_counter() - t0)})
            print(line, flush=True)
            if args.out:
                with Path(args.out).open("a") as fh:
                    fh.write(line + "\n")


if __name__ == "__main__":
    main()
