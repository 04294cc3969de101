"""How a study's trials come to be and what each one trains: the scheduler interface.

The worker and the trial session call a ``Scheduler`` without knowing which one it is:

- ``Independent``: every trial trains from scratch with the sampler's parameters; the warm starts are
  enqueued first and workers create trials up to the study-wide ``n_trials``; the pruner may stop any trial.
- ``PopulationBased`` (``search/strategy/pbt.py``): each trial is one segment of a member's training, started from a
  checkpoint (its own member's, or a better member's after exploit); generations are enqueued under the study
  lock; segments are never pruned; the export is the lineage's schedule.
- ``Promoted`` (``search/strategy/promotion.py``): independent trials at the trial budget, and continuations: the
  top 1/eta of each rung continue from their final checkpoint to the next rung, up to the production budget.

``scheduler_for(spec)`` picks the one a study file asks for (``scheduler: {name: pbt, ...}``, ``promotion: {...}``).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from search import attrs
from search._optuna import storage_of, study_id
from search.spec.study_file import StudySpec
from search.store.proxy import surplus
from search.strategy import pbt, promotion
from search.strategy.study import counted, plan, retried_numbers, room_for_more, set_target, take_waiting, target_trials
from trainer import TrainConfig


class Scheduler:
    """Independent trials; the base every scheduler refines."""

    # Why workers need the database itself (the study lock) rather than a storage proxy; None: a proxy serves
    needs_lock: str | None = None

    def __init__(self, spec: StudySpec) -> None:
        self.spec = spec

    def plan(self, study: optuna.Study, n_trials: int) -> int:
        """Store the study-wide ``n_trials`` and enqueue what runs first (the warm starts not enqueued yet)."""
        return plan(study, n_trials, self.spec.warm_start)

    def refill(self, study: optuna.Study, store: Any, locked: bool = True) -> int | None:
        """With nothing WAITING: the id of the next trial, already RUNNING for the caller, or None. Under the study
        lock; or, through a storage proxy (``locked=False``), created first and failed as surplus if the plan was
        full."""
        target = target_trials(study)
        if not room_for_more(study, target):
            return None
        storage = storage_of(study)
        created = storage.create_new_trial(study_id(study))
        if not locked:
            retried = retried_numbers(study.get_trials(deepcopy=False))
            if surplus(study, storage.get_trial(created), target, lambda t: counted(t, retried)):
                return None
        return int(created)

    def configure(self, trial: optuna.Trial, cfg: TrainConfig) -> TrainConfig:
        """The TrainConfig this trial trains (the sampler's values applied onto the study's)."""
        return cfg

    def start_from(self, trial: optuna.Trial, store: Any, workdir: Path) -> Path | None:
        """A checkpoint the trial starts from (besides a retry's own), or None: from scratch."""
        return None

    def prunable(self, trial: optuna.Trial) -> bool:
        return True

    def at_end(self, trial: optuna.Trial, checkpoint: Path, store: Any) -> None:
        """The trial's last checkpoint, before the workdir goes: what comes after it may start from it."""

    def export_config(self, study: optuna.Study, trial: FrozenTrial) -> tuple[TrainConfig, dict[str, Any]]:
        """What ``gan-search train`` replays for production, and what the export's metrics add about it."""
        return TrainConfig.from_dict(trial.user_attrs[attrs.CONFIG], source=f"trial {trial.number} config"), {}

    def describe(self, trial: FrozenTrial) -> str:
        """One line about the trial's place in the schedule, for ``status`` (empty for independent trials)."""
        return ""


Independent = Scheduler


class PopulationBased(Scheduler):
    """Population-based training: segments as trials (``search/strategy/pbt.py`` holds the exploit/explore rules)."""

    needs_lock = "a PBT study plans its generations under the study lock"

    def plan(self, study: optuna.Study, n_trials: int) -> int:
        set_target(study, n_trials)  # population x generations
        return pbt.plan_population(study, self.spec)

    def refill(self, study: optuna.Study, store: Any, locked: bool = True) -> int | None:
        if pbt.next_generation(study, self.spec, store):
            return take_waiting(study)
        return None

    def configure(self, trial: optuna.Trial, cfg: TrainConfig) -> TrainConfig:
        return pbt.segment_config(cfg, trial, self.spec)

    def start_from(self, trial: optuna.Trial, store: Any, workdir: Path) -> Path | None:
        source = trial.user_attrs.get(attrs.PBT_SOURCE)
        if not source:
            return None
        path = workdir / "source.pt"
        with store.open_reader(source) as src, open(path, "wb") as dst:
            shutil.copyfileobj(src, dst)
        trial.set_user_attr(attrs.PBT_START_WEIGHTS, pbt.weights_digest(path))
        return path

    def prunable(self, trial: optuna.Trial) -> bool:
        return pbt.segment_of(trial) is None  # a segment ends at its generation's end, where members are ranked

    def at_end(self, trial: optuna.Trial, checkpoint: Path, store: Any) -> None:
        segment = pbt.segment_of(trial)
        if segment is None or int(segment["generation"]) + 1 >= pbt.generations(self.spec):
            return  # the last generation: nothing starts from it
        artifact = pbt.new_checkpoint_id()
        with open(checkpoint, "rb") as fh:
            store.write(artifact, fh)
        trial.set_user_attr(attrs.PBT_CHECKPOINT, artifact)
        trial.set_user_attr(attrs.PBT_END_WEIGHTS, pbt.weights_digest(checkpoint))

    def export_config(self, study: optuna.Study, trial: FrozenTrial) -> tuple[TrainConfig, dict[str, Any]]:
        cfg = pbt.schedule_config(study, self.spec, trial)  # the lineage's values as schedules, from scratch
        return cfg, {"pbt": {"schedules": cfg.schedules, "lineage": [t.number for t in pbt.lineage(study, trial)]}}

    def describe(self, trial: FrozenTrial) -> str:
        return pbt.describe(trial)


class Promoted(Scheduler):
    """Independent trials whose best continue to higher rungs from their checkpoints (``promotion.py``)."""

    needs_lock = "promotions are decided under the study lock"

    def refill(self, study: optuna.Study, store: Any, locked: bool = True) -> int | None:
        if promotion.decide(study, self.spec) is not None:  # ASHA: a promotion before a new trial
            return take_waiting(study)
        return super().refill(study, store, locked)

    def configure(self, trial: optuna.Trial, cfg: TrainConfig) -> TrainConfig:
        return cfg.replace(budget_images=promotion.ladder(self.spec)[promotion.rung_of(trial)])

    def start_from(self, trial: optuna.Trial, store: Any, workdir: Path) -> Path | None:
        parent = trial.user_attrs.get(attrs.CONTINUES)
        if parent is None:
            return None
        source = trial.study.get_trials(deepcopy=False)[int(parent)].user_attrs[attrs.RUNG_CHECKPOINT]
        path = workdir / "source.pt"
        with store.open_reader(source) as src, open(path, "wb") as dst:
            shutil.copyfileobj(src, dst)
        return path

    def prunable(self, trial: optuna.Trial) -> bool:
        return attrs.CONTINUES not in trial.user_attrs  # the rungs judge continuations

    def at_end(self, trial: optuna.Trial, checkpoint: Path, store: Any) -> None:
        rung = promotion.rung_of(trial)
        trial.set_user_attr(attrs.RUNG, rung)
        if rung + 1 >= len(promotion.ladder(self.spec)):
            return  # the production budget: nothing continues from it
        artifact = pbt.new_checkpoint_id()
        with open(checkpoint, "rb") as fh:
            store.write(artifact, fh)
        trial.set_user_attr(attrs.RUNG_CHECKPOINT, artifact)

    def describe(self, trial: FrozenTrial) -> str:
        return promotion.describe(trial)


def scheduler_for(spec: StudySpec) -> Scheduler:
    """The scheduler a study file asks for: PBT with ``scheduler: {name: pbt}``, promotion by continuation with
    ``promotion:``, else independent trials."""
    if spec.scheduler is not None:
        return PopulationBased(spec)
    return Promoted(spec) if spec.promotion is not None else Independent(spec)


__all__ = ["Independent", "PopulationBased", "Promoted", "Scheduler", "scheduler_for"]
