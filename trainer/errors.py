"""One exception hierarchy for the trainer and the search service."""

from __future__ import annotations


class GanSearchError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigError(GanSearchError, ValueError):
    """A configuration value is unknown, of the wrong type or out of range (CLI exit status 2)."""


class DataError(GanSearchError):
    """A dataset cannot be found, read or split."""


class Diverged(GanSearchError):
    """A loss became NaN or infinite; carries the step where it was seen."""

    def __init__(self, step: int, losses: dict[str, float]) -> None:
        self.step = step
        self.losses = losses
        super().__init__(f"training diverged at step {step}: losses {losses}")
