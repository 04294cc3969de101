"""StudySpec: a study file (studies/*.yaml) parsed and validated before anything is created."""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from search import attrs
from search.errors import STUDY_NAME, STUDY_NAME_RULE, SpecError
from search.registries import PRUNERS, SAMPLERS, WARM_STARTS
from trainer.config import COVERAGE_METRICS, MODE_METRICS, TrainConfig
from trainer.errors import ConfigError
from trainer.registry import is_import_path

# What an evaluation measures (trainer.metrics) and which way is better; any of these can be an objective or
# a constraint. fid/kid need eval_metric fid/kid; the class and mode metrics need the domain classifier.
MINIMIZED = ("fid", "kid", "g_loss", "mode_kl")
MAXIMIZED = tuple(m for m in COVERAGE_METRICS if m not in MINIMIZED)  # precision, recall, ..., class_min_share, modes
OBJECTIVES = MINIMIZED + MAXIMIZED
OPERATORS = (">=", "<=")
PARAM_TYPES = ("float", "int", "categorical")
CONSTRAINTS_AT = ("search", "export")
TOP_KEYS = ("name", "direction", "objective", "constraints", "constraints_at", "train", "space", "warm_start", "sampler",
            "pruner", "guard", "budget", "storage", "scheduler", "promotion", "export")
REPORTS = ("last", "best")  # what a trial reports to the pruner at each evaluation: its value, or its best so far
# Shared by every trial of a worker (data, feature network and real statistics are loaded once), or fixing
# the points where trials are compared: these TrainConfig fields cannot be searched.
NOT_SEARCHABLE = ("dataset", "data_root", "download", "image_size", "holdout_fraction", "eval_metric", "eval_samples",
                  "share_samples", "feature_net", "feature_weights", "device", "budget_images", "eval_every_images",
                  "classes")  # classes: the data's label count, checked against the data before storage
CHANNEL_CLASS_DATASETS = ("stacked-mnist",)  # built-ins whose labels code one class per channel (trainer/data.py)
EXTRA = "extra."  # space keys under this prefix search a plug-in's own settings (TrainConfig.extra)
DEFAULT_STORAGE = "sqlite:///runs/gan-search.db"
DEFAULT_ARTIFACTS = "runs/artifacts"
S3_KEYS = ("endpoint_url", "region", "profile")  # storage.s3 (credentials come from the AWS environment only)


@dataclass(frozen=True)
class Param:
    """One searched TrainConfig field."""

    name: str
    type: str  # float | int | categorical
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def distribution(self) -> BaseDistribution:
        """The Optuna distribution of this parameter (what ``trial.suggest_*`` draws from)."""
        if self.type == "categorical":
            return CategoricalDistribution(list(self.choices))
        if self.type == "int":
            return IntDistribution(int(self.low or 0), int(self.high or 0), log=self.log, step=int(self.step or 1))
        return FloatDistribution(float(self.low or 0), float(self.high or 0), log=self.log, step=self.step)


@dataclass(frozen=True)
class WarmFrom:
    """``warm_start: [{study: NAME, storage: URL, top: K}]``: another study's K best configs, read before this study
    is created (``search.strategy.transfer``); ``storage`` defaults to this study's."""

    study: str
    storage: str | None = None
    top: int = 3


@dataclass(frozen=True)
class Constraint:
    """``metric >= bound`` or ``metric <= bound`` on a trial's last evaluation (``constraints:`` in a study file).

    ``violation`` is Optuna's constraint value: <= 0 where the constraint holds, the amount it misses by elsewhere.
    """

    metric: str
    op: str
    bound: float

    def violation(self, value: float | None) -> float:
        if value is None or value != value:  # never measured (NaN included): infeasible
            return float("inf")
        return self.bound - value if self.op == ">=" else value - self.bound

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.bound:g}"


@dataclass(frozen=True)
class Pbt:
    """Population-based training: ``population`` members advance in segments of ``interval_images``; after
    each segment the bottom ``quantile`` copy a top-``quantile`` member's checkpoint (exploit) and perturb each
    searched value by a factor from ``perturb`` or resample it with ``resample_probability`` (explore)."""

    population: int = 4
    interval_images: int = 16000
    quantile: float = 0.25
    resample_probability: float = 0.25
    perturb: tuple[float, ...] = (0.8, 1.2)


@dataclass(frozen=True)
class Promotion:
    """Promotion by continuation (asynchronous successive halving whose top rung is the production budget): a trial
    trains ``budget.trial_images``; one that ends among the top ``1/eta`` of its rung continues from its checkpoint
    to the next of ``rungs`` (images, increasing; the last is the production budget) on whichever worker claims
    it (search/strategy/promotion.py)."""

    rungs: tuple[int, ...] = ()
    eta: int = 3


