"""Study files: a YAML file -> a validated ``StudySpec`` (every error before storage is touched), and the
warm-start presets a file may name.

The names below load on first use (search/_lazy.py).
"""

from __future__ import annotations

from search._lazy import exports

_WHERE = {
    "StudySpec": "study_file", "Param": "study_file", "Guard": "study_file", "Constraint": "study_file", "Pbt":
    "study_file", "ExportRule": "study_file", "apply_params": "study_file", "suggest_values": "study_file",
    "WARM_STARTS": "presets",
}
__getattr__ = exports(__name__, _WHERE)
__all__ = sorted(_WHERE)
