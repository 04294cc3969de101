"""A database that goes away and comes back (a restart): calls wait it out, claims start over, nothing is orphaned."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from search import StudySpec, create_or_load_study
from search.store.storage import is_outage, make_storage, study_lock
from tests.search.conftest import small_study


class Outage:
    """A TCP hop in front of PostgreSQL that can be cut (refusing new connections and dropping open ones, as a
    restarting server does) and restored: the database itself is real and untouched."""

    def __init__(self, target: tuple[str, int] = ("127.0.0.1", 5432)) -> None:
        self.target = target
        self._open: list[socket.socket] = []
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.restore()

    def url(self, direct: str) -> str:
        return direct.replace("127.0.0.1:5432", f"127.0.0.1:{self.port}")

    def restore(self) -> None:
        self._server = socket.socket()
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", self.port))
        self._server.listen()
        threading.Thread(target=self._accept, args=(self._server,), daemon=True).start()

    def cut(self) -> None:
        for sock in [self._server, *self._open]:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        self._open.clear()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass


def _study(tmp_path: Path, url: str, name: str) -> tuple[StudySpec, optuna.Study]:
    raw = small_study(name, tmp_path)
    raw["storage"]["url"] = url
    spec = StudySpec.from_dict(raw)
    return spec, create_or_load_study(spec)


def test_calls_wait_out_a_database_outage_and_go_through_when_it_is_back(tmp_path: Path, postgres_url: str) -> None:
    outage = Outage()
    _, study = _study(tmp_path, postgres_url, "outage")
    trial_id = study.ask()._trial_id
    storage = make_storage(outage.url(postgres_url))
    storage.set_trial_user_attr(trial_id, "before", 1)
    outage.cut()
    done: list[float] = []
    def write() -> None:
        storage.set_trial_user_attr(trial_id, "during", 2)
        done.append(time.monotonic())

    writer = threading.Thread(target=write)
    writer.start()
    time.sleep(2.0)
    assert not done  # still waiting for the server, not failed
    restored = time.monotonic()
    outage.restore()
    writer.join(timeout=30)
    assert done and done[0] >= restored
    assert optuna.load_study(study_name="outage", storage=postgres_url).trials[0].user_attrs == {"before": 1,
                                                                                                "during": 2}


def test_a_call_under_the_study_lock_is_not_repeated(tmp_path: Path, postgres_url: str) -> None:
    """The server drops the lock with its connection: the claim must start over, not go on unlocked."""
    outage = Outage()
    _, study = _study(tmp_path, postgres_url, "locked")
    trial_id = study.ask()._trial_id
    storage = make_storage(outage.url(postgres_url))
    t0 = time.monotonic()
    with pytest.raises(Exception) as caught, study_lock(storage, "locked"):
        outage.cut()
        storage.get_trial(trial_id)
    assert is_outage(caught.value) and time.monotonic() - t0 < 10
    outage.restore()
    with study_lock(storage, "locked"):  # the lock is free again (released by the server with the connection)
        assert storage.get_trial(trial_id).state == TrialState.RUNNING


def test_a_pruner_reads_finished_trials_from_a_cache_and_decides_as_through_the_study(tmp_path: Path,
                                                                                    postgres_url: str) -> None:
    from search.store.storage import FinishedTrials

    _, created = _study(tmp_path, postgres_url, "finished")
    study = optuna.load_study(study_name="finished", storage=make_storage(postgres_url))
    for i in range(6):  # complete trials with a curve
        t = study.ask()
        for step in (1, 2, 3):
            t.report(10.0 * (i + 1) / step, step)
        study.tell(t, 10.0 * (i + 1) / 3)
    running = [study.ask() for _ in range(3)]
    for i, t in enumerate(running):
        t.report(5.0 + 40 * i, 1)
    view = FinishedTrials(study, study._storage._backend)  # type: ignore[attr-defined]  # noqa: SLF001
    assert [t.number for t in view.get_trials(states=(TrialState.COMPLETE,))] == list(range(6))
    assert view.get_trials(states=(TrialState.RUNNING,)) == study.get_trials(states=(TrialState.RUNNING,))
    median = optuna.pruners.MedianPruner(n_startup_trials=2)
    decisions = [median.prune(view, study._storage.get_trial(t._trial_id))  # type: ignore[arg-type]  # noqa: SLF001
                 for t in running]
    assert decisions == [median.prune(study, study._storage.get_trial(t._trial_id)) for t in running]  # noqa: SLF001
    assert decisions == [False, True, True]  # at step 1 the median of 10..60 is 35: 5 is under it, 45 and 85 not
    study.tell(running[0], 1.0)  # a trial that finishes later is seen, once
    assert [t.number for t in view.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))] == [*range(6), 6]
