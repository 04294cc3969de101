"""trial -> TrainConfig -> trainer.train(callback = report / should_prune) -> artifacts and user attributes."""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import optuna
from optuna.artifacts import upload_artifact
from optuna.artifacts.exceptions import ArtifactNotFound
from torchvision.utils import make_grid

from search import attrs
from search.results.gallery import GRID_SAMPLES, Gallery, in_top
from search.spec.study_file import StudySpec, apply_params, suggest_values
from search.store.retry import resumes_from
from search.strategy.pruners import guard_reason
from search.strategy.schedulers import scheduler_for
from trainer import Diverged, EvalEvent, TrainConfig, TrainResult, prepare, train
from trainer.checkpoint import read_checkpoint
from trainer.errors import ConfigError
from trainer.io import CHECKPOINT_FILE, GENERATOR_FILE, save_generator
from trainer.metrics import CLASS_SHARE
from trainer.precision import resolve as resolve_mode

log = logging.getLogger(__name__)



def suggest_config(trial: optuna.Trial, spec: StudySpec) -> TrainConfig:
    """Apply the trial's suggestions for ``spec.space`` onto ``spec.train``."""
    return apply_params(spec.train, suggest_values(trial, spec))


def precision_record(cfg: TrainConfig, shape: tuple[int, int, int], device: Any) -> dict[str, Any]:
    """The mode the trial trains in, and (for ``auto``) the measurements that chose it."""
    mode, decision = resolve_mode(cfg, shape, device)
    if decision is None:
        return {"mode": mode.name, "chosen_by": "config"}
    return {"mode": mode.name, "chosen_by": "probe", "table": decision.table, "device": decision.device}


def tensorboard_writer(folder: str, trial: optuna.Trial) -> Any:
    """A TensorBoard writer for one trial: ``FOLDER/<study>/trial-0007`` (needs the ``tensorboard`` package)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("--tensorboard needs the tensorboard package: pip install 'gan-search[tensorboard]'.") from None
    return SummaryWriter(str(Path(folder) / trial.study.study_name / f"trial-{trial.number:04d}"))


def metric_value(name: str, event: EvalEvent) -> float:
    """A metric of the evaluation (fid, recall, class_min_share...), or the generator loss for g_loss."""
    return event.losses["g_loss"] if name == "g_loss" else event.metrics[name]


def objective_value(spec: StudySpec, event: EvalEvent) -> float:
    return metric_value(spec.objective, event)


def coverage_record(metrics: dict[str, float]) -> tuple[dict[str, float], list[float]]:
    """An evaluation's metrics without the per-class shares, and the shares as a list (empty without classes)."""
    shares = [v for k, v in sorted(metrics.items(), key=lambda kv: _class_index(kv[0])) if k.startswith(CLASS_SHARE)]
    return {k: round(v, 6) for k, v in metrics.items() if not k.startswith(CLASS_SHARE)}, [round(v, 5) for v in shares]


def _class_index(key: str) -> int:
    return int(key.removeprefix(CLASS_SHARE)) if key.startswith(CLASS_SHARE) else -1


