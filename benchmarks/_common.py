"""What every benchmark shares: its argument parser (with ``--out``) and the JSON it writes, stamped with the
machine, the torch build and the commit, so that a figure in BENCHMARKS.md can be traced to how it was made."""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def parser(doc: str | None, name: str, out: str | None = None) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` showing the module's docstring, with ``--out PATH`` for the JSON results (``auto``:
    ``benchmarks/results/<name>-<date>.json``, the name a result kept in the repository has; default ``out``)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=out, help=f"JSON results; auto: benchmarks/results/{name}-DATE.json")
    ap.set_defaults(benchmark=name)
    return ap


def out_path(out: str | Path | None, name: str) -> Path | None:
    """``--out`` as a path (``auto`` named by benchmark and date), or None for no file."""
    if out is None or str(out) == "-":
        return None
    if str(out) == "auto":
        return RESULTS / f"{name}-{datetime.date.today().isoformat()}.json"
    return Path(out)


@functools.cache
def machine() -> dict[str, Any]:
    """The CPU, its cores, torch's threads and build, the accelerator if any, and the commit of this tree, read once
    per process: a long benchmark rewriting its results is stamped with the commit it started from."""
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info: dict[str, Any] = {"cpu": cpu, "cores": os.cpu_count(), "date": datetime.date.today().isoformat()}
    if hasattr(os, "sched_getaffinity"):
        info["cores_usable"] = len(os.sched_getaffinity(0))  # fewer than cores under taskset
    try:
        import torch

        info.update(torch=torch.__version__, torch_threads=torch.get_num_threads(),
                    gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
    except ImportError:
        pass
    try:
        info["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                        text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        info["commit"] = None
    return info


def train_changes(items: list[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` arguments as train keys, each VALUE read as YAML (safe loader: ``64``, ``false``, ``bce``)."""
    import yaml

    bad = [item for item in items if "=" not in item or not item.partition("=")[0]]
    if bad:
        raise SystemExit(f"--set must be KEY=VALUE, but got {bad[0]!r}")
    return {k: yaml.safe_load(v) for k, _, v in (item.partition("=") for item in items)}


def write_result(args: argparse.Namespace, payload: dict[str, Any]) -> Path | None:
    """Write ``payload`` with the arguments and the machine beside it where ``args.out`` says; the path written."""
    path = out_path(args.out, args.benchmark)
    if path is None:
        return None
    payload = {"args": {k: v if isinstance(v, (int, float, bool, type(None))) else str(v) for k, v in vars(args).items()},
               **payload}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=1, default=str))
    return path


__all__ = ["RESULTS", "ROOT", "machine", "out_path", "parser", "train_changes", "write_result"]
