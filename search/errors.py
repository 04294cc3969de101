"""Errors of the search service; they extend the trainer's single hierarchy."""

from __future__ import annotations

import re

from trainer.errors import ConfigError, GanSearchError

# What a study name may hold, said once: it names files (the Slurm job script, runs/ folders), Slurm jobs and URLs.
STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
STUDY_NAME_RULE = "letters, digits, '.', '_' and '-', starting with a letter or digit, at most 100 characters"


def check_study_name(name: object, key: str = "name") -> str:
    """``name`` if it is a valid study name (``STUDY_NAME``), else a one-line ConfigError naming ``key``."""
    if not isinstance(name, str) or not STUDY_NAME.fullmatch(name):
        raise ConfigError(f"{key} must be a study name of {STUDY_NAME_RULE}, but got {name!r}.")
    return name


class SpecError(ConfigError):
    """A study file is invalid (names the file, the key and what is allowed)."""


class StudyError(ConfigError):
    """A study is missing, or lacks what a command needs (such as a complete trial)."""


class StorageError(GanSearchError):
    """A storage URL cannot be used."""


__all__ = ["STUDY_NAME", "STUDY_NAME_RULE", "SpecError", "StorageError", "StudyError", "check_study_name"]
