"""The study: create or load it with its study file, the study-wide plan (n_trials, warm starts), progress.

``n_trials`` is a study-wide total stored with the study: a worker claims a WAITING trial (a warm start,
a retry, a seed confirmation) or, when none waits, creates the next search trial (``search.execution.worker``), both
under a study-wide lock, so K workers together run exactly that many and a stopped study leaves no
unstarted rows behind.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import select

from search import attrs
from search._optuna import models, storage_of, study_id, trial_id
from search.errors import StudyError
from search.spec.study_file import StudySpec
from search.store.artifacts import resolved
from search.store.retry import replaced_numbers, retry_history
from search.store.storage import lock_connection, make_storage
from search.store.storage import rdb_backend as _rdb
from search.strategy.pruners import build_pruner
from search.strategy.samplers import build_sampler

log = logging.getLogger(__name__)


def create_or_load_study(spec: StudySpec) -> optuna.Study:
    """Create the study (or load it) and store the study file and artifact folder with it."""
    storage = make_storage(spec.storage, create=True)
    study = optuna.create_study(study_name=spec.name, storage=storage, directions=list(spec.directions),  # type: ignore[arg-type]
                                sampler=build_sampler(spec), pruner=build_pruner(spec), load_if_exists=True)
    stored = study.user_attrs.get(attrs.SPEC)
    if stored is not None and stored != dict(spec.raw):
        log.warning("study %s: the study file changed since the study was created; workers use the new one",
                    spec.name)
    if stored != dict(spec.raw):
        study.set_user_attr(attrs.SPEC, dict(spec.raw))
    artifacts = resolved(spec.artifacts)
    if study.user_attrs.get(attrs.ARTIFACTS) != artifacts:
        study.set_user_attr(attrs.ARTIFACTS, artifacts)
    return study


def stored_spec(study: optuna.Study, storage_url: str) -> StudySpec:
    raw = study.user_attrs.get(attrs.SPEC)
    if raw is None:
        raise StudyError(f"study {study.study_name!r} has no study file stored; create it with `gan-search run`.")
    return StudySpec.from_dict(raw, source=f"study {study.study_name}").with_overrides(storage=storage_url)


def retried_numbers(trials: list[optuna.trial.FrozenTrial]) -> set[int]:
    """Failed trials a retry replaces: every trial of each retry's chain (a retry of a retry replaces two)."""
    return replaced_numbers(trials)


def counted(t: FrozenTrial, retried: set[int]) -> bool:
    """Whether a trial counts towards n_trials: not a failed trial a retry replaces, not a surplus row of a lock-free
    claim (search/store/proxy.py), not a seed confirmation, not a continuation (search/strategy/promotion.py)."""
    extra = attrs.CONFIRM in t.user_attrs or attrs.CONTINUES in t.user_attrs
    return _counts(t.state, t.number, bool(t.system_attrs.get(attrs.SURPLUS)), extra, retried)


def _counts(state: TrialState, number: int, surplus: bool, confirm: bool, retried: set[int]) -> bool:
    """``counted`` on the fields it reads (``_planned_rows`` has them from narrow queries, not trial bodies)."""
    replaced = state == TrialState.FAIL and (number in retried or surplus)
    return not replaced and not confirm


def _trial_rows(study: optuna.Study, state: TrialState | None = None) -> list[int] | None:
    """The ids of the study's trials (in ``state``), by number, read from the trials table alone (no params,
    attributes or values): the claim runs under the study lock, and loading every running trial there made
    each claim cost O(running trials) with 256 workers (BENCHMARKS.md, "Many workers on one PostgreSQL"). None without an RDB."""
    rdb = _rdb(study)
    if rdb is None:
        return None
    TrialModel = models().TrialModel  # noqa: N806

    query = select(TrialModel.trial_id).where(TrialModel.study_id == study_id(study))
    if state is not None:
        query = query.where(TrialModel.state == state)
    return [int(r[0]) for r in _read(rdb, query.order_by(TrialModel.number))]


def _read(rdb: Any, query: Any) -> list[Any]:
    """Rows of ``query``, on the connection holding the study lock when this thread holds it (no new connection)."""
    locked = lock_connection()
    if locked is not None and locked.engine.url == rdb.engine.url:
        rows = list(locked.execute(query))
        if locked.dialect.name != "postgresql":  # a fresh snapshot for the next read under MySQL's REPEATABLE READ
            locked.commit()  # (the lock is the session's, not the transaction's)
        return rows
    with rdb.engine.connect() as conn:
        return list(conn.execute(query))


def _planned_rows(study: optuna.Study) -> int | None:
    """``planned_trials`` from three narrow queries (states, the retry and surplus marks, the confirmations) instead
    of every trial's body: at a study's end each of 256 workers made its last claim load all trials under the
    lock. None without an RDB."""
    rdb = _rdb(study)
    if rdb is None:
        return None
    m = models()
    TrialModel, TrialSystemAttributeModel, TrialUserAttributeModel = (  # noqa: N806
        m.TrialModel, m.TrialSystemAttributeModel, m.TrialUserAttributeModel)
    sid = study_id(study)
    trials = _read(rdb, select(TrialModel.trial_id, TrialModel.number, TrialModel.state).where(TrialModel.study_id == sid))
    marks = _read(rdb, select(TrialSystemAttributeModel.trial_id, TrialSystemAttributeModel.key,
                              TrialSystemAttributeModel.value_json)
                  .join(TrialModel, TrialModel.trial_id == TrialSystemAttributeModel.trial_id)
                  .where(TrialModel.study_id == sid,
                         TrialSystemAttributeModel.key.in_((attrs.FAILED_TRIAL, attrs.RETRY_HISTORY, attrs.SURPLUS))))
    confirms = {int(r[0]) for r in _read(rdb, select(TrialUserAttributeModel.trial_id)
                                         .join(TrialModel, TrialModel.trial_id == TrialUserAttributeModel.trial_id)
                                         .where(TrialModel.study_id == sid,
                                                TrialUserAttributeModel.key.in_((attrs.CONFIRM, attrs.CONTINUES))))}
    chains: dict[int, dict[str, Any]] = {}
    for i, k, v in marks:
        if k in (attrs.FAILED_TRIAL, attrs.RETRY_HISTORY):
            chains.setdefault(int(i), {})[k] = json.loads(v)
    retried = {n for chain in chains.values() for n in retry_history(chain)}
    surplus = {int(i) for i, k, v in marks if k == attrs.SURPLUS and json.loads(v)}
    return sum(_counts(state, number, i in surplus, i in confirms, retried) for i, number, state in trials)


