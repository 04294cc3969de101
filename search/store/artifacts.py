"""Where trials keep their files (sample grids, generators, checkpoints for retries, PBT sources): a folder every
worker sees, or an S3 bucket (``s3://bucket/prefix``) through Optuna's ``Boto3ArtifactStore``, so that a cluster
needs no shared filesystem.

S3 settings come from the standard AWS places: credentials and profile from the environment
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``) or ``~/.aws``; endpoint from
``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL`` (MinIO, Ceph, moto...); region from ``AWS_DEFAULT_REGION``. A study file
may name the endpoint, region and profile (``storage.s3``), never keys: the study file is stored in the database
where every worker reads it. Nothing here prints a credential.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from optuna.artifacts import FileSystemArtifactStore
from optuna.artifacts.exceptions import ArtifactNotFound

from search import attrs
from trainer.errors import ConfigError

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def is_s3(location: str | Path) -> bool:
    return str(location).startswith("s3://")


def split_s3(location: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> (bucket, "some/prefix"), or a one-line error naming what is allowed."""
    bucket, _, prefix = location[len("s3://"):].partition("/")
    if not _BUCKET.match(bucket):
        raise ConfigError(f"storage.artifacts must be a folder or s3://BUCKET[/PREFIX] with an S3 bucket name "
                          f"(3-63 of a-z, 0-9, '.', '-'), but got bucket {bucket!r}.")
    return bucket, prefix.strip("/")


class PrefixedStore:
    """An artifact store whose ids live under ``prefix/`` (Optuna's ``Boto3ArtifactStore`` writes at the bucket's
    root; a prefix lets studies share a bucket)."""

    def __init__(self, inner: Any, prefix: str) -> None:
        self.inner, self.prefix = inner, prefix

    def _key(self, artifact_id: str) -> str:
        return f"{self.prefix}/{artifact_id}"

    def open_reader(self, artifact_id: str) -> IO[bytes]:
        return self.inner.open_reader(self._key(artifact_id))  # type: ignore[no-any-return]

    def write(self, artifact_id: str, content_body: IO[bytes]) -> None:
        self.inner.write(self._key(artifact_id), content_body)

    def remove(self, artifact_id: str) -> None:
        self.inner.remove(self._key(artifact_id))


def s3_client(options: Mapping[str, Any] | None = None) -> Any:
    """A boto3 S3 client from the AWS environment, ``options`` (endpoint_url, region, profile) over it."""
    options = options or {}
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise ConfigError("storage.artifacts: s3:// needs boto3 (pip install 'gan-search[s3]').") from None
    session = boto3.session.Session(profile_name=options.get("profile"), region_name=options.get("region"))
    return session.client("s3", endpoint_url=options.get("endpoint_url"),
                          config=Config(connect_timeout=5, read_timeout=60, retries={"max_attempts": 3}))


def check_bucket(client: Any, bucket: str) -> None:
    """The bucket exists and these credentials may use it; else one line naming the endpoint (never a key)."""
    from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

    endpoint = client.meta.endpoint_url
    try:
        client.head_bucket(Bucket=bucket)
    except EndpointConnectionError:
        raise ConfigError(f"storage.artifacts: the S3 endpoint {endpoint} cannot be reached (set AWS_ENDPOINT_URL_S3 "
                          f"or storage.s3.endpoint_url to a running S3 service).") from None
    except NoCredentialsError:
        raise ConfigError("storage.artifacts: no AWS credentials found (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                          "a profile, or ~/.aws/credentials).") from None
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchBucket", "NotFound"):
            raise ConfigError(f"storage.artifacts: bucket {bucket!r} does not exist at {endpoint} (create it first; "
                              f"gan-search never creates buckets).") from None
        if code in ("403", "AccessDenied", "Forbidden"):
            raise ConfigError(f"storage.artifacts: access to bucket {bucket!r} at {endpoint} is denied (check the "
                              f"credentials).") from None
        raise ConfigError(f"storage.artifacts: bucket {bucket!r} at {endpoint} answered {code}.") from None
    except BotoCoreError as exc:
        raise ConfigError(f"storage.artifacts: S3 at {endpoint} failed: {type(exc).__name__}.") from None


def artifact_store(location: str | Path, s3: Mapping[str, Any] | None = None) -> Any:
    """The artifact store at ``location``: a folder (made if missing) or ``s3://bucket/prefix`` (checked: the
    bucket must exist and be usable)."""
    if is_s3(location):
        from optuna.artifacts import Boto3ArtifactStore

        bucket, prefix = split_s3(str(location))
        client = s3_client(s3)
        check_bucket(client, bucket)
        store = Boto3ArtifactStore(bucket, client=client)
        return PrefixedStore(store, prefix) if prefix else store
    folder = Path(location).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(folder))


_DASHBOARD_ROUTE = re.compile(r"^/(?:api/)?artifacts/(\d+)(?:/|$)")


class StudyStores:
    """optuna-dashboard's artifact store for a database of many studies: each request is served by the store of the
    study its URL names (``/artifacts/<study_id>/...``, ``/api/artifacts/<study_id>/...``), built from what that study
    stored (its artifact location and its study file's ``storage.s3``). Studies whose artifacts live in different
    folders or buckets thus share one dashboard. ``location`` (the dashboard's ``--artifacts``) replaces every
    study's location and keeps each study's S3 settings. ``select(path)`` is called before each request."""

    def __init__(self, storage: Any, location: str | None = None, default: str = "runs/artifacts") -> None:
        self.rdb, self._location, self._default = storage, location, default
        self._stores: dict[int, Any] = {}
        self._local = threading.local()

    def select(self, path: str) -> None:
        match = _DASHBOARD_ROUTE.match(path)
        self._local.study = int(match[1]) if match else None

    def store_of(self, study_id: int) -> Any:
        if study_id not in self._stores:
            stored = self.rdb.get_study_user_attrs(study_id)
            s3 = ((stored.get(attrs.SPEC) or {}).get("storage") or {}).get("s3") or {}
            location = self._location or stored.get(attrs.ARTIFACTS) or self._default
            self._stores[study_id] = artifact_store(location, s3)
        return self._stores[study_id]

    def _current(self) -> Any:
        study = getattr(self._local, "study", None)
        if study is None:
            raise ArtifactNotFound("an artifact is read through a study's dashboard route only")
        return self.store_of(study)

    def open_reader(self, artifact_id: str) -> IO[bytes]:
        return self._current().open_reader(artifact_id)  # type: ignore[no-any-return]

    def write(self, artifact_id: str, content_body: IO[bytes]) -> None:
        self._current().write(artifact_id, content_body)

    def remove(self, artifact_id: str) -> None:
        self._current().remove(artifact_id)


def check_artifacts(location: str | Path, s3: Mapping[str, Any] | None = None) -> None:
    """Bad artifact settings fail here, before anything is written: an S3 location must name a bucket that exists
    and can be reached (a folder is made when first used)."""
    if is_s3(location):
        artifact_store(location, s3)


def resolved(location: str | Path) -> str:
    """The location as stored with the study: an absolute folder, or the S3 URL as given."""
    return str(location) if is_s3(location) else str(Path(location).expanduser().resolve())


__all__ = ["PrefixedStore", "StudyStores", "artifact_store", "check_artifacts", "is_s3", "resolved", "s3_client",
           "split_s3"]