@dataclass(frozen=True)
class Guard:
    """Loss-curve guard settings (GAN-aware pruning on losses, independent of the metric)."""

    enabled: bool = True
    max_loss: float = 100.0  # prune when a mean loss exceeds this bound
    grow_evals: int = 4  # prune when the generator loss grew for this many evaluations in a row
    collapse_loss: float = 1e-3  # discriminator loss under this counts as collapse ...
    collapse_evals: int = 2  # ... for this many evaluations in a row


@dataclass(frozen=True)
class ExportRule:
    """``export:`` in a study file: what ``gan-search export`` (and ``run --export``) does unless flags say otherwise."""

    confirm: int = 0  # the top K configs re-run with fresh seeds before the winner is exported (0: no re-runs)
    seeds: int = 3  # fresh seeds per confirmed config
    images: int | None = None  # images each re-run trains, the production budget (None: the trial budget)


@dataclass(frozen=True)
class StudySpec:
    name: str
    train: TrainConfig  # the fixed part (with the per-trial budget and evaluation interval applied)
    space: tuple[Param, ...]
    warm_start: tuple[Mapping[str, Any], ...] = ()  # known-good parameter sets, enqueued before the search
    warm_from: tuple[tuple[int, WarmFrom], ...] = ()  # (index in the file's warm_start list, another study) to read
    objective: str = "fid"  # the first (or only) objective: what pruning, curves and the export's confirmation use
    direction: str = "minimize"
    objectives: tuple[str, ...] = ("fid",)  # several: an Optuna multi-objective study (a Pareto front)
    directions: tuple[str, ...] = ("minimize",)
    constraints: tuple[Constraint, ...] = ()  # feasibility of a trial (Optuna's constraints_func; export's rule)
    constraints_at: str = "search"  # search: the sampler models them; export: only the confirmations are judged
    sampler: Mapping[str, Any] = field(default_factory=lambda: {"name": "tpe"})
    pruner: Mapping[str, Any] = field(default_factory=lambda: {"name": "median"})
    guard: Guard = Guard()
    n_trials: int = 20  # trials in the whole study, across every worker
    timeout: float | None = None  # seconds a `run` may take before it stops starting trials
    storage: str = DEFAULT_STORAGE
    artifacts: str = DEFAULT_ARTIFACTS  # a folder every worker sees, or s3://bucket/prefix (search/store/artifacts.py)
    s3: Mapping[str, Any] = field(default_factory=dict)  # storage.s3: endpoint_url, region, profile (never keys)
    heartbeat_interval: int = 10  # seconds between heartbeats of a running trial (RDB storage)
    grace_period: int = 30  # a RUNNING trial without heartbeat for this long is failed and retried
    max_retry: int = 2  # retries of a trial whose worker died
    keep_grids: int = 5  # trials ending among this many best keep every evaluation's grid; others first and last
    connections: int = 0  # database connections a worker keeps open (0: one per call, closed after it)
    scheduler: Pbt | None = None  # population-based training (search/strategy/pbt.py) instead of independent trials
    promotion: Promotion | None = None  # trials that continue to higher rungs (search/strategy/promotion.py)
    export: ExportRule = ExportRule()
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False)  # the file as written

    # ------------------------------------------------------------ parsing
    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> StudySpec:
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise SpecError(f"study file {str(path)!r} cannot be read: {exc.strerror}.") from None
        except yaml.YAMLError as exc:
            raise SpecError(f"{path}: not valid YAML ({str(exc).splitlines()[0]}).") from None
        return cls.from_dict(raw, source=str(path))

    @classmethod
    def from_dict(cls, raw: Any, source: str = "study") -> StudySpec:
        def err(key: str, message: str) -> SpecError:
            return SpecError(f"{source}: {key}: {message}")

        if not isinstance(raw, Mapping):
            raise SpecError(f"{source}: expected a mapping with keys {', '.join(TOP_KEYS)}.")
        for key in raw:
            if key not in TOP_KEYS:
                raise err(str(key), f"unknown key; allowed: {', '.join(TOP_KEYS)}.")
        name = raw.get("name")
        if not isinstance(name, str) or not STUDY_NAME.fullmatch(name):
            raise err("name", f"must be a study name of {STUDY_NAME_RULE}, but got {name!r}.")
        objectives, directions = _objectives(raw.get("objective", "fid"), raw.get("direction"), err)
        constraints = _constraints(raw.get("constraints", {}), err)
        measured = set(objectives) | {c.metric for c in constraints}
        objective, direction = objectives[0], directions[0]

        budget = _mapping(raw.get("budget", {}), "budget", err)
        _only(budget, ("n_trials", "timeout", "trial_images", "eval_every_images"), "budget", err)
        train_raw = dict(_mapping(raw.get("train", {}), "train", err))
        if "trial_images" in budget:
            train_raw["budget_images"] = budget["trial_images"]
        if "eval_every_images" in budget:
            train_raw["eval_every_images"] = budget["eval_every_images"]
        if measured - {"g_loss"}:  # every evaluation measures fid or kid, and coverage beside it
            train_raw["eval_metric"] = "kid" if "kid" in measured else "fid"
        if {"fid", "kid"} <= measured:
            raise err("objective", "fid and kid cannot both be measured in one study; choose one.")
        try:
            train = TrainConfig.from_dict(train_raw, source="train")
        except ConfigError as exc:
            raise SpecError(f"{source}: {exc}") from None

        space = tuple(_param(k, v, err) for k, v in _mapping(raw.get("space", {}), "space", err).items())
        for p in space:  # every bound must make a valid TrainConfig on its own
            for value in (p.choices or (p.low, p.high)):
                try:
                    apply_params(train, {p.name: value})
                except ConfigError as exc:
                    raise err(f"space.{p.name}", str(exc)) from None

        warm_raw = raw.get("warm_start", [])
        if not isinstance(warm_raw, list):
            raise err("warm_start", f"must be a list of parameter mappings or preset names, but got "
                                    f"{type(warm_raw).__name__}.")
        warm_from = tuple((i, _warm_from(i, w, err)) for i, w in enumerate(warm_raw) if isinstance(w, Mapping) and "study" in w)
        refs = {i for i, _ in warm_from}
        warm_start = tuple(_warm_start(i, w, space, train, err) for i, w in enumerate(warm_raw) if i not in refs)

        sampler = dict(_mapping(raw.get("sampler", {"name": "tpe"}), "sampler", err))
        _only(sampler, ("name", "seed", "args"), "sampler", err)
        _registered(SAMPLERS, sampler.setdefault("name", "tpe"), "sampler.name", err)
        if sampler["name"] == "grid" and any(p.type != "categorical" for p in space):
            raise err("sampler.name", "grid needs every space entry to be categorical (list its choices).")
        pruner = dict(_mapping(raw.get("pruner", {"name": "median"}), "pruner", err))
        _only(pruner, ("name", "args", "patience", "report"), "pruner", err)
        if pruner.setdefault("report", "last") not in REPORTS:
            raise err("pruner.report", f"must be one of {', '.join(REPORTS)}, but got {pruner['report']!r}.")
        _registered(PRUNERS, pruner.setdefault("name", "median"), "pruner.name", err)
        if "patience" in pruner and (not isinstance(pruner["patience"], int) or pruner["patience"] < 0):
            raise err("pruner.patience", f"must be an int >= 0, but got {pruner['patience']!r}.")
        for part in (sampler, pruner):
            if not isinstance(part.get("args", {}), Mapping):
                raise err("args", "must be a mapping of keyword arguments.")

        guard_raw = _mapping(raw.get("guard", {}), "guard", err)
        _only(guard_raw, tuple(f.name for f in dataclasses.fields(Guard)), "guard", err)
        for key, value in guard_raw.items():
            if key == "enabled" and not isinstance(value, bool):
                raise err("guard.enabled", f"must be true or false, but got {value!r}.")
            if key.endswith("_evals") and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise err(f"guard.{key}", f"must be an int >= 0, but got {value!r}.")
            if key in ("max_loss", "collapse_loss") and (not isinstance(value, (int, float)) or value < 0):
                raise err(f"guard.{key}", f"must be a number >= 0, but got {value!r}.")
        guard = Guard(**guard_raw)

        storage_raw = _mapping(raw.get("storage", {}), "storage", err)
        _only(storage_raw, ("url", "artifacts", "s3", "heartbeat_interval", "grace_period", "max_retry", "keep_grids",
                            "connections"),
              "storage", err)
        s3 = _mapping(storage_raw.get("s3", {}), "storage.s3", err)
        if secret := [k for k in s3 if "key" in k or "secret" in k or "token" in k]:
            raise err(f"storage.s3.{secret[0]}", "is not read from a study file (it is stored in the database): set "
                      "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a profile (storage.s3.profile).")
        _only(s3, S3_KEYS, "storage.s3", err)
        for key, value in s3.items():
            if not isinstance(value, str) or not value:
                raise err(f"storage.s3.{key}", f"must be a non-empty string, but got {value!r}.")
        n_trials = budget.get("n_trials", 20)
        if not isinstance(n_trials, int) or n_trials < 1:
            raise err("budget.n_trials", f"must be an int >= 1, but got {n_trials!r}.")
        timeout = budget.get("timeout")
        if timeout is not None and (not isinstance(timeout, (int, float)) or timeout <= 0):
            raise err("budget.timeout", f"must be a number of seconds > 0, but got {timeout!r}.")
        for key in ("heartbeat_interval", "grace_period", "max_retry", "keep_grids", "connections"):
            value = storage_raw.get(key, 1)
            low = 0 if key in ("max_retry", "keep_grids", "connections") else 1
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise err(f"storage.{key}", f"must be an int >= {low}, but got {value!r}.")
        export_raw = _mapping(raw.get("export", {}), "export", err)
        _only(export_raw, ("confirm", "seeds", "images"), "export", err)
        for key, low in (("confirm", 0), ("seeds", 1), ("images", 1)):
            value = export_raw.get(key, low)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise err(f"export.{key}", f"must be an int >= {low}, but got {value!r}.")
        if "images" in export_raw and not export_raw.get("confirm"):
            raise err("export.images", "needs export.confirm >= 1 (the re-runs it sets the budget of).")
        spec = cls(
            name=name, train=train, space=space, warm_start=warm_start, warm_from=warm_from, objective=objective,
            direction=direction,
            sampler=sampler, pruner=pruner, guard=guard, n_trials=n_trials, timeout=timeout,
            storage=os.environ.get("GAN_SEARCH_STORAGE") or storage_raw.get("url", DEFAULT_STORAGE),
            artifacts=storage_raw.get("artifacts", DEFAULT_ARTIFACTS), s3=dict(s3),
            heartbeat_interval=storage_raw.get("heartbeat_interval", 10),
            grace_period=storage_raw.get("grace_period", 30), max_retry=storage_raw.get("max_retry", 2),
            keep_grids=storage_raw.get("keep_grids", 5), connections=storage_raw.get("connections", 0),
            export=ExportRule(**export_raw), raw=dict(raw),
        )
        promotion = _promotion(raw.get("promotion"), train, err)
        if promotion is not None:
            if raw.get("scheduler") is not None:
                raise err("promotion", "cannot be combined with scheduler: pbt (a PBT segment already continues "
                                       "its member's checkpoint).")
            spec = dataclasses.replace(spec, promotion=promotion)
        scheduler = _scheduler(raw.get("scheduler"), space, train, err)
        if scheduler is not None:
            segments = train.budget_images // scheduler.interval_images
            spec = dataclasses.replace(spec, scheduler=scheduler, n_trials=scheduler.population * segments)
        if spec.grace_period <= spec.heartbeat_interval:
            raise err("storage.grace_period", "must be larger than storage.heartbeat_interval.")
        spec = dataclasses.replace(spec, objectives=objectives, directions=directions, constraints=constraints,
                                   constraints_at=_constraints_at(raw.get("constraints_at", "search"), constraints, err))
        _measurable(spec, measured, err)
        _build_check(spec, err)
        return spec

    def with_overrides(self, **changes: Any) -> StudySpec:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def with_warm_start(self, entries: list[Any]) -> StudySpec:
        """This spec with its ``warm_start`` list replaced by ``entries`` (values or presets, no study references),
        each checked as the file's own entries are; the stored file (``raw``) says the same."""
        def err(key: str, message: str) -> SpecError:
            return SpecError(f"study {self.name}: {key}: {message}")

        warm = tuple(_warm_start(i, w, self.space, self.train, err) for i, w in enumerate(entries))
        return dataclasses.replace(self, warm_start=warm, warm_from=(), raw={**self.raw, "warm_start": list(entries)})


