"""Worker scaling on the real PostgreSQL: trials/minute and storage (SQL) time per trial at 1, 4, 16 workers.

    python benchmarks/workers.py --workers 1 4 16 --trials 32

Each setting gets its own new database (dropped afterwards). Trials are tiny (digits, g_loss objective) so
that the storage and the coordination, not the training, are what is measured.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from pathlib import Path

import optuna
import psycopg
import yaml

from search import StudySpec, create_or_load_study, plan, run_workers


def study_file(tmp: Path, name: str, url: str, n: int) -> Path:
    raw = {
        "name": name, "objective": "g_loss",
        "train": {"dataset": "digits", "arch": "dcgan", "g_width": 8, "d_width": 8, "latent_dim": 8,
                  "batch_size": 32, "device": "cpu"},
        "space": {"lr_g": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True}},
        "sampler": {"name": "tpe", "seed": 0}, "pruner": {"name": "median"},
        "budget": {"n_trials": n, "trial_images": 320, "eval_every_images": 160},
        "storage": {"url": url, "artifacts": str(tmp / "artifacts"), "heartbeat_interval": 5, "grace_period": 20},
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--trials", type=int, default=32)
    args = ap.parse_args()
    admin = psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True)
    rows = []
    for k in args.workers:
        db = f"gs_bench_{uuid.uuid4().hex[:8]}"
        admin.execute(f'CREATE DATABASE "{db}"')
        url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{db}"
        try:
            with tempfile.TemporaryDirectory() as tmp:
                spec = StudySpec.from_file(study_file(Path(tmp), "bench", url, args.trials))
                plan(create_or_load_study(spec), spec.n_trials)
                t0 = time.perf_counter()
                reports = run_workers("bench", url, k)
                wall = time.perf_counter() - t0
                trials = optuna.load_study(study_name="bench", storage=url).get_trials()
                first = min(t.datetime_start for t in trials if t.datetime_start)
                last = max(t.datetime_complete for t in trials if t.datetime_complete)
                span = (last - first).total_seconds()
                done = sum(r.trials for r in reports)
                rows.append({
                    "workers": k, "trials": done, "wall_s": round(wall, 1), "trial_span_s": round(span, 1),
                    "trials_per_min": round(60 * done / span, 1),
                    "storage_s_per_trial": round(sum(r.storage_seconds for r in reports) / done, 4),
                    "sql_statements_per_trial": round(sum(r.statements for r in reports) / done, 1),
                })
                print(json.dumps(rows[-1]), flush=True)
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    base = rows[0]["trials_per_min"]
    for row in rows:
        print(f"workers={row['workers']:>3}  trials/min={row['trials_per_min']:>7}  x{row['trials_per_min'] / base:.2f} "
              f"vs {rows[0]['workers']} worker(s)  storage s/trial={row['storage_s_per_trial']}")


if __name__ == "__main__":
    main()