def confirmation_config(cfg: TrainConfig, images: int) -> TrainConfig:
    """A confirmation's config at ``images`` (the production budget): four evaluations, the last at the end."""
    every = max(cfg.batch_size, images // 4 // cfg.batch_size * cfg.batch_size)
    return cfg.replace(budget_images=images, eval_every_images=every)


class TrialRunner:
    """Runs trials of one study in this process; data, feature network and real statistics are loaded once."""

    def __init__(self, spec: StudySpec, artifact_store: Any, device: str | None = None,
                 tensorboard: str | None = None) -> None:
        self.spec = spec
        self.store = artifact_store
        self.tensorboard = tensorboard  # a folder: losses, the objective and grids per trial, for TensorBoard
        setup = prepare(spec.train if spec.objective != "g_loss" else spec.train.replace(eval_metric="none"), device)
        self.device, self.data, self.evaluator = setup.device, setup.data, setup.evaluator

    # ------------------------------------------------------------ one trial
    def __call__(self, trial: optuna.Trial) -> list[float]:
        """Train the trial alone (``trainer.train``); a pack worker drives ``TrialSession`` itself."""
        return self.train(TrialSession(self, trial))

    def train(self, session: TrialSession) -> list[float]:
        """Train a started session's trial alone; its values (one per objective), or the pruning/failure it
        ended with."""
        interrupted = False
        try:
            result = train(session.cfg, data=self.data, out_dir=session.workdir, callback=session.on_eval,
                           evaluator=self.evaluator, resume_from=session.resume)
            return session.complete(result)
        except Diverged as exc:
            raise session.diverged(exc) from None
        except KeyboardInterrupt:
            interrupted = True
            raise
        finally:
            session.close(interrupted)

    def checkpoint_of_failed_trial(self, trial: optuna.Trial, number: int | None, workdir: Path) -> Path | None:
        """A retry of a trial whose worker died resumes from that trial's last checkpoint artifact."""
        if number is None:
            return None
        failed = trial.study.get_trials(deepcopy=False)[number]
        artifact = failed.user_attrs.get(attrs.CHECKPOINT)
        if artifact is None:
            return None
        path = workdir / CHECKPOINT_FILE
        try:
            with self.store.open_reader(artifact) as src, open(path, "wb") as dst:
                shutil.copyfileobj(src, dst)
        except ArtifactNotFound:
            log.warning("trial %d: the checkpoint of trial %d is gone; training from the start", trial.number, number)
            trial.set_user_attr(attrs.RESUME_SKIPPED, f"the checkpoint of trial {number} is gone")
            return None
        try:
            read_checkpoint(path)
        except ConfigError as exc:  # truncated or corrupt: a retry must still run, from the start
            log.warning("trial %d: %s; training from the start", trial.number, exc)
            trial.set_user_attr(attrs.RESUME_SKIPPED, str(exc)[:300])
            path.unlink(missing_ok=True)
            return None
        trial.set_user_attr(attrs.RESUMED_FROM, number)
        log.info("trial %d resumes trial %d from its checkpoint", trial.number, number)
        return path


class TrialSession:
    """One claimed trial from its start to its end, whoever trains it (``train`` alone, or a ``Pack`` member).

    The start records the config, seed, device and precision, and finds the checkpoint a retry resumes from;
    ``on_eval`` is the trainer's callback (curves, grids, checkpoint artifacts, reports, pruning);
    ``complete``/``diverged`` record the end; ``close`` removes what a finished trial no longer needs.
    """

    def __init__(self, runner: TrialRunner, trial: optuna.Trial) -> None:
        self.runner, self.trial, spec = runner, trial, runner.spec
        self.spec, self.store = spec, runner.store
        self.scheduler = scheduler_for(spec)  # independent trials, or PBT segments: the session does not branch on it
        self.cfg = self.scheduler.configure(trial, suggest_config(trial, spec).replace(device=str(runner.device)))
        if (images := trial.user_attrs.get(attrs.CONFIRM_IMAGES)) is not None:  # a confirmation at production budget
            self.cfg = confirmation_config(self.cfg, int(images))
        self.prunable = attrs.CONFIRM not in trial.user_attrs and self.scheduler.prunable(trial)
        self.confirming = attrs.CONFIRM in trial.user_attrs
        trial.set_user_attr(attrs.CONFIG, self.cfg.to_dict())
        trial.set_user_attr(attrs.SEED, self.cfg.seed)
        trial.set_user_attr(attrs.DEVICE, str(runner.device))
        trial.set_user_attr(attrs.PRECISION, precision_record(self.cfg, runner.data.shape, runner.device))
        self.workdir = Path(tempfile.mkdtemp(prefix=f"trial-{trial.number}-"))
        frozen = trial.study.get_trials(deepcopy=False)[trial.number]
        self.inherited = trial.user_attrs.get(attrs.CHECKPOINT_SLOTS, [])  # a retry's copy of the dead trial's slots
        self.resume = runner.checkpoint_of_failed_trial(trial, resumes_from(frozen.system_attrs),
                                                        self.workdir)
        if self.resume is None:
            self.resume = self.scheduler.start_from(trial, self.store, self.workdir)
        self.slots = [f"checkpoint-{uuid.uuid4().hex}" for _ in range(2)]  # written in turn: one is always whole
        trial.set_user_attr(attrs.CHECKPOINT_SLOTS, self.slots)
        self.reported = set(frozen.intermediate_values)  # a retry inherits the intermediate values of the dead trial
        self.losses: list[dict[str, float]] = list(trial.user_attrs.get(attrs.LOSSES, []))
        inherited = list(frozen.intermediate_values.values())  # a retry's or a continuation's curve so far
        pick = min if spec.direction == "minimize" else max
        self.state: dict[str, Any] = {"best": pick(inherited, default=math.inf if spec.direction == "minimize"
                                                   else -math.inf), "last": None, "values": None}
        self.gallery = Gallery(trial, self.store, spec.objective, self.workdir)
        self.board = tensorboard_writer(runner.tensorboard, trial) if runner.tensorboard else None
        self.keep_grids = False  # a trial that ends among the best keeps its whole grid history
        self.start = time.perf_counter()

    def on_eval(self, event: EvalEvent) -> None:
        trial, spec, state = self.trial, self.spec, self.state
        value = objective_value(spec, event)
        state["last"] = value
        better = value < state["best"] if spec.direction == "minimize" else value > state["best"]
        state["best"] = value if better else state["best"]
        state["values"] = [metric_value(name, event) for name in spec.objectives]
        metrics, shares = coverage_record(event.metrics)
        # a retry that resumed from an older checkpoint than the dead trial's last evaluation redoes that evaluation
        self.losses = [h for h in self.losses if h["mark"] < event.mark]
        self.losses.append({"mark": event.mark, **event.losses, **metrics, spec.objective: value})
        trial.set_user_attr(attrs.LOSSES, self.losses)
        trial.set_user_attr(attrs.IMAGES_SEEN, event.images_seen)
        if metrics:
            trial.set_user_attr(attrs.METRICS, metrics)
        if shares:
            trial.set_user_attr(attrs.CLASS_SHARES, shares)
        state["metrics"] = metrics
        # reported before this evaluation's checkpoint is stored: a retry that resumes from that checkpoint never
        # re-runs this mark, so the value must already be among the intermediate values it inherits
        if len(spec.objectives) == 1 and event.mark not in self.reported:
            # GAN curves are noisy: report: best hands the pruner the best so far
            trial.report(state["best"] if spec.pruner["report"] == "best" else value, event.mark)
            self.reported.add(event.mark)
        grid = event.sample(GRID_SAMPLES)
        trial.set_user_attr(attrs.SAMPLES_ARTIFACT, self.gallery.add(event.mark, grid, self.losses))
        if self.board is not None:
            for key, v in self.losses[-1].items():
                if key != "mark":
                    self.board.add_scalar(key, v, event.mark)
            self.board.add_image("samples", make_grid(grid.float().cpu(), nrow=8, normalize=True, value_range=(-1, 1)),
                                 event.mark)
            self.board.flush()
        if event.checkpoint is not None and not event.final:  # what a retry resumes from
            slot = self.slots[event.eval_index % 2]
            with open(event.checkpoint, "rb") as fh:
                self.store.write(slot, fh)
            trial.set_user_attr(attrs.CHECKPOINT, slot)
        if event.checkpoint is not None and event.final:
            self.scheduler.at_end(trial, event.checkpoint, self.store)
        reason = None
        if len(spec.objectives) > 1:  # Optuna's pruners judge one value: only the loss guard stops such a trial
            reason = guard_reason(self.losses, spec.guard) if not event.final and self.prunable else None
        elif not event.final and self.prunable and trial.should_prune():
            reason = guard_reason(self.losses, spec.guard) or (
                f"{spec.pruner['name']} pruner: {spec.objective}={value:.4g} at {event.mark} images")
        if reason is not None:
            trial.set_user_attr(attrs.PRUNE_REASON, reason)
            self._record(event.images_seen)
            raise optuna.TrialPruned(reason)

    def complete(self, result: TrainResult) -> list[float]:
        """The budget is done: store the generator and the measurements; the trial's values (one per objective)."""
        self._record(result.images_seen, generator=result.generator, shape=result.shape,
                     images_per_s=result.images_per_s)
        value = float(self.state["last"])
        self.keep_grids = self.confirming or in_top(self.trial.study, value, self.spec.keep_grids)
        return [float(v) for v in self.state["values"]]

    def diverged(self, exc: Diverged) -> optuna.TrialPruned:
        reason = f"guard: non-finite loss at step {exc.step} ({exc.losses})"
        self.trial.set_user_attr(attrs.PRUNE_REASON, reason)
        return optuna.TrialPruned(reason)

    def close(self, interrupted: bool = False) -> None:
        """Thin the grids and remove the checkpoints (an interrupted trial keeps them: its retry resumes)."""
        if not interrupted:
            with contextlib.suppress(Exception):  # thinning is housekeeping: it never fails a trial
                self.gallery.thin(keep_all=self.keep_grids)
        if self.board is not None:
            self.board.close()
        shutil.rmtree(self.workdir, ignore_errors=True)
        if not interrupted:
            for artifact_id in (*self.slots, *self.inherited):  # a finished trial is never resumed
                with contextlib.suppress(ArtifactNotFound):
                    self.store.remove(artifact_id)

    def _record(self, images_seen: int, generator: Any = None, shape: Any = None,
                images_per_s: float | None = None) -> None:
        """Store the trial's generator as an artifact and its measurements as user attributes."""
        trial = self.trial
        wall = time.perf_counter() - self.start
        if generator is not None:
            save_generator(generator, self.cfg, shape, self.workdir)
            path = self.workdir / GENERATOR_FILE
            trial.set_user_attr(attrs.GENERATOR_ARTIFACT, upload_artifact(
                artifact_store=self.store, file_path=str(path), study_or_trial=trial))
            trial.set_user_attr(attrs.SHAPE, list(shape))
        trial.set_user_attr(attrs.WALL_SECONDS, round(wall, 3))
        trial.set_user_attr(attrs.IMAGES_PER_S, round(images_per_s if images_per_s else images_seen / max(wall, 1e-9), 1))
        trial.set_user_attr(attrs.FINAL_VALUE, self.state["last"])
        if self.spec.constraints:  # Optuna's constraint values (<= 0 holds), which its samplers model, once per trial
            misses = [c.violation((self.state.get("metrics") or {}).get(c.metric)) for c in self.spec.constraints]
            if self.spec.constraints_at == "search":
                for c, miss in zip(self.spec.constraints, misses, strict=True):
                    trial.set_constraint(c.metric, miss)
            else:  # judged at export only: recorded where the sampler does not read them
                trial.set_user_attr(attrs.CONSTRAINT_MISSES, {c.metric: miss if math.isfinite(miss) else None
                                                              for c, miss in zip(self.spec.constraints, misses, strict=True)})
            trial.set_user_attr(attrs.FEASIBLE, all(m <= 0 for m in misses))
        trial.set_user_attr(attrs.BEST_VALUE, self.state["best"] if math.isfinite(self.state["best"]) else None)
