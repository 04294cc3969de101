"""Each warm-start preset, resolved in a study's space, trained at the study's trial budget: which to start from.

    python -m benchmarks.quality.warm_starts --study studies/mnist-dcgan.yaml --data-root ../shared/data/mnist --seeds 0 1 2

Prints, per preset (``search/spec/presets.py``), the values the study would enqueue, the FID at each evaluation
and the final FID per training seed; presets whose values fall outside the study's space are listed as such.
This is how the shipped MNIST study's warm starts were chosen (BENCHMARKS.md, "Warm starts").
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from benchmarks._common import parser as bench_parser
from benchmarks._common import write_result
from search import SpecError, StudySpec
from search.spec.presets import WARM_STARTS
from search.spec.study_file import apply_params
from trainer import load_data, make_evaluator, train


def main() -> None:
    parser = bench_parser(__doc__, "warm-starts")
    parser.add_argument("--study", default="studies/mnist-dcgan.yaml")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--presets", nargs="+", default=None, help="default: every registered preset")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()

    spec = StudySpec.from_file(args.study)
    raw = dict(spec.raw)
    if args.data_root:
        raw["train"] = {**raw["train"], "data_root": args.data_root}
    base = StudySpec.from_dict(raw, source=args.study).train
    data = load_data(base)
    evaluator = make_evaluator(base, data)
    metric = spec.objective
    print(f"study {spec.name}: {base.budget_images} images per trial, {metric} every {base.eval_every_images}")
    report: dict[str, Any] = {}
    for name in args.presets or WARM_STARTS.names():
        try:
            params = StudySpec.from_dict({**raw, "warm_start": [name]}, source=args.study).warm_start[0]
        except SpecError as exc:
            print(f"{name:14s} not in this space: {str(exc).split(': ', 1)[1]}")
            continue
        runs = []
        for seed in args.seeds:
            cfg = apply_params(base, params).replace(seed=seed)
            curve: list[float] = []

            def record(event: Any, into: list[float] = curve) -> None:
                into.append(event.metrics[metric])

            t0 = time.perf_counter()
            result = train(cfg, data=data, evaluator=evaluator, callback=record)
            runs.append({"seed": seed, "final": result.final_metrics[metric], "curve": curve,
                         "seconds": round(time.perf_counter() - t0, 1)})
            print(f"{name:14s} seed {seed}: {metric} {runs[-1]['final']:8.2f}   curve "
                  f"{' '.join(f'{v:.1f}' for v in curve)}   {runs[-1]['seconds']:.0f} s", flush=True)
        finals = [r["final"] for r in runs]
        spread = statistics.pstdev(finals) if len(finals) > 1 else 0.0
        print(f"{name:14s} {params}\n{'':14s} mean {statistics.fmean(finals):.2f} +- {spread:.2f}")
        report[name] = {"params": params, "runs": runs}
    write_result(args, report)


if __name__ == "__main__":
    main()
