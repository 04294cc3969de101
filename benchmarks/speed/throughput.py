"""Training throughput (images/s) of the shared trainer, fp32 vs bf16+channels_last, measured side by side.

    python -m benchmarks.speed.throughput --arch dcgan --size 28 --batch 64 --steps 200
    python -m benchmarks.speed.throughput --compare-with ../old-checkout --rounds 5   # this tree against another, interleaved

``--compare-with DIR`` times ``train()`` of this tree and of the checkout in DIR (another commit of gan-search) in
alternating subprocesses, round after round, so that machine drift hits both alike, and prints each side's median
images/s per mode and the ratio (this tree / the other).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

MODES = [("fp32", "off", "off"), ("bf16+channels_last", "on", "on")]


def measure(arch: str, size: int, batch: int, steps: int, device: str) -> dict[str, float]:
    import torch

    from trainer import ImageData, TrainConfig, train

    n = 4096
    x = torch.rand(n, 1, size, size) * 2 - 1
    y = torch.zeros(n, dtype=torch.long)
    data = ImageData(x, y, x[:256], y[:256], "bench")
    rows = {}
    for name, amp, cl in MODES:
        cfg = TrainConfig(arch=arch, image_size=size, batch_size=batch, amp=amp, channels_last=cl,
                          budget_images=batch * steps, eval_every_images=batch * steps, eval_metric="none", device=device)
        train(cfg.replace(budget_images=batch * 10), data=data)  # warm-up
        rows[name] = train(cfg, data=data).images_per_s
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="dcgan")
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--compare-with", default=None, help="another gan-search checkout to time against, interleaved")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a child: one measurement, JSON out
    ap.add_argument("--out", default=None, help="JSON results; auto: benchmarks/results/throughput-DATE.json")
    ap.set_defaults(benchmark="throughput")
    args = ap.parse_args()
    if args.compare_with is None:
        import torch

        rows = measure(args.arch, args.size, args.batch, args.steps, args.device)
        rows["speedup"] = rows["bf16+channels_last"] / rows["fp32"]
        print(json.dumps({"arch": args.arch, "size": args.size, "batch": args.batch, "steps": args.steps,
                          "device": args.device, "torch_threads": torch.get_num_threads(),
                          **{k: round(v, 2) for k, v in rows.items()}}))
        return
    if args.one:
        print(json.dumps(measure(args.arch, args.size, args.batch, args.steps, args.device)))
        return
    # the child runs this file under the other tree's PYTHONPATH, so this module imports nothing of this tree at the top
    from benchmarks._common import write_result

    trees = {"this": Path(__file__).resolve().parents[2], "other": Path(args.compare_with).resolve()}
    child = [sys.executable, str(Path(__file__).resolve()), "--one", "--compare-with", "-", "--arch", args.arch,
             "--size", str(args.size), "--batch", str(args.batch), "--steps", str(args.steps), "--device", args.device]
    seen: dict[str, dict[str, list[float]]] = {t: {m: [] for m, _, _ in MODES} for t in trees}
    for r in range(args.rounds):
        for tree in (trees if r % 2 == 0 else dict(reversed(list(trees.items())))):
            env = {**os.environ, "PYTHONPATH": str(trees[tree])}
            out = subprocess.run(child, env=env, cwd=trees[tree], check=True, capture_output=True, text=True).stdout
            for mode, value in json.loads(out.strip().splitlines()[-1]).items():
                seen[tree][mode].append(value)
    result: dict[str, object] = {"arch": args.arch, "size": args.size, "batch": args.batch, "steps": args.steps,
                                 "rounds": args.rounds, "other": str(trees["other"])}
    for mode, _, _ in MODES:
        this, other = statistics.median(seen["this"][mode]), statistics.median(seen["other"][mode])
        result[mode] = {"this": round(this, 1), "other": round(other, 1), "ratio": round(this / other, 3),
                        "this_all": [round(v) for v in seen["this"][mode]], "other_all": [round(v) for v in seen["other"][mode]]}
    print(json.dumps(result))
    write_result(args, result)


if __name__ == "__main__":
    main()
