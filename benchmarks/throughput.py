"""Training throughput (images/s) of the shared trainer, fp32 vs bf16+channels_last, measured side by side.

    python benchmarks/throughput.py --arch dcgan --size 28 --batch 64 --steps 200
"""

from __future__ import annotations

import argparse
import json

import torch

from trainer import ImageData, TrainConfig, train


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="dcgan")
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    n = 4096
    x = torch.rand(n, 1, args.size, args.size) * 2 - 1
    y = torch.zeros(n, dtype=torch.long)
    data = ImageData(x, y, x[:256], y[:256], "bench")
    rows = {}
    for name, amp, cl in [("fp32", "off", "off"), ("bf16+channels_last", "on", "on")]:
        cfg = TrainConfig(arch=args.arch, image_size=args.size, batch_size=args.batch, amp=amp, channels_last=cl,
                          budget_images=args.batch * args.steps, eval_every_images=args.batch * args.steps,
                          eval_metric="none", device=args.device)
        train(cfg.replace(budget_images=args.batch * 10), data=data)  # warm-up
        rows[name] = train(cfg, data=data).images_per_s
    rows["speedup"] = rows["bf16+channels_last"] / rows["fp32"]
    print(json.dumps({"arch": args.arch, "size": args.size, "batch": args.batch, "steps": args.steps,
                      "device": args.device, "torch_threads": torch.get_num_threads(),
                      **{k: round(v, 2) for k, v in rows.items()}}))


if __name__ == "__main__":
    main()
