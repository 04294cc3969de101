"""Several trials per device: trials/hour and images/s of K-member packs against one trial per device.

    python -m benchmarks.speed.packing --study studies/mnist-dcgan.yaml --data-root ../shared/data/mnist
    python -m benchmarks.speed.packing --study studies/mnist-dcgan.yaml --data-root DATA --device cuda --packs 1 2 4 8 16 32

The trial config is the study's first warm start (for mnist-dcgan: pytorch/examples' DCGAN settings) on the
study's data. Rows, measured side by side in one run:

- ``single``: ``trainer.train`` of that config alone (one trial per device, how a plain worker trains);
- ``pack K (auto: ...)``: K members (seeds 0..K-1) in one ``trainer.pack.Pack`` as the worker runs them:
  vmap where it works and is timed faster than running the members in turn;
- ``pack K (vmap)`` / ``pack K (in turn)``: the same K members forced each way.

Images/s are training steps only, in steady state (after a warm-up); trials/hour = images/s / trial_images
x 3600 (evaluations excluded: they cost the same per trial either way). Also printed: the precision probe's
table (images/s per mode on this machine, and the mode `auto` picks).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks._common import parser as bench_parser
from benchmarks._common import write_result
from search.spec.study_file import StudySpec, apply_params
from trainer import TrainConfig, load_data, train
from trainer.pack import Pack
from trainer.precision import choose, clear_memo


def _pack_rate(cfg: TrainConfig, data: Any, k: int, steps: int, vectorise: str) -> tuple[float, bool]:
    pack = Pack(data, cfg.device, evaluator=None, vectorise=vectorise)
    for seed in range(k):
        pack.add(cfg.replace(seed=seed, budget_images=10**9, eval_every_images=10**9))
    for _ in range(3):  # warm-up
        pack.step()
    if cfg.device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        pack.step()
    if cfg.device.startswith("cuda"):
        torch.cuda.synchronize()
    return k * steps * cfg.batch_size * cfg.n_critic / (time.perf_counter() - t0), bool(pack.vectorised)


def main() -> None:
    ap = bench_parser(__doc__, "packing")
    ap.add_argument("--study", default="studies/mnist-dcgan.yaml")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--packs", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--steps", type=int, default=60, help="timed generator steps per row")
    args = ap.parse_args()

    spec = StudySpec.from_file(args.study)
    train_cfg = spec.train.replace(device=args.device, amp="off", channels_last="off")
    if args.data_root:
        train_cfg = train_cfg.replace(data_root=args.data_root)
    cfg = apply_params(train_cfg, dict(spec.warm_start[0])) if spec.warm_start else train_cfg
    data = load_data(cfg, torch.device(args.device))
    trial_images = cfg.budget_images

    steps_images = args.steps * cfg.batch_size * cfg.n_critic
    single_cfg = cfg.replace(budget_images=steps_images, eval_every_images=steps_images, eval_metric="none")
    train(single_cfg.replace(budget_images=cfg.batch_size * 5, eval_every_images=cfg.batch_size * 5), data=data)
    single = train(single_cfg, data=data).images_per_s
    rows = [{"row": "single (one trial per device)", "k": 1, "images_per_s": single}]
    for k in args.packs:
        for mode in ("auto", "on", "off") if k > 1 else ("auto",):
            rate, vmapped = _pack_rate(cfg, data, k, args.steps, mode)
            label = {"auto": "auto: ", "on": "vmap", "off": "in turn"}[mode] + (("vmap" if vmapped else "in turn")
                                                                                if mode == "auto" else "")
            rows.append({"row": f"pack {k} ({label})", "k": k, "images_per_s": rate, "vectorised": vmapped})
    for r in rows:
        r["trials_per_hour"] = r["images_per_s"] / trial_images * 3600
        r["x_single"] = r["images_per_s"] / single

    shape = data.shape
    with tempfile.TemporaryDirectory() as tmp:
        clear_memo()
        decision = choose(spec.train.replace(device=args.device), shape, torch.device(args.device), cache=Path(tmp))
    device_name = decision.device
    print(f"{args.study}: trial config {json.dumps(dict(spec.warm_start[0])) if spec.warm_start else '(study train)'}, "
          f"{trial_images:,} images per trial, fp32, device {args.device} ({device_name}), torch {torch.__version__}")
    print(f"{'row':<34} {'images/s':>10} {'trials/hour':>12} {'x single':>9}")
    for r in rows:
        print(f"{r['row']:<34} {r['images_per_s']:>10,.0f} {r['trials_per_hour']:>12,.1f} {r['x_single']:>9.2f}")
    print(f"\nprecision probe ({cfg.arch}, batch {cfg.batch_size}, images {shape}): "
          + ", ".join(f"{k} {v:,.0f} img/s" for k, v in decision.table.items()) + f" -> auto picks {decision.mode.name}")
    fp32 = decision.table.get("fp32")
    if fp32:
        print("ratios to fp32: " + ", ".join(f"{k} x{v / fp32:.2f}" for k, v in decision.table.items()))
    write_result(args, {"device": device_name, "rows": rows, "precision": decision.to_dict()})


if __name__ == "__main__":
    main()
