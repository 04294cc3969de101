"""What deciding the precision costs against the trials it decides, old probe and new, side by side in one run.

    python -m benchmarks.speed.precision_probe --out auto                       # Fashion-MNIST's DCGAN, batch 32/64/128
    python -m benchmarks.speed.precision_probe --batches 32 64 128 --images 64000 --threads 2

For each trial shape (the study file's train section at each batch size, ``amp``/``channels_last`` auto) three
things are timed on this machine, in this order and with an empty cache each:
  * the old probe: every candidate (fp32, bf16, each with and without channels_last) warmed up and timed for 3
    rounds of 6 steps, for every shape (``time_modes(..., screen=False)``; the decision the service made before);
  * the new probe: ``trainer.precision.choose`` over the shapes in turn (the screen drops a mode under half of the
    fastest; bf16 found slow at one shape is not timed again on this machine);
  * the trial itself: ``trainer.train`` of ``--images`` images with the study's evaluations (fp32, the mode both
    probes pick where bf16 is slow), the time a probe is charged against.
Printed: seconds of each, and each probe's share of the trials it decides (the target: at most 0.25).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks._common import parser, write_result

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    ap = parser(__doc__, "precision-probe")
    ap.add_argument("--study", type=Path, default=ROOT / "studies" / "fashion-mnist.yaml")
    ap.add_argument("--batches", type=int, nargs="+", default=[32, 64, 128])
    ap.add_argument("--images", type=int, default=64000, help="images per trial (the study's trial budget)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--data-root", default=None)
    args = ap.parse_args()

    import torch

    from trainer import TrainConfig, prepare, train
    from trainer.precision import candidates, choose, clear_memo, time_modes

    if args.threads:
        torch.set_num_threads(args.threads)
    raw = yaml.safe_load(args.study.read_text())
    train_raw = {**raw["train"], "amp": "auto", "channels_last": "auto", "device": "cpu",
                 **({"data_root": args.data_root} if args.data_root else {})}
    base = TrainConfig.from_dict(train_raw)
    setup = prepare(base.replace(budget_images=args.images, eval_every_images=raw["budget"]["eval_every_images"]))
    shape, device = setup.data.shape, torch.device("cpu")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as cache:
        clear_memo()
        for batch in args.batches:
            cfg = base.replace(batch_size=batch)
            modes = candidates(cfg, shape, device)
            t0 = time.perf_counter()
            table = time_modes(cfg, shape, device, modes, screen=False)
            rows.append({"batch": batch, "old_probe_s": round(time.perf_counter() - t0, 1), "old_table": table})
        for row in rows:
            t0 = time.perf_counter()
            decision = choose(base.replace(batch_size=row["batch"]), shape, device, cache=Path(cache))
            row |= {"new_probe_s": round(time.perf_counter() - t0, 1), "new_table": decision.table,
                    "new_mode": decision.mode.name}
        for row in rows:
            cfg = base.replace(batch_size=row["batch"], budget_images=args.images, amp="off", channels_last="off",
                               eval_every_images=raw["budget"]["eval_every_images"])
            t0 = time.perf_counter()
            train(cfg, data=setup.data, evaluator=setup.evaluator)
            row["trial_s"] = round(time.perf_counter() - t0, 1)
            print(row, flush=True)
    trials = sum(r["trial_s"] for r in rows)
    summary = {"old_probe_s": round(sum(r["old_probe_s"] for r in rows), 1),
               "new_probe_s": round(sum(r["new_probe_s"] for r in rows), 1), "trials_s": round(trials, 1),
               "old_share": round(sum(r["old_probe_s"] for r in rows) / trials, 3),
               "new_share": round(sum(r["new_probe_s"] for r in rows) / trials, 3)}
    print(summary, flush=True)
    write_result(args, {"rows": rows, "summary": summary})


if __name__ == "__main__":
    main()
