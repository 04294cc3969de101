"""Where a study lives: database URLs and pools, the study lock, outages, heartbeats and the stale sweep, the
retry rule, the storage proxy, artifact stores (a folder or an S3 bucket).

The names below load on first use (search/_lazy.py).
"""

from __future__ import annotations

from search._lazy import exports

_WHERE = {
    "redact": "storage", "check_url": "storage", "make_storage": "storage", "load_study": "storage", "study_lock":
    "storage", "is_outage": "storage", "Outage": "storage", "rdb_backend": "storage", "FinishedTrials": "storage",
    "artifact_store": "artifacts", "check_artifacts": "artifacts", "is_s3": "artifacts", "heartbeat": "heartbeat",
    "fail_stale": "heartbeat", "orphaned_trials": "heartbeat", "is_proxy_url": "proxy", "proxy_client": "proxy", "serve": "proxy",
    "Retry": "retry", "replaced_numbers": "retry", "resumes_from": "retry", "retry_history": "retry",
}
__getattr__ = exports(__name__, _WHERE)
__all__ = sorted(_WHERE)
