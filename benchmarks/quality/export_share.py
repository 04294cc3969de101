"""What a user waits for: a study file's search, then its export, timed apart; study files side by side.

    python -m benchmarks.quality.export_share --studies studies/fashion-mnist.yaml studies/fashion-mnist-promotion.yaml \
        --minutes 20 --workers 2 --out auto

Each study file runs as a user runs it (``gan-search run FILE --timeout M --export DIR``, here through the API: the
same calls), on a fresh SQLite store, with ``--workers`` local workers: the search for ``--minutes`` (no trial
starts after it; running ones finish), then the export (today's default: the top 3 configs x 3 fresh seeds at
the production budget, from zero; with ``promotion:``: the race of the finalists, which already are production-budget
runs). Printed per file: search and export wall seconds, the export's share of the whole, the trials by kind
(search, continuations, export runs) and the exported value (the service's FID at the production budget: its
mean over the exported config's runs, and the exported run's). One run per file: the values carry one seed's
noise; the shares are what the issue's acceptance asks (export share at most 0.3).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._common import parser, write_result


def run_one(study_file: Path, minutes: float, workers: int, data_root: str | None) -> dict[str, Any]:
    from search import api, attrs
    from search.execution.launch import run_workers

    with tempfile.TemporaryDirectory() as tmp:
        spec = api.load_spec(study_file, storage=f"sqlite:///{tmp}/study.db", artifacts=f"{tmp}/art",
                             timeout=minutes * 60, data_root=data_root, workers=workers)
        t0 = time.perf_counter()
        study, _ = api.create(spec)
        run_workers(spec.name, spec.storage, workers, artifacts=spec.artifacts, timeout=spec.timeout)
        t1 = time.perf_counter()
        result = api.export(spec.name, Path(tmp) / "best", storage=spec.storage, workers=workers)
        t2 = time.perf_counter()
        trials = study.get_trials(deepcopy=False)
        confirmation = (result.get("confirmation") or [{}])[0]
        return {"study": str(study_file), "minutes": minutes, "workers": workers,
                "search_s": round(t1 - t0, 1), "export_s": round(t2 - t1, 1),
                "export_share": round((t2 - t1) / (t2 - t0), 3),
                "search_trials": sum(attrs.CONFIRM not in t.user_attrs and attrs.CONTINUES not in t.user_attrs
                                     for t in trials),
                "continuations": sum(attrs.CONTINUES in t.user_attrs for t in trials),
                "export_runs": sum(attrs.CONFIRM in t.user_attrs for t in trials),
                "exported_trial": result["trial"], "exported_value": result["value"],
                "exported_config_mean": confirmation.get("mean"),
                "exported_config_runs": len(confirmation.get("runs", [])) or None}


def main() -> None:
    ap = parser(__doc__, "export-share")
    ap.add_argument("--studies", type=Path, nargs="+", required=True)
    ap.add_argument("--minutes", type=float, default=20.0, help="the search's clock per study file")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--data-root", default=None)
    args = ap.parse_args()
    rows = []
    for study_file in args.studies:
        row = run_one(study_file, args.minutes, args.workers, args.data_root)
        print(row, flush=True)
        rows.append(row)
    write_result(args, {"rows": rows})


if __name__ == "__main__":
    main()