# ---------------------------------------------------------------- helpers
def _objectives(raw: Any, direction: Any, err: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``objective: fid`` or ``objective: [fid, recall]``; directions follow each metric unless given."""
    names = raw if isinstance(raw, list) else [raw]
    if not names:
        raise err("objective", f"needs at least one of {', '.join(OBJECTIVES)}.")
    for name in names:
        if name not in OBJECTIVES:
            raise err("objective", f"must be one or a list of {', '.join(OBJECTIVES)}, but got {name!r}.")
    if len(set(names)) != len(names):
        raise err("objective", f"lists a metric twice: {names}.")
    natural = ["minimize" if n in MINIMIZED else "maximize" for n in names]
    given = natural if direction is None else direction if isinstance(direction, list) else [direction]
    if len(given) != len(names) or any(d not in ("minimize", "maximize") for d in given):
        raise err("direction", f"must be minimize or maximize, one per objective ({len(names)}), but got {direction!r}.")
    return tuple(names), tuple(given)


def _constraints(raw: Any, err: Any) -> tuple[Constraint, ...]:
    """``constraints: {class_min_share: ">= 0.07", fid: "<= 20"}``."""
    out = []
    for metric, rule in _mapping(raw, "constraints", err).items():
        key = f"constraints.{metric}"
        if metric not in OBJECTIVES or metric == "g_loss":
            raise err(key, f"must constrain one of {', '.join(m for m in OBJECTIVES if m != 'g_loss')}.")
        parts = str(rule).split()
        if len(parts) != 2 or parts[0] not in OPERATORS:
            raise err(key, f"must be '>= NUMBER' or '<= NUMBER', but got {rule!r}.")
        try:
            bound = float(parts[1])
        except ValueError:
            raise err(key, f"must be '>= NUMBER' or '<= NUMBER', but got {rule!r}.") from None
        out.append(Constraint(str(metric), parts[0], bound))
    return tuple(out)


def _constraints_at(raw: Any, constraints: tuple[Constraint, ...], err: Any) -> str:
    """``constraints_at: search`` (the sampler models the constraints, trials that hold them rank first) or
    ``export`` (the search optimises the objectives alone; the constraints choose among the configs the export
    confirms at the production budget, on every seed)."""
    if raw not in CONSTRAINTS_AT:
        raise err("constraints_at", f"must be one of {', '.join(CONSTRAINTS_AT)}, but got {raw!r}.")
    if raw == "export" and not constraints:
        raise err("constraints_at", "export needs constraints: to judge (none given).")
    return str(raw)


def _measurable(spec: StudySpec, measured: set[str], err: Any) -> None:
    """Objectives and constraints the evaluations can measure, and the pruning/scheduling they allow."""
    if "g_loss" in measured and len(measured) > 1:
        raise err("objective", "g_loss is measured without an evaluator: it cannot be combined with other metrics.")
    classes = sorted(m for m in measured if m.startswith("class_"))
    if classes and spec.train.feature_net != "domain":
        raise err("objective" if classes[0] in spec.objectives else f"constraints.{classes[0]}",
                  "class shares need feature_net: domain (a classifier of the dataset's labels).")
    modes = sorted(m for m in measured if m in MODE_METRICS)
    if modes and (spec.train.feature_net != "domain" or not (spec.train.dataset in CHANNEL_CLASS_DATASETS
                                                               or is_import_path(spec.train.dataset))):
        raise err("objective" if modes[0] in spec.objectives else f"constraints.{modes[0]}",
                  f"modes and mode_kl need feature_net: domain and a dataset whose channels each hold a class "
                  f"({', '.join(CHANNEL_CLASS_DATASETS)}), but got dataset {spec.train.dataset!r}.")
    if len(spec.objectives) > 1 and spec.pruner["name"] != "none":
        raise err("pruner.name", "must be none with several objectives: Optuna's pruners judge one value "
                                 f"(the loss guard still stops diverged trials), but got {spec.pruner['name']!r}.")
    if spec.promotion is not None and (len(spec.objectives) > 1 or spec.constraints):
        raise err("promotion", "ranks a rung by one objective: it takes neither several objectives nor constraints.")
    if spec.scheduler is not None and (len(spec.objectives) > 1 or spec.constraints):
        raise err("scheduler", "PBT ranks members by one objective: it takes neither several objectives nor constraints.")


def _scheduler(raw: Any, space: tuple[Param, ...], train: TrainConfig, err: Any) -> Pbt | None:
    """``scheduler: {name: pbt, ...}``: checked like the rest, against the space and the trial budget."""
    from trainer.config import SCHEDULABLE

    if raw is None:
        return None
    raw = dict(_mapping(raw, "scheduler", err))
    fields = tuple(f.name for f in dataclasses.fields(Pbt))
    _only(raw, ("name", *fields), "scheduler", err)
    if raw.pop("name", None) != "pbt":
        raise err("scheduler.name", "must be pbt (population-based training).")
    for key in ("population", "interval_images"):
        value = raw.get(key, getattr(Pbt, key))
        if not isinstance(value, int) or isinstance(value, bool) or value < (2 if key == "population" else 1):
            raise err(f"scheduler.{key}", f"must be an int >= {2 if key == 'population' else 1}, but got {value!r}.")
    for key in ("quantile", "resample_probability"):
        value = raw.get(key, getattr(Pbt, key))
        upper = 0.5 if key == "quantile" else 1.0
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= upper:
            raise err(f"scheduler.{key}", f"must be a number in (0, {upper:g}], but got {value!r}.")
    perturb = raw.get("perturb", list(Pbt.perturb))
    if not isinstance(perturb, list) or not perturb or not all(
            isinstance(f, (int, float)) and not isinstance(f, bool) and f > 0 for f in perturb):
        raise err("scheduler.perturb", f"must be a list of factors > 0, but got {perturb!r}.")
    pbt = Pbt(**{**raw, "perturb": tuple(float(f) for f in perturb)})
    movable = [p.name for p in space if p.name not in SCHEDULABLE]
    if movable:
        raise err(f"space.{movable[0]}", f"cannot change mid-run under PBT; searchable with pbt: {', '.join(SCHEDULABLE)}.")
    if not space:
        raise err("space", "PBT needs at least one searched value that can change mid-run.")
    if train.budget_images % pbt.interval_images or train.budget_images < pbt.interval_images:
        raise err("scheduler.interval_images", f"must divide budget.trial_images ({train.budget_images}), the images "
                                               f"each member trains in all, but got {pbt.interval_images}.")
    if pbt.interval_images % train.eval_every_images:
        raise err("scheduler.interval_images", f"must be a multiple of budget.eval_every_images "
                                               f"({train.eval_every_images}): a segment ends with an evaluation.")
    if pbt.interval_images % train.batch_size:
        raise err("scheduler.interval_images", f"must be a multiple of train.batch_size ({train.batch_size}), "
                                               "so that segments end on a step.")
    return pbt


def _promotion(raw: Any, train: TrainConfig, err: Any) -> Promotion | None:
    """``promotion: {rungs: [IMAGES, ...], eta: K}``: checked against the trial budget and the evaluations."""
    if raw is None:
        return None
    raw = dict(_mapping(raw, "promotion", err))
    _only(raw, ("rungs", "eta"), "promotion", err)
    eta = raw.get("eta", Promotion.eta)
    if not isinstance(eta, int) or isinstance(eta, bool) or eta < 2:
        raise err("promotion.eta", f"must be an int >= 2 (the top 1/eta of a rung continue), but got {eta!r}.")
    rungs = raw.get("rungs")
    if not isinstance(rungs, list) or not rungs or not all(isinstance(r, int) and not isinstance(r, bool)
                                                          for r in rungs):
        raise err("promotion.rungs", f"must be a non-empty list of image counts above budget.trial_images "
                                     f"(the last: the production budget), but got {rungs!r}.")
    ladder = [train.budget_images, *rungs]
    for low, high in zip(ladder, ladder[1:], strict=False):
        if high <= low:
            raise err("promotion.rungs", f"must increase from budget.trial_images ({train.budget_images}), but got "
                                         f"{rungs!r}.")
    for rung in rungs:
        if rung % train.eval_every_images or rung % train.batch_size:
            raise err("promotion.rungs", f"each must be a multiple of budget.eval_every_images "
                                         f"({train.eval_every_images}) and train.batch_size ({train.batch_size}): a "
                                         f"rung ends with an evaluation, but got {rung}.")
    return Promotion(tuple(rungs), eta)


def suggest_values(trial: Any, spec: StudySpec) -> dict[str, Any]:
    """The trial's suggestions for ``spec.space`` (each from its Optuna distribution), plus a fixed training seed
    where the trial carries one (seed confirmations, PBT members)."""
    values: dict[str, Any] = {}
    for p in spec.space:
        if p.type == "categorical":
            values[p.name] = trial.suggest_categorical(p.name, list(p.choices))
        elif p.type == "int":
            values[p.name] = trial.suggest_int(p.name, int(p.low or 0), int(p.high or 0), step=int(p.step or 1), log=p.log)
        else:
            values[p.name] = trial.suggest_float(p.name, float(p.low or 0), float(p.high or 0), step=p.step, log=p.log)
    seed = trial.user_attrs.get(attrs.SEED_OVERRIDE)
    if seed is not None:
        values["seed"] = int(seed)
    return values


def apply_params(train: TrainConfig, values: Mapping[str, Any]) -> TrainConfig:
    """``train`` with searched values applied; ``extra.KEY`` names go into the plug-ins' ``extra`` mapping."""
    extra = {k.removeprefix(EXTRA): v for k, v in values.items() if k.startswith(EXTRA)}
    fields = {k: v for k, v in values.items() if not k.startswith(EXTRA)}
    if extra:
        fields["extra"] = {**train.extra, **extra}
    return train.replace(**fields)


def _registered(registry: Any, name: Any, key: str, err: Any) -> None:
    """A registered name, or an import path that imports now (not later, in a worker)."""
    if not isinstance(name, str) or (":" not in name and name not in registry.names()):
        raise err(key, f"must be one of {', '.join(registry.names())} or 'package.module:attribute', but got {name!r}.")
    try:
        registry.get(name)
    except ConfigError as exc:
        raise err(key, str(exc)) from None


def _build_check(spec: StudySpec, err: Any) -> None:
    """Build the sampler and the pruner once through their registries, so that a bad ``args`` key fails here,
    before any storage exists (``search.strategy.samplers``/``search.strategy.pruners`` wrap the same factories)."""
    for part, registry in (("sampler", SAMPLERS), ("pruner", PRUNERS)):
        settings = getattr(spec, part)
        args = dict(settings.get("args", {}))
        if part == "sampler" and settings.get("seed") is not None:
            args = {"seed": settings["seed"], **args}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # experimental-feature warnings belong to the run, not to parsing
                registry.get(settings["name"])(spec, args)
        except (TypeError, ValueError) as exc:
            given = ", ".join(sorted(settings.get("args", {}))) or "none"
            raise err(f"{part}.args", f"{settings['name']} does not accept these arguments ({given}): "
                                      f"{str(exc).splitlines()[0]}") from None


def _warm_from(index: int, raw: Mapping[str, Any], err: Any) -> WarmFrom:
    """``{study: NAME, storage: URL, top: K}`` (storage: this study's, top: 3 unless given)."""
    key = f"warm_start[{index}]"
    _only(raw, ("study", "storage", "top"), key, err)
    study, storage, top = raw["study"], raw.get("storage"), raw.get("top", 3)
    if not isinstance(study, str) or not study.strip():
        raise err(f"{key}.study", f"must be the name of a finished study, but got {study!r}.")
    if storage is not None and (not isinstance(storage, str) or not storage.strip()):
        raise err(f"{key}.storage", f"must be a storage URL, but got {storage!r}.")
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise err(f"{key}.top", f"must be an int >= 1 (how many of its best configs), but got {top!r}.")
    return WarmFrom(study, storage, top)


def _warm_start(index: int, raw: Any, space: tuple[Param, ...], train: TrainConfig, err: Any) -> Mapping[str, Any]:
    """One warm-start entry: searched keys only, each value allowed by its space entry (``from``: a note of where
    the values came from, e.g. another study's trial, not a value)."""
    key = f"warm_start[{index}]"
    params = {p.name: p for p in space}
    if isinstance(raw, Mapping) and isinstance(raw.get("from"), str):
        raw = {k: v for k, v in raw.items() if k != "from"}
    raw, origin = _preset(raw, key, params, err)
    for name, value in raw.items():
        p = params.get(name)
        if p is None:
            raise err(f"{key}.{name}", f"not a searched key; allowed: {', '.join(params) or 'none (space is empty)'}.")
        if p.type == "categorical":
            if value not in p.choices:
                raise err(f"{key}.{name}", f"must be one of {list(p.choices)}, but got {value!r}{origin}.")
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (p.type == "int" and value != int(value)):
            raise err(f"{key}.{name}", f"must be a{'n int' if p.type == 'int' else ' number'}, but got {value!r}{origin}.")
        if not float(p.low or 0) <= value <= float(p.high or 0):
            raise err(f"{key}.{name}", f"must be within [{p.low:g}, {p.high:g}], but got {value!r}{origin}.")
    try:
        apply_params(train, raw)
    except ConfigError as exc:
        raise err(key, str(exc)) from None
    values = {k: (int(v) if params[k].type == "int" else float(v) if params[k].type == "float" else v)
              for k, v in raw.items()}
    if origin:  # a preset is one config: the searched keys it does not set keep the study's ``train:`` values
        fixed = {name: _train_value(train, name) for name in params if name not in values}
        values |= {name: value for name, value in fixed.items() if _allowed(params[name], value)}
    return values


def _train_value(train: TrainConfig, name: str) -> Any:
    return train.extra.get(name.removeprefix(EXTRA)) if name.startswith(EXTRA) else getattr(train, name, None)


def _allowed(p: Param, value: Any) -> bool:
    """Whether ``value`` is one the space entry ``p`` can propose (of the choices' own type, or within range)."""
    if p.type == "categorical":
        return any(type(c) is type(value) and c == value for c in p.choices)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (p.type == "int" and value != int(value)):
        return False
    return float(p.low or 0) <= value <= float(p.high or 0)


def _preset(raw: Any, key: str, params: Mapping[str, Param], err: Any) -> tuple[dict[str, Any], str]:
    """A warm-start entry as values: a preset's name, ``{preset: name, key: override...}``, or plain values.

    A preset contributes the keys the study searches (the rest stay as ``train:`` fixes them, searched keys it does
    not set included: ``_warm_start`` fills those from ``train:`` where the space allows the value, so that the
    enqueued trial is the preset's config and not the preset with sampled extras); the second item says where a
    value came from, for error messages.
    """
    if isinstance(raw, str):
        raw = {"preset": raw}
    raw = dict(_mapping(raw, key, err))
    if "preset" not in raw:
        return raw, ""
    name = raw.pop("preset")
    if not isinstance(name, str):
        raise err(f"{key}.preset", f"must be a preset name, but got {name!r}.")
    try:
        values = WARM_STARTS.get(name)
    except ConfigError as exc:
        if is_import_path(name):  # the plug-in's own trouble: not installed, no such attribute, not a preset
            raise err(f"{key}.preset", str(exc)) from None
        raise err(f"{key}.preset", f"must be one of {', '.join(WARM_STARTS.names())} or 'package.module:attribute', "
                                   f"but got {name!r}.") from None
    merged = {k: v for k, v in values.items() if k in params} | raw
    if not merged:
        raise err(f"{key}.preset", f"{name!r} sets none of the searched keys ({', '.join(params) or 'none'}).")
    return merged, f" (preset {name!r})"


def _mapping(value: Any, key: str, err: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise err(key, f"must be a mapping, but got {type(value).__name__}.")
    return value


def _only(value: Mapping[str, Any], allowed: tuple[str, ...], key: str, err: Any) -> None:
    for k in value:
        if k not in allowed:
            raise err(f"{key}.{k}", f"unknown key; allowed: {', '.join(allowed)}.")


def _param(name: str, raw: Any, err: Any) -> Param:
    key = f"space.{name}"
    fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"extra"}
    if name.startswith(EXTRA):
        if not name.removeprefix(EXTRA).isidentifier():
            raise err(key, f"a plug-in setting is searched as extra.NAME with NAME an identifier, but got {name!r}.")
    elif name not in fields:
        raise err(key, f"{name!r} is not a TrainConfig field; allowed: {', '.join(sorted(fields))}, extra.NAME.")
    if name in NOT_SEARCHABLE:
        allowed = sorted(fields - set(NOT_SEARCHABLE))
        raise err(key, f"{name!r} is shared by all trials (set it under train:); searchable: {', '.join(allowed)}.")
    if isinstance(raw, list):
        raw = {"type": "categorical", "choices": raw}
    raw = _mapping(raw, key, err)
    _only(raw, ("type", "low", "high", "log", "step", "choices"), key, err)
    ptype = raw.get("type", "categorical" if "choices" in raw else "float")
    if ptype not in PARAM_TYPES:
        raise err(f"{key}.type", f"must be one of {', '.join(PARAM_TYPES)}, but got {ptype!r}.")
    if ptype == "categorical":
        choices = raw.get("choices")
        if not isinstance(choices, list) or not choices:
            raise err(f"{key}.choices", "a categorical entry needs a non-empty list of choices.")
        return Param(name, ptype, choices=tuple(choices))
    low, high = raw.get("low"), raw.get("high")
    for bound, value in (("low", low), ("high", high)):
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise err(f"{key}.{bound}", f"must be a number, but got {value!r}.")
    low, high = float(low), float(high)  # type: ignore[arg-type]
    if low > high:
        raise err(key, f"low must be <= high, but got low={low:g} > high={high:g}.")
    log = bool(raw.get("log", False))
    if log and low <= 0:
        raise err(f"{key}.low", f"must be > 0 with log: true, but got low={low:g}.")
    step = raw.get("step")
    if step is not None and log:
        raise err(f"{key}.step", "cannot be combined with log: true.")
    if ptype == "int":
        if low != int(low) or high != int(high):
            raise err(key, "an int entry needs integer low and high.")
        return Param(name, ptype, int(low), int(high), log, int(step) if step is not None else 1)
    return Param(name, ptype, low, high, log, float(step) if step is not None else None)
