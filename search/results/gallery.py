"""What a trial shows while it runs: a sample grid per evaluation, its curves, and a dashboard note.

At every evaluation the trial's grid (the same fixed noise each time, so grids compare) is uploaded as an
artifact named by its image count (``samples-000016000.png``), and the trial's optuna-dashboard note is
rewritten: the latest grid, an SVG of the D/G losses and the objective against images, and the grid
history. Artifacts stay bounded: when a trial ends outside the study's ``keep_grids`` best complete trials
(``storage.keep_grids`` in the study file; or pruned, or failed), its grids are thinned to the first and
the last.
"""

from __future__ import annotations

import contextlib
import html
import json
import logging
import math
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.artifacts import upload_artifact
from optuna.artifacts.exceptions import ArtifactNotFound

from search import attrs
from search._optuna import study_id, trial_id
from trainer.config import COVERAGE_METRICS
from trainer.io import save_grid

log = logging.getLogger(__name__)

GRID_SAMPLES = 64  # images per grid (8 x 8)
ARTIFACT_ATTR_PREFIX = "artifacts:"  # optuna.artifacts' trial system attribute prefix (read by the dashboard)


def grid_name(mark: int) -> str:
    return f"samples-{mark:09d}.png"


def artifact_url(trial: optuna.Trial, artifact_id: str) -> str:
    """The dashboard's route for a trial artifact (relative: it works behind any host and port)."""
    return f"/artifacts/{study_id(trial.study)}/{trial_id(trial)}/{artifact_id}"


