"""Errors of the search service; they extend the trainer's single hierarchy."""

from __future__ import annotations

from trainer.errors import ConfigError, GanSearchError


class SpecError(ConfigError):
    """A study file is invalid (names the file, the key and what is allowed)."""


class StudyError(ConfigError):
    """A study is missing, or lacks what a command needs (such as a complete trial)."""


class StorageError(GanSearchError):
    """A storage URL cannot be used."""


__all__ = ["SpecError", "StorageError", "StudyError"]
