"""Per-evaluation grids, curves and notes, seen through optuna-dashboard's HTTP API and a real browser."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest

from search import api
from search.results.gallery import artifact_metas, curves_svg
from tests.search.conftest import small_study, write_study

ROOT = Path(__file__).resolve().parents[3]
EVALS = 3  # evaluations per trial in these studies (960 images, one every 320)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, timeout: float = 10.0) -> tuple[str, bytes]:
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - a local test server
        return r.headers.get("Content-Type", ""), r.read()


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A finished FID study: 4 trials of 3 evaluations; only a trial that is the best when it ends keeps every grid; exported."""
    tmp = tmp_path_factory.mktemp("gallery")
    study = small_study("gallery", tmp, objective="fid", train={"eval_metric": "fid"},
                        budget={"n_trials": 4, "trial_images": 320 * EVALS, "eval_every_images": 320},
                        storage={"keep_grids": 1}, warm_start=[{"lr_g": 2e-4, "loss": "bce"}])  # a good first trial:
    # a later one that ends worse is thinned (what the thinning test needs to see)
    result = api.run(write_study(tmp, study), export_to=tmp / "best")
    return {"tmp": tmp, "storage": study["storage"]["url"], "study": result.study, "best": tmp / "best"}


@pytest.fixture(scope="module")
def dashboard(finished: dict[str, Any]) -> Iterator[str]:
    """`gan-search dashboard` on the finished study, as a user starts it; yields its base URL."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "search.cli", "dashboard", "--storage", finished["storage"],
                             "--port", str(port)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90  # a refused connection returns at once: wait on the clock, not a count
        while True:  # (on a loaded 2-core machine the server's imports alone took over 20 s)
            try:
                _get(f"{base}/api/studies", timeout=1)
                break
            except OSError:
                if proc.poll() is not None:
                    raise AssertionError(proc.stderr.read().decode() if proc.stderr else "dashboard exited") from None
                if time.monotonic() > deadline:
                    raise AssertionError(f"the dashboard did not answer on {base} within 90 s") from None
                time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.slow
def test_each_evaluation_stores_a_grid_and_the_best_trials_keep_them_all(finished: dict[str, Any]) -> None:
    study: optuna.Study = finished["study"]
    trials = sorted(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)), key=lambda t: float(t.value or 0))
    assert len(trials) == 4
    for t in trials:
        grids = t.user_attrs["grids"]
        names = sorted(m["filename"] for m in artifact_metas(t) if m["filename"].startswith("samples-"))
        # the final best was the best when it ended, so it keeps every grid; another trial kept them only if it
        # was the best so far when it ended (keep_grids=1), else its first and last remain
        best_when_ended = all(float(o.value or 0) > float(t.value or 0) for o in trials
                              if o.datetime_complete is not None and t.datetime_complete is not None
                              and o.datetime_complete < t.datetime_complete)
        expected = [320, 640, 960] if best_when_ended else [320, 960]
        assert [g["mark"] for g in grids] == expected
        assert names == [f"samples-{m:09d}.png" for m in expected]
        store = optuna.artifacts.FileSystemArtifactStore(str(finished["tmp"] / "artifacts"))
        for g in grids:  # every listed grid exists in the artifact store
            with store.open_reader(g["artifact"]) as fh:
                assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    thinned = [t for t in trials if len(t.user_attrs["grids"]) < EVALS]
    assert thinned, "sampler seed 0: some trial ends worse than an earlier one and is thinned"


def test_dashboard_api_shows_one_grid_per_evaluation_and_a_note(finished: dict[str, Any], dashboard: str) -> None:
    summaries = json.loads(_get(f"{dashboard}/api/studies")[1])["study_summaries"]
    study_id = next(s["study_id"] for s in summaries if s["study_name"] == "gallery")
    detail = json.loads(_get(f"{dashboard}/api/studies/{study_id}")[1])
    best = min(detail["trials"], key=lambda t: t["values"][0])
    grids = sorted(a["filename"] for a in best["artifacts"] if a["filename"].startswith("samples-"))
    assert grids == [f"samples-{320 * i:09d}.png" for i in range(1, EVALS + 1)]
    assert len(best["intermediate_values"]) == EVALS
    note = best["note"]["body"]
    assert "samples at 960 images" in note and "curves" in note
    for a in best["artifacts"]:
        if a["filename"].startswith("samples-"):
            assert a["artifact_id"] in note  # the note's history links every grid
            kind, body = _get(f"{dashboard}/artifacts/{study_id}/{best['trial_id']}/{a['artifact_id']}")
            assert kind == "image/png" and body[:4] == b"\x89PNG"
        if a["filename"] == "curves.svg":
            kind, body = _get(f"{dashboard}/artifacts/{study_id}/{best['trial_id']}/{a['artifact_id']}")
            assert kind == "image/svg+xml" and b"<polyline" in body


def _chromium() -> str | None:
    return next((p for name in ("chromium", "chromium-browser", "google-chrome") if (p := shutil.which(name))), None)


def _rendered(browser: str, url: str) -> str:
    """The page's DOM after its scripts ran (headless Chromium)."""
    out = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=20000",
                          "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True)
    return out.stdout


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None, reason="needs Chromium (Debian package `chromium`; .ci/run installs it)")
def test_a_browser_renders_the_trial_page_and_the_report(finished: dict[str, Any], dashboard: str) -> None:
    browser = _chromium()
    assert browser is not None
    study: optuna.Study = finished["study"]
    best = study.best_trial
    dom = _rendered(browser, f"{dashboard}/dashboard/studies/{study._study_id}/trials?numbers={best.number}")
    for g in best.user_attrs["grids"]:  # the note's grid history and the artifact cards, as <img> elements
        assert f'alt="{g["mark"]}"' in dom and g["artifact"] in dom
    assert dom.count("<img") >= 2 * EVALS

    report = _rendered(browser, (finished["best"] / "report.html").as_uri())
    assert report.count('class="main-svg"') >= 3  # plotly drew its figures (offline: plotly.js is inline)
    assert report.count("<img alt=\"samples at") == EVALS  # the exported trial's grid history


def test_report_has_the_grid_history_and_every_trials_curve(finished: dict[str, Any]) -> None:
    report = (finished["best"] / "report.html").read_text()
    assert report.count("<img alt='samples at") == EVALS and "src='data:image/png;base64," in report  # inline
    assert "Every trial&#x27;s curve" in report or "Every trial's curve" in report
    study: optuna.Study = finished["study"]
    for t in study.trials:
        assert f"trial {t.number} (complete)" in report


def test_curves_svg_draws_both_panels() -> None:
    history = [{"mark": 320, "d_loss": 1.4, "g_loss": 0.7, "fid": 300.0},
               {"mark": 640, "d_loss": 1.2, "g_loss": 0.9, "fid": 120.0}]
    svg = curves_svg(history, "fid")
    assert svg.count("<polyline") == 3 and "(log)" in svg
    assert curves_svg([], "fid").count("<polyline") == 0  # nothing to draw yet: empty panels, no error


def test_tensorboard_gets_losses_objective_and_grids_per_evaluation(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    study = small_study("board", tmp_path, budget={"n_trials": 1, "trial_images": 640, "eval_every_images": 320})
    api.run(write_study(tmp_path, study), tensorboard=str(tmp_path / "tb"))
    events = EventAccumulator(str(tmp_path / "tb" / "board" / "trial-0000"), size_guidance={"images": 0})
    events.Reload()
    assert {"d_loss", "g_loss"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("d_loss")] == [320, 640]
    assert [e.step for e in events.Images("samples")] == [320, 640]