def planned_trials(study: optuna.Study) -> int:
    """Trials that count towards n_trials (``counted``)."""
    rows = _planned_rows(study)
    if rows is not None:
        return rows
    trials = study.get_trials(deepcopy=False)
    retried = retried_numbers(trials)
    return sum(1 for t in trials if counted(t, retried))


def target_trials(study: optuna.Study) -> int:
    """The study-wide number of search trials that ``plan`` stored (0 for a study planned as WAITING rows)."""
    return int(study.user_attrs.get(attrs.N_TRIALS, 0))


def plan(study: optuna.Study, n_trials: int, warm_start: tuple[Any, ...] = ()) -> int:
    """Set the study-wide trial count and enqueue the warm-start configurations not enqueued yet.

    Search trials are not created here: a worker creates the next one when it has nothing waiting to claim
    (under the study lock, so K workers together create exactly ``n_trials``). A study stopped early thus
    holds no rows for trials that never started. Returns how many warm-start trials were enqueued.
    (``search.strategy.schedulers`` calls this for independent trials; PBT enqueues its generation 0 instead.)
    """
    set_target(study, n_trials)
    trials = study.get_trials(deepcopy=False)
    enqueued = {t.user_attrs.get(attrs.WARM_START) for t in trials}
    room = n_trials - planned_trials(study)
    added = 0
    for index, params in enumerate(warm_start):
        if index in enqueued:
            continue
        if added >= room:
            log.warning("study %s: n_trials=%d leaves no room for warm_start[%d:]", study.study_name, n_trials, index)
            break
        study.enqueue_trial(dict(params), user_attrs={attrs.WARM_START: index})
        added += 1
    return added


def set_target(study: optuna.Study, n_trials: int) -> None:
    if study.user_attrs.get(attrs.N_TRIALS) != n_trials:
        study.set_user_attr(attrs.N_TRIALS, n_trials)


def take_waiting(study: optuna.Study) -> int | None:
    """Move the first WAITING trial to RUNNING for the caller (under the study lock): its trial id, or None. (The
    caller loads the trial after releasing the lock: every statement under it is one all the workers wait for.)"""
    storage = storage_of(study)
    ids = _trial_rows(study, TrialState.WAITING)
    if ids is None:
        ids = [trial_id(t) for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))]
    for tid in ids:
        try:
            if storage.set_trial_state_values(tid, state=TrialState.RUNNING):
                return tid
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return None


def room_for_more(study: optuna.Study, target: int) -> bool:
    """Whether fewer than ``target`` trials count towards n_trials. Every trial row is an upper bound of those that
    count, so while the rows are fewer the trials themselves are not loaded (a count of ids, not of bodies)."""
    rows = _trial_rows(study)
    if rows is not None and len(rows) < target:
        return True
    return planned_trials(study) < target


def progress(study: optuna.Study) -> dict[str, Any]:
    """Where the study stands against its plan: what is done, running, waiting and still to be created."""
    trials = study.get_trials(deepcopy=False)
    retried = retried_numbers(trials)
    search = [t for t in trials if counted(t, retried)]
    count = {s: sum(1 for t in search if t.state == s) for s in TrialState}
    planned = max(target_trials(study), len(search))
    done = count[TrialState.COMPLETE] + count[TrialState.PRUNED] + count[TrialState.FAIL]
    return {"planned": planned, "done": done, "complete": count[TrialState.COMPLETE],
            "pruned": count[TrialState.PRUNED], "failed": count[TrialState.FAIL],
            "running": count[TrialState.RUNNING], "waiting": count[TrialState.WAITING],
            "to_create": max(0, planned - len(search)), "retried": len(retried),
            "confirmations": sum(1 for t in trials if attrs.CONFIRM in t.user_attrs)}


def describe_progress(p: dict[str, Any]) -> str:
    """One line a user reads without knowing Optuna's states."""
    left = p["planned"] - p["done"]
    line = (f"{p['done']}/{p['planned']} trials done ({p['complete']} complete, {p['pruned']} pruned, "
            f"{p['failed']} failed), {p['running']} running")
    if left - p["running"] > 0:
        queued = f"{p['waiting']} queued (warm starts or retries) + " if p["waiting"] else ""
        line += f"; {left - p['running']} not started ({queued}{p['to_create']} to be proposed)"
        line += " - `gan-search run` or `gan-search worker` continues" if not p["running"] else ""
    return line



def trials_summary(study: optuna.Study) -> dict[str, Any]:
    trials = study.get_trials(deepcopy=False)
    retried = retried_numbers(trials)
    counts: dict[str, int] = {}
    for t in trials:
        name = "RETRIED" if t.state == TrialState.FAIL and t.number in retried else t.state.name
        name = "SURPLUS" if t.system_attrs.get(attrs.SURPLUS) else name
        counts[name] = counts.get(name, 0) + 1
    return counts


