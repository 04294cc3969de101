"""The training loop: set up, (resume), step until the budget is done, evaluate/checkpoint, outputs.

Reads top to bottom. The step itself (D steps, G step, penalties, EMA, schedules, precision, layout) is
``trainer.step.gan_step``, shared with packs and the precision probe.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from trainer.checkpoint import load_checkpoint, save_checkpoint
from trainer.config import TrainConfig
from trainer.data import ImageData, check_labels, load_data
from trainer.errors import ConfigError
from trainer.io import CHECKPOINT_FILE, METRICS_FILE, SAMPLES_FILE, save_generator, save_grid, write_json
from trainer.models import Generator
from trainer.noise import Evaluator
from trainer.precision import Mode
from trainer.precision import resolve as resolve_mode
from trainer.step import Callback, EvalEvent, RunState, SingleNets, gan_step

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    generator: Generator  # the EMA generator where EMA is on, in eval mode
    config: TrainConfig
    shape: tuple[int, int, int]
    steps: int
    images_seen: int
    seconds: float  # training time, evaluations excluded
    images_per_s: float
    device: str
    history: list[dict[str, Any]] = field(default_factory=list)
    precision: str = "fp32"  # the mode it ran in: fp32 or bf16 (autocast), +channels_last

    @property
    def final_metrics(self) -> dict[str, float]:
        return dict(self.history[-1]["metrics"]) if self.history else {}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device must be auto or cpu on this machine (no CUDA), but got device={name!r}.")
    return device


def train(
    cfg: TrainConfig,
    *,
    data: ImageData | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    callback: Callback | None = None,
    evaluator: Evaluator | None = None,
    resume_from: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> TrainResult:
    """Train ``cfg`` and return the generator; writes outputs to ``out_dir`` when given.

    ``callback`` runs after each evaluation (and after its checkpoint is written); an exception it
    raises stops training and propagates (the search service prunes this way).
    """
    # ---- set up: device, data, precision, models and optimisers, RNG stream
    device = resolve_device(cfg.device)
    data = (data or load_data(cfg, device)).to(device)
    mode, _ = resolve_mode(cfg, data.shape, device)  # auto: measured once per machine and shape (trainer.precision)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    check_labels(cfg, data)
    nets = SingleNets(cfg, data.shape, device, channels_last=mode.channels_last)
    nets.set_class_prior(data.train_labels)
    run = RunState(cfg, torch.Generator(device=device).manual_seed(cfg.seed))
    if resume_from is not None:
        load_checkpoint(Path(resume_from), run, nets, device)
        log.info("resumed from %s at step %d (%d images)", resume_from, run.step, run.images_seen)
    nets.set_rates(run.hp)  # a resumed run takes this config's rates, not the checkpoint's
    sample, sample_raw = nets.sampler(cfg.seed + 1), nets.sampler(cfg.seed + 1, raw=True)

    def save() -> Path | None:
        if out is None:
            return None
        save_checkpoint(out / CHECKPOINT_FILE, run, nets)
        return out / CHECKPOINT_FILE

    # ---- the loop
    check_every = 1 if device.type == "cpu" else 25  # a finiteness check syncs the device
    bar = _progress(cfg.total_steps, run.step) if progress else None
    t0 = time.perf_counter()
    while not run.final:
        if run.follow_schedule():  # a schedule moved on: new rates, loss weights, n_critic
            nets.set_rates(run.hp)
        gan_step(nets, [run], data.train, mode.amp, data.train_labels)
        if bar is not None:
            bar.update(1)
        if run.step % check_every == 0:
            run.check_finite()
        if run.due:  # ---- evaluation, checkpoint, callback
            run.seconds += time.perf_counter() - t0
            event = run.evaluate(evaluator, sample, sample_raw if nets.ema is not None else None, save, callback)
            _show(event, bar, cfg.total_steps)
            t0 = time.perf_counter()
    if bar is not None:
        bar.close()

    # ---- outputs
    final_gen: Generator = nets.ema.module if nets.ema is not None else nets.g  # type: ignore[assignment]
    final_gen.eval()
    result = TrainResult(final_gen, cfg, data.shape, run.step, run.images_seen, run.seconds,
                         run.images_seen / max(run.seconds, 1e-9), str(device), run.history,
                         precision=Mode(mode.amp, nets.channels_last).name)
    if out is not None:
        save_outputs(result, out)
    return result


def _show(event: EvalEvent, bar: Any, total: int) -> None:
    shown = " ".join(f"{k}={v:.4g}" for k, v in {**event.losses, **event.metrics}.items()
                     if not k.startswith("class_share_"))  # the smallest share and the entropy stand for them
    if bar is not None:
        bar.set_postfix_str(shown)
    else:
        log.info("step %d/%d images %d %s", event.step, total, event.images_seen, shown)


def save_outputs(result: TrainResult, out: Path) -> None:
    """generator.safetensors + config.yaml, samples.png and metrics.json."""
    gen = result.generator
    save_generator(gen, result.config, result.shape, out)
    save_grid(gen.sample(64, generator=torch.Generator(device=next(gen.parameters()).device).manual_seed(0)),
              out / SAMPLES_FILE)
    write_json(out / METRICS_FILE, {
        "device": result.device, "precision": result.precision, "steps": result.steps, "images_seen": result.images_seen,
        "train_seconds": result.seconds, "images_per_s": result.images_per_s,
        "final_metrics": result.final_metrics, "history": result.history,
    })


def _progress(total: int, initial: int) -> Any:
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="step", file=sys.stderr)


__all__ = ["TrainResult", "resolve_device", "save_outputs", "train"]