class Gallery:
    """One running trial's grids, curves and note. A retry inherits the grid list of the trial it resumes."""

    def __init__(self, trial: optuna.Trial, store: Any, objective: str, workdir: Path) -> None:
        self.trial, self.store, self.objective, self.workdir = trial, store, objective, workdir
        self.grids: list[dict[str, Any]] = list(trial.user_attrs.get(attrs.GRIDS, []))
        self.curves_id: str | None = None

    def add(self, mark: int, images: torch.Tensor, history: list[dict[str, float]]) -> str:
        """Upload the grid of the evaluation at ``mark`` images and rewrite the curves and the note."""
        path = self.workdir / grid_name(mark)
        save_grid(images, path)
        artifact_id = self._upload(path, "image/png")
        self.grids.append({"mark": mark, "artifact": artifact_id, "trial_id": trial_id(self.trial)})
        self.trial.set_user_attr(attrs.GRIDS, self.grids)
        svg = self.workdir / "curves.svg"
        svg.write_text(curves_svg(history, self.objective))
        if self.curves_id is None:
            self.curves_id = self._upload(svg, "image/svg+xml")
        else:  # one curves artifact per trial, rewritten in place
            with open(svg, "rb") as fh:
                self.store.write(self.curves_id, fh)
        self._note(history)
        return artifact_id

    def thin(self, keep_all: bool) -> None:
        """Keep every grid (``keep_all``) or only the first and the last of this trial's own grids."""
        own = [g for g in self.grids if g["trial_id"] == trial_id(self.trial)]
        if keep_all or len(own) <= 2:
            return
        for g in own[1:-1]:
            self._forget(g["artifact"])
        dropped = {g["artifact"] for g in own[1:-1]}
        self.grids = [g for g in self.grids if g["artifact"] not in dropped]
        self.trial.set_user_attr(attrs.GRIDS, self.grids)
        log.debug("trial %d: grids thinned to %d", self.trial.number, len(self.grids))

    # ------------------------------------------------------------ helpers
    def _upload(self, path: Path, mimetype: str) -> str:
        return upload_artifact(artifact_store=self.store, file_path=str(path), study_or_trial=self.trial,
                               mimetype=mimetype)

    def _forget(self, artifact_id: str) -> None:
        """Remove an artifact of this (running) trial as optuna-dashboard's own delete does: the file goes and
        its metadata becomes ``null`` (which the dashboard skips; ``optuna.artifacts.get_all_artifact_meta``
        does not, so read thinned trials with ``search.results.gallery.artifact_metas``)."""
        with contextlib.suppress(ArtifactNotFound):
            self.store.remove(artifact_id)
        self.trial.storage.set_trial_system_attr(trial_id(self.trial), ARTIFACT_ATTR_PREFIX + artifact_id,
                                                 json.dumps(None))

    def _note(self, history: list[dict[str, float]]) -> None:
        from optuna_dashboard import save_note

        own = {g["artifact"] for g in self.grids if g["trial_id"] == trial_id(self.trial)}
        latest = self.grids[-1]
        lines = [f"### Trial {self.trial.number}: samples at {latest['mark']:,} images",
                 f"![samples at {latest['mark']} images]({artifact_url(self.trial, latest['artifact'])})", ""]
        if self.curves_id is not None:
            lines += [f"### D/G losses and {self.objective} against images",
                      f"![curves]({artifact_url(self.trial, self.curves_id)})", ""]
        cover = [k for k in COVERAGE_METRICS if any(k in h for h in history)]  # precision, recall, ... if measured
        lines += ["### History", "", f"| images | {self.objective} | D loss | G loss | {' | '.join(cover)}"
                  f"{' | ' if cover else ''}samples |", "|---:|---:|---:|---:|" + "---:|" * len(cover) + ":---|"]
        grid_at = {g["mark"]: g["artifact"] for g in self.grids if g["artifact"] in own}
        for h in history:
            mark = int(h["mark"])
            shown = f"![{mark}]({artifact_url(self.trial, grid_at[mark])})" if mark in grid_at else ""
            cells = "".join(f"{_fmt(h.get(k))} | " for k in cover)
            lines.append(f"| {mark:,} | {_fmt(h.get(self.objective))} | {_fmt(h.get('d_loss'))} | "
                         f"{_fmt(h.get('g_loss'))} | {cells}{shown} |")
        shares = self.trial.user_attrs.get(attrs.CLASS_SHARES)
        if shares:
            lines += ["", "### Class shares at the last evaluation (domain classifier)", "",
                      "| " + " | ".join(str(i) for i in range(len(shares))) + " |", "|" + "---:|" * len(shares),
                      "| " + " | ".join(f"{100 * v:.1f}%" for v in shares) + " |"]
        save_note(self.trial, "\n".join(lines))


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def curves_svg(history: list[dict[str, float]], objective: str, width: int = 640, height: int = 220) -> str:
    """Two small line charts side by side, without dependencies: D/G losses, and the objective (log scale)."""
    marks = [float(h["mark"]) for h in history]
    panels = [("D/G loss", {"d_loss": "#1f77b4", "g_loss": "#ff7f0e"}, False),
              (objective, {objective: "#2ca02c"}, objective in ("fid", "kid"))]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'font-family="sans-serif" font-size="11"><rect width="100%" height="100%" fill="white"/>']
    pw = width // 2
    for i, (title, series, log_scale) in enumerate(panels):
        x0, y0, w, h = i * pw + 45, 20, pw - 60, height - 45

        def tr(v: float, log_scale: bool = log_scale) -> float:
            return math.log10(max(v, 1e-12)) if log_scale else v

        values = [tr(h_[k]) for h_ in history for k in series if _finite(h_.get(k))]
        parts.append(f'<text x="{x0}" y="13">{html.escape(title)}{" (log)" if log_scale else ""} against images</text>')
        parts.append(f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#999"/>')
        if not values or not marks:
            continue
        lo, hi = min(values), max(values)
        hi = hi if hi > lo else lo + 1.0
        xmin, xmax = min(marks), max(marks) if max(marks) > min(marks) else min(marks) + 1.0
        for k, color in series.items():
            pts = [(x0 + (m - xmin) / (xmax - xmin) * w, y0 + h - (tr(h_[k]) - lo) / (hi - lo) * h)
                   for m, h_ in zip(marks, history, strict=True) if _finite(h_.get(k))]
            if pts:
                parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="'
                             + " ".join(f"{x:.1f},{y:.1f}" for x, y in pts) + '"/>')
                parts.append(f'<text x="{pts[-1][0] - 40:.1f}" y="{pts[-1][1] - 4:.1f}" fill="{color}">{k}</text>')
        fmt = (lambda v: f"{10 ** v:.3g}") if log_scale else (lambda v: f"{v:.3g}")
        parts.append(f'<text x="{x0 - 4}" y="{y0 + 10}" text-anchor="end">{fmt(hi)}</text>')
        parts.append(f'<text x="{x0 - 4}" y="{y0 + h}" text-anchor="end">{fmt(lo)}</text>')
        parts.append(f'<text x="{x0}" y="{y0 + h + 14}">{int(xmin):,}</text>')
        parts.append(f'<text x="{x0 + w}" y="{y0 + h + 14}" text-anchor="end">{int(xmax):,} images</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


def in_top(study: optuna.Study, value: float, k: int) -> bool:
    """Whether ``value`` would rank among the ``k`` best complete search trials of the study."""
    from search.results.selection import primary, ranked, signs

    sign = signs(study)[0]
    better = [t for t in ranked(study)[:k] if sign * float(primary(t) or 0.0) < sign * value]
    return len(better) < k


def artifact_metas(trial: optuna.trial.FrozenTrial) -> list[dict[str, Any]]:
    """The trial's artifact metadata, skipping artifacts removed by thinning (or in the dashboard)."""
    metas = (json.loads(v) for k, v in trial.system_attrs.items() if k.startswith(ARTIFACT_ATTR_PREFIX))
    return [m for m in metas if m is not None]
