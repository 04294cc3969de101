"""Artifacts in an S3 bucket (a moto S3 server started on 127.0.0.1 by these tests): a study and its export with no
shared folder, a killed worker resuming from a checkpoint in the bucket, the dashboard serving a bucket's artifact,
and bad endpoints or buckets refused before anything is written."""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from search import api
from search.store.artifacts import PrefixedStore, artifact_store
from tests.search.conftest import small_study, write_study

ROOT = Path(__file__).resolve().parents[3]
CLI = [sys.executable, "-m", "search.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 (pip: moto[server]), a process of its own as a real service would be."""
    pytest.importorskip("boto3")
    server = shutil.which("moto_server") or str(Path(sys.executable).with_name("moto_server"))
    if not Path(server).exists():
        pytest.skip("moto_server not installed (pip install 'moto[server]'): the S3 tests need an S3 API server")
    port = _free_port()
    proc = subprocess.Popen([server, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60  # a refused connection returns at once: wait on the clock, not a count
        while True:
            try:
                urllib.request.urlopen(url, timeout=1).close()  # noqa: S310 - the local test server
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.skip("moto_server exited at start")
                if time.monotonic() > deadline:
                    pytest.skip("moto_server did not answer within 60 s")
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # a server busy with a request at the end: it goes anyway
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def s3(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Any]]:
    """A fresh bucket, and the AWS environment every process of the test (workers, dashboard) reads."""
    import boto3

    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing-secret",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL_S3": s3_endpoint}.items():
        monkeypatch.setenv(key, value)
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    bucket = f"gs-test-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=bucket)
    yield bucket, client


def _keys(client: Any, bucket: str, prefix: str = "") -> list[str]:
    return [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]


def test_prefixed_bucket_store_writes_reads_and_removes_under_its_prefix(s3: tuple[str, Any]) -> None:
    bucket, client = s3
    store = artifact_store(f"s3://{bucket}/team/study-1")
    assert isinstance(store, PrefixedStore)
    store.write("abc", io.BytesIO(b"weights"))
    assert _keys(client, bucket) == ["team/study-1/abc"]
    with store.open_reader("abc") as fh:
        assert fh.read() == b"weights"
    store.remove("abc")
    assert _keys(client, bucket) == []


def test_a_study_and_its_export_need_no_shared_folder(tmp_path: Path, s3: tuple[str, Any]) -> None:
    bucket, client = s3
    study = small_study("s3study", tmp_path, budget={"n_trials": 2})
    study["storage"]["artifacts"] = f"s3://{bucket}/runs"
    result = api.run(write_study(tmp_path, study), export_to=tmp_path / "best")
    assert result.summary()["states"] == {"COMPLETE": 2}
    keys = _keys(client, bucket, "runs/")
    for t in result.study.trials:  # each trial's generator and grid are objects in the bucket
        assert f"runs/{t.user_attrs['generator_artifact']}" in keys
        assert f"runs/{t.user_attrs['samples_artifact']}" in keys
    assert (tmp_path / "best" / "generator.safetensors").stat().st_size > 0  # downloaded from the bucket
    assert not (tmp_path / "artifacts").exists()  # no local artifact folder was made
    assert result.study.user_attrs["artifacts"] == f"s3://{bucket}/runs"


@pytest.mark.parametrize("problem", ["endpoint", "bucket", "name"])
def test_unreachable_endpoint_or_missing_bucket_exits_2_and_writes_nothing(tmp_path: Path, s3: tuple[str, Any],
                                                                          problem: str) -> None:
    bucket, client = s3
    study = small_study("bads3", tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if problem == "endpoint":
        env["AWS_ENDPOINT_URL_S3"] = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
        study["storage"]["artifacts"] = f"s3://{bucket}/x"
        message = "cannot be reached"
    elif problem == "bucket":
        study["storage"]["artifacts"] = "s3://no-such-bucket-here/x"
        message = "bucket 'no-such-bucket-here' does not exist"
    else:
        study["storage"]["artifacts"] = "s3://Bad_Bucket/x"
        message = "storage.artifacts must be a folder or s3://BUCKET"
    path = write_study(tmp_path, study)
    proc = subprocess.run([*CLI, "run", str(path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "testing-secret" not in proc.stderr + proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bads3.yaml"]  # no database, no folder
    assert bucket in [b["Name"] for b in client.list_buckets()["Buckets"]]
    assert "no-such-bucket-here" not in [b["Name"] for b in client.list_buckets()["Buckets"]]  # never created
    assert _keys(client, bucket) == []


def test_study_file_refuses_keys_in_storage_s3(tmp_path: Path) -> None:
    study = small_study("keys", tmp_path)
    study["storage"] |= {"artifacts": "s3://bucket/x", "s3": {"aws_secret_access_key": "x"}}
    proc = subprocess.run([*CLI, "run", str(write_study(tmp_path, study))], cwd=tmp_path, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2 and "storage.s3.aws_secret_access_key" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys.yaml"]


@pytest.mark.slow
def test_a_killed_worker_resumes_from_its_checkpoint_in_the_bucket(tmp_path: Path, postgres_url: str,
                                                                   s3: tuple[str, Any]) -> None:
    bucket, client = s3
    study = small_study("s3kill", tmp_path, budget={"n_trials": 2, "trial_images": 16000, "eval_every_images": 1600})
    study["storage"] |= {"url": postgres_url, "artifacts": f"s3://{bucket}/kill"}
    api.create(api.load_spec(write_study(tmp_path, study)))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    victim = subprocess.Popen([*CLI, "worker", "s3kill", "--storage", postgres_url], env=env, cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    handle = optuna.load_study(study_name="s3kill", storage=postgres_url)
    deadline, killed = time.time() + 120, None
    while time.time() < deadline and killed is None:
        for t in handle.get_trials(states=(TrialState.RUNNING,)):
            if len(t.user_attrs.get("loss_history", [])) >= 2 and "checkpoint_artifact" in t.user_attrs:
                killed = t
        time.sleep(0.2)
    assert killed is not None, victim.stderr.read().decode() if victim.poll() is not None else "no progress"
    victim.send_signal(signal.SIGKILL)  # no hand-back: the heartbeat stops, another worker fails it as stale
    victim.wait()
    assert f"kill/{killed.user_attrs['checkpoint_artifact']}" in _keys(client, bucket, "kill/")
    api.work("s3kill", postgres_url)
    trials = handle.get_trials()
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 2
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == killed.number)
    assert retry.state == TrialState.COMPLETE and retry.user_attrs["resumed_from_trial"] == killed.number
    marks = [h["mark"] for h in retry.user_attrs["loss_history"]]
    assert marks == list(range(1600, 16001, 1600))  # continued from the bucket's checkpoint, not from zero
    assert not (tmp_path / "runs").exists() and not (tmp_path / "artifacts").exists()
    checkpoints = {a for t in trials for a in t.user_attrs.get("checkpoint_slots", [])}
    assert not {f"kill/{a}" for a in checkpoints} & set(_keys(client, bucket))  # resume checkpoints removed when done


@pytest.mark.slow
def test_dashboard_serves_an_artifact_from_the_bucket(tmp_path: Path, s3: tuple[str, Any]) -> None:
    bucket, client = s3
    study = small_study("s3dash", tmp_path, budget={"n_trials": 1})
    study["storage"]["artifacts"] = f"s3://{bucket}/dash"
    result = api.run(write_study(tmp_path, study))
    trial = result.study.trials[0]
    artifact = trial.user_attrs["samples_artifact"]
    stored = client.get_object(Bucket=bucket, Key=f"dash/{artifact}")["Body"].read()
    port = _free_port()
    proc = subprocess.Popen([*CLI, "dashboard", "--storage", study["storage"]["url"], "--port", str(port)],
                            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/artifacts/{result.study._study_id}/{trial._trial_id}/{artifact}"
    try:
        body = b""
        for _ in range(150):
            try:
                with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 - the local dashboard
                    body = r.read()
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "dashboard exited"
                time.sleep(0.2)
        assert body == stored and body[:4] == b"\x89PNG"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _dashboard_get(args: list[str], urls: list[str], cwd: Path, env: dict[str, str]) -> list[tuple[int, bytes]]:
    """Start `gan-search dashboard ARGS`, GET each URL once it answers: [(status, body)]."""
    port = _free_port()
    proc = subprocess.Popen([*CLI, "dashboard", *args, "--port", str(port)], cwd=cwd,
                            env={**env, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/studies", timeout=2).close()  # noqa: S310 - the local dashboard
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "dashboard exited"
                assert time.monotonic() < deadline, "the dashboard did not answer within 90 s"
                time.sleep(0.2)
        out = []
        for url in urls:
            try:
                with urllib.request.urlopen(base + url, timeout=10) as r:  # noqa: S310 - the local dashboard
                    out.append((r.status, r.read()))
            except urllib.error.HTTPError as exc:
                out.append((exc.code, b""))
        return out
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_one_dashboard_serves_studies_whose_artifacts_live_in_different_stores(
        tmp_path: Path, s3: tuple[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Two studies in one database, artifacts under s3://B/teamA and s3://B/teamB, the S3 endpoint given only in
    each study file's storage.s3: each artifact is served from its own study's store (the second study's failed
    with HTTP 500), also with --artifacts, which keeps the studies' storage.s3."""
    import optuna.artifacts

    from search import StudySpec, create_or_load_study

    bucket, client = s3
    endpoint = os.environ["AWS_ENDPOINT_URL_S3"]
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")  # the dashboard must take it from the studies' storage.s3
    urls, bodies = [], []
    for team in ("teamA", "teamB"):
        raw = small_study(team, tmp_path)
        raw["storage"].update(artifacts=f"s3://{bucket}/{team}", s3={"endpoint_url": endpoint})
        study = create_or_load_study(StudySpec.from_dict(raw))
        trial = study.ask()
        path = tmp_path / f"{team}.txt"
        path.write_bytes(f"grid of {team}".encode())
        artifact = optuna.artifacts.upload_artifact(artifact_store=artifact_store(f"s3://{bucket}/{team}",
                                                                                  {"endpoint_url": endpoint}),
                                                    file_path=str(path), study_or_trial=trial)
        study.tell(trial, 1.0)
        urls.append(f"/artifacts/{study._study_id}/{trial._trial_id}/{artifact}")
        bodies.append((200, path.read_bytes()))
    url = f"sqlite:///{tmp_path / 'study.db'}"
    env = dict(os.environ)
    assert _dashboard_get(["--storage", url], urls, tmp_path, env) == bodies
    # --artifacts names one store for every study (here teamA's): teamA's artifact is there, teamB's is not
    served = _dashboard_get(["--storage", url, "--artifacts", f"s3://{bucket}/teamA"], urls, tmp_path, env)
    assert served[0] == bodies[0] and served[1][0] in (404, 500)
    assert f"teamB/{urls[1].rsplit('/', 1)[1]}" in _keys(client, bucket, "teamB/")
