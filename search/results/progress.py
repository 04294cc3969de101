"""The study-level progress view: one bar on a terminal, plain log lines elsewhere.

    [########............] 8/20 trials done | 3 pruned | 2 running | best 12.3 (trial 5) | 02:13 elapsed, ~03:20 left

``Monitor`` polls the storage from a thread while workers run (in this process or in others) and draws the
bar on a terminal (redrawn in place; log lines are printed above it); on anything else it logs a line
whenever the counts change. ``gan-search status --watch`` draws the same view for a study running elsewhere.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass
from typing import IO, Any

import optuna

from search.strategy.study import progress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Snapshot:
    planned: int
    done: int
    complete: int
    pruned: int
    failed: int
    running: int
    best_value: float | None
    best_trial: int | None
    elapsed: float  # seconds since the view started
    eta: float | None  # seconds left, from the rate of trials finished since the view started

    @property
    def finished(self) -> bool:
        return self.done >= self.planned and self.running == 0


def snapshot(study: optuna.Study, started: float, done_at_start: int | None = None) -> Snapshot:
    """Where ``study`` stands now; ``done_at_start`` (trials done when the view started) gives the rate."""
    from search.results.selection import primary, ranked

    p = progress(study)
    best = ranked(study)
    elapsed = time.monotonic() - started
    new = p["done"] - (done_at_start if done_at_start is not None else p["done"])
    left = max(0, p["planned"] - p["done"])
    eta = elapsed / new * left if new > 0 else None
    return Snapshot(p["planned"], p["done"], p["complete"], p["pruned"], p["failed"], p["running"],
                    primary(best[0]) if best else None,
                    best[0].number if best else None, elapsed, eta)


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def render(s: Snapshot, bar: bool = True, width: int = 20) -> str:
    """The one-line view; ``bar=False`` leaves out the drawn bar (for log lines)."""
    parts = [f"{s.done}/{s.planned} trials done", f"{s.pruned} pruned", f"{s.running} running"]
    if s.failed:
        parts.insert(2, f"{s.failed} failed")
    parts.append(f"best {s.best_value:.4g} (trial {s.best_trial})" if s.best_value is not None else "best -")
    parts.append(f"{_clock(s.elapsed)} elapsed" + (f", ~{_clock(s.eta)} left" if s.eta is not None else ""))
    line = " | ".join(parts)
    if not bar:
        return line
    filled = int(width * s.done / s.planned) if s.planned else width
    return f"[{'#' * filled}{'.' * (width - filled)}] {line}"


class _BarStream:
    """Wraps the terminal stream of the log handlers: a log line clears the bar, and the bar is redrawn below it."""

    def __init__(self, stream: IO[str], monitor: Monitor) -> None:
        self.stream, self.monitor = stream, monitor

    def write(self, text: str) -> int:
        with self.monitor.lock:
            self.stream.write("\r\x1b[K" + text)
            if text.endswith("\n"):
                self.stream.write(self.monitor.line)
            self.stream.flush()
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


class Monitor:
    """Show a study's progress while it runs: ``with Monitor(study): run_workers(...)``."""

    def __init__(self, study: optuna.Study, stream: IO[str] | None = None, interval: float = 1.0,
                 tty: bool | None = None) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be > 0, but got {interval=}.")
        self.study, self.stream, self.interval = study, stream or sys.stderr, interval
        self.tty = self.stream.isatty() if tty is None else tty
        self.lock = threading.Lock()
        self.line = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="gan-search-progress")
        self._started = time.monotonic()
        self._done0: int | None = None
        self._last_logged: tuple[int, ...] | None = None
        self._handlers: list[tuple[logging.StreamHandler[Any], IO[str]]] = []

    def __enter__(self) -> Monitor:
        self._done0 = progress(self.study)["done"]
        if self.tty:
            for h in logging.getLogger().handlers:
                if isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) is self.stream:
                    self._handlers.append((h, h.stream))
                    h.setStream(_BarStream(self.stream, self))  # type: ignore[arg-type]
        self.update()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.update()
        if self.tty:
            with self.lock:
                self.stream.write("\n")
                self.stream.flush()
            for h, stream in self._handlers:
                h.setStream(stream)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.update()
            except Exception:  # a transient database error must not stop the study
                log.debug("progress: could not read the study", exc_info=True)

    def update(self) -> Snapshot:
        s = snapshot(self.study, self._started, self._done0)
        if self.tty:
            with self.lock:
                self.line = render(s)
                self.stream.write("\r\x1b[K" + self.line)
                self.stream.flush()
        else:
            key = (s.done, s.pruned, s.failed, s.running, s.best_trial or -1)
            if key != self._last_logged:
                self._last_logged = key
                log.info("progress: %s", render(s, bar=False))
        return s


def watch(study: optuna.Study, stream: IO[str], interval: float = 2.0, table: Any = None,
          until_finished: bool = True) -> Snapshot:
    """``status --watch``: redraw the view (and ``table(study)``, if given) every ``interval`` seconds until the
    study has nothing left to run (or Ctrl-C). On a terminal the screen is redrawn; elsewhere a line per change."""
    started, done0 = time.monotonic(), progress(study)["done"]
    tty = stream.isatty()
    last: tuple[Any, ...] | None = None
    while True:
        s = snapshot(study, started, done0)
        key = (s.done, s.pruned, s.failed, s.running, s.best_trial)
        if tty:
            stream.write("\x1b[H\x1b[2J" + (table(study) + "\n" if table else "") + render(s) + "\n")
        elif key != last:
            stream.write(render(s, bar=False) + "\n")
        stream.flush()
        last = key
        if until_finished and s.finished:
            return s
        time.sleep(interval)
