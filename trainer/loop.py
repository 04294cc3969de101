"""The training loop: D and G steps, EMA, bf16 autocast, evaluation callback, checkpoint and resume.

Reads top to bottom: set up -> (resume) -> loop over generator steps -> evaluate/checkpoint -> outputs.
"""

from __future__ import annotations

import copy
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from trainer.config import SCHEDULABLE, TrainConfig
from trainer.data import ImageData, load_data
from trainer.errors import ConfigError, Diverged
from trainer.io import CHECKPOINT_FILE, METRICS_FILE, SAMPLES_FILE, save_generator, save_grid, write_json
from trainer.losses import build_loss, r1_penalty
from trainer.models import Generator, build_models
from trainer.precision import Mode
from trainer.precision import resolve as resolve_mode

log = logging.getLogger(__name__)

SampleFn = Callable[[int], torch.Tensor]
Evaluator = Callable[[SampleFn], dict[str, float]]


@dataclass
class EvalEvent:
    """What the callback sees at each evaluation."""

    step: int  # generator steps done
    images_seen: int  # real images shown to the discriminator so far
    eval_index: int  # 1, 2, ... (the last evaluation is at the end of the budget)
    mark: int  # nominal images of this evaluation: min(eval_index * eval_every_images, budget_images)
    losses: dict[str, float]  # mean losses since the previous evaluation
    metrics: dict[str, float]  # from the evaluator (fid/kid), empty without one
    sample: SampleFn  # n -> (n, C, H, W) images in [-1, 1] from the (EMA) generator
    checkpoint: Path | None  # the checkpoint written just before this call, if any
    final: bool  # True for the evaluation at the end of the budget
    sample_raw: SampleFn | None = None  # the raw (non-EMA) generator's samples, where EMA is on


Callback = Callable[[EvalEvent], None]


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


class EMA:
    """Exponential moving average of the generator's weights, with a warm-up.

    The decay at update ``t`` (0-based) is ``min(decay, (1 + t) / (10 + t))``: the average follows the
    generator closely at first and reaches ``decay`` only after about ``10 / (1 - decay)`` updates, so an
    EMA generator is never judged on its initial weights (a plain EMA with decay 0.999 still holds ~37%
    of the initial weights after 1,000 steps).
    """

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), but got {decay=}.")
        self.decay = decay
        self.module = copy.deepcopy(model).requires_grad_(False)
        self.updates = 0

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        weight = 1.0 - self.current_decay()
        ema_params: list[torch.Tensor] = list(self.module.parameters())
        params: list[torch.Tensor] = list(model.parameters())
        torch._foreach_lerp_(ema_params, params, weight)
        for ema_buf, buf in zip(self.module.buffers(), model.buffers(), strict=True):
            ema_buf.copy_(buf)
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device must be auto or cpu on this machine (no CUDA), but got device={name!r}.")
    return device


@dataclass(frozen=True)
class Prepared:
    """What every run of one dataset shares: the device, the data on it, and the evaluator (None without a metric)."""

    device: torch.device
    data: ImageData
    evaluator: Evaluator | None


def prepare(cfg: TrainConfig, device: str | torch.device | None = None) -> Prepared:
    """Resolve the device, load the data onto it and build the evaluator, once per process."""
    from trainer.metrics import make_evaluator

    dev = resolve_device(str(device) if device is not None else cfg.device)
    data = load_data(cfg, dev)
    return Prepared(dev, data, make_evaluator(cfg, data, dev))


def _has_conv(net: torch.nn.Module) -> bool:
    """channels_last helps convolutions only."""
    return any(isinstance(m, torch.nn.modules.conv._ConvNd) for m in net.modules())


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
    # ---- set up: device, data, models, optimisers, RNG streams
    device = resolve_device(cfg.device)
    data = (data or load_data(cfg, device)).to(device)
    shape = data.shape
    mode, decision = resolve_mode(cfg, shape, device)  # auto: measured once per machine and shape (trainer.precision)
    amp = mode.amp
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(cfg.seed)
    gen_net, disc = build_models(cfg, shape)
    gen_net, disc = gen_net.to(device), disc.to(device)
    channels_last = mode.channels_last and _has_conv(disc)
    if channels_last:
        gen_net, disc = gen_net.to(memory_format=torch.channels_last), disc.to(memory_format=torch.channels_last)
    ema = EMA(gen_net, cfg.ema_decay) if cfg.ema_decay > 0 else None
    opt_g = torch.optim.Adam(gen_net.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2))
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2))
    rng = torch.Generator(device=device).manual_seed(cfg.seed)  # batches, noise, GP interpolation
    n_train, bsz, total = len(data.train), cfg.batch_size, cfg.total_steps

    step, images_seen, eval_index, seconds = 0, 0, 0, 0.0
    history: list[dict[str, Any]] = []
    if resume_from is not None:
        step, images_seen, eval_index, seconds, history = load_checkpoint(
            Path(resume_from), cfg, gen_net, disc, ema, opt_g, opt_d, rng, device)
        log.info("resumed from %s at step %d (%d images)", resume_from, step, images_seen)
    hp = cfg.at(images_seen)  # the scheduled fields' values now (== cfg without schedules)
    _set_optimisers(hp, opt_g, opt_d)  # a resumed run takes this config's rates, not the checkpoint's
    loss = build_loss(hp)

    def sample(n: int, raw: bool = False) -> torch.Tensor:
        net: Any = ema.module if ema is not None and not raw else gen_net
        was_training = net.training
        net.eval()
        g = torch.Generator(device=device).manual_seed(cfg.seed + 1)  # does not touch the training streams
        chunks = [net.sample(min(256, n - i), device=device, generator=g) for i in range(0, n, 256)]
        net.train(was_training)
        return torch.cat(chunks)

    # ---- the loop
    acc = torch.zeros(2, device=device)  # running sums of (d_loss, g_loss) since the last evaluation
    acc_steps, check_every = 0, 1 if device.type == "cpu" else 25
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp)
    bar = _progress(total, step) if progress else None
    t0 = time.perf_counter()
    while images_seen < cfg.budget_images:
        if cfg.schedules and (now := cfg.at(images_seen)) != hp:  # a schedule moved on: new rates, weights, n_critic
            hp = now
            _set_optimisers(hp, opt_g, opt_d)
            loss = build_loss(hp)
        for _ in range(hp.n_critic):  # discriminator steps
            real = data.train[torch.randint(n_train, (bsz,), device=device, generator=rng)]
            if channels_last:
                real = real.contiguous(memory_format=torch.channels_last)
            z = torch.randn(bsz, cfg.latent_dim, device=device, generator=rng)
            with torch.no_grad(), autocast:
                fake = gen_net(z)
            if hp.r1_weight > 0:
                real.requires_grad_(True)
            with autocast:
                real_logits, fake_logits = disc(real), disc(fake)
                d_loss = loss.d_loss(real_logits.float(), fake_logits.float())
                penalty = loss.penalty(disc, real, fake, rng)
                if penalty is not None:
                    d_loss = d_loss + penalty
                if hp.r1_weight > 0:
                    d_loss = d_loss + 0.5 * hp.r1_weight * r1_penalty(real_logits, real)
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            images_seen += bsz
        z = torch.randn(bsz, cfg.latent_dim, device=device, generator=rng)  # generator step
        with autocast:
            g_loss = loss.g_loss(disc(gen_net(z)).float())
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        if ema is not None:
            ema.update(gen_net)
        step += 1
        acc += torch.stack([d_loss.detach().float(), g_loss.detach().float()])
        acc_steps += 1
        if bar is not None:
            bar.update(1)
        if step % check_every == 0 and not bool(torch.isfinite(acc).all()):
            raise Diverged(step, {"d_loss": float(d_loss.detach()), "g_loss": float(g_loss.detach())})

        # ---- evaluation, checkpoint, callback
        final = images_seen >= cfg.budget_images
        if images_seen >= (eval_index + 1) * cfg.eval_every_images or final:
            if not bool(torch.isfinite(acc).all()):
                raise Diverged(step, {"d_loss": float(d_loss.detach()), "g_loss": float(g_loss.detach())})
            seconds += time.perf_counter() - t0
            eval_index += 1
            losses = {"d_loss": float(acc[0]) / acc_steps, "g_loss": float(acc[1]) / acc_steps}
            acc.zero_()
            acc_steps = 0
            metrics = evaluator(sample) if evaluator is not None else {}
            mark = min(eval_index * cfg.eval_every_images, cfg.budget_images)
            history.append({"step": step, "images_seen": images_seen, "mark": mark, "losses": losses,
                            "metrics": metrics, "images_per_s": images_seen / max(seconds, 1e-9)})
            ckpt = None
            if out is not None:
                ckpt = out / CHECKPOINT_FILE
                save_checkpoint(ckpt, cfg, gen_net, disc, ema, opt_g, opt_d, rng, step, images_seen,
                                 eval_index, seconds, history)
            shown = " ".join(f"{k}={v:.4g}" for k, v in {**losses, **metrics}.items())
            if bar is not None:
                bar.set_postfix_str(shown)
            else:
                log.info("step %d/%d images %d %s", step, total, images_seen, shown)
            if callback is not None:
                callback(EvalEvent(step, images_seen, eval_index, mark, losses, metrics, sample, ckpt, final,
                                   (lambda n: sample(n, raw=True)) if ema is not None else None))
            t0 = time.perf_counter()
    if bar is not None:
        bar.close()

    # ---- outputs
    final_gen: Generator = ema.module if ema is not None else gen_net  # type: ignore[assignment]
    final_gen.eval()
    result = TrainResult(final_gen, cfg, shape, step, images_seen, seconds, images_seen / max(seconds, 1e-9),
                         str(device), history, precision=Mode(amp, channels_last).name)
    if out is not None:
        save_outputs(result, out)
    return result


def _set_optimisers(hp: TrainConfig, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer) -> None:
    for opt, lr in ((opt_g, hp.lr_g), (opt_d, hp.lr_d)):
        for group in opt.param_groups:
            group["lr"], group["betas"] = lr, (hp.beta1, hp.beta2)


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


# ---------------------------------------------------------------- checkpoints
def save_checkpoint(path: Path, cfg: TrainConfig, gen: torch.nn.Module, disc: torch.nn.Module,
                     ema: EMA | None, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer,
                     rng: torch.Generator, step: int, images_seen: int, eval_index: int, seconds: float,
                     history: list[dict[str, Any]]) -> None:
    state = {
        "config": cfg.to_dict(), "step": step, "images_seen": images_seen, "eval_index": eval_index,
        "seconds": seconds, "history": history,
        "gen": gen.state_dict(), "disc": disc.state_dict(), "ema": ema.state_dict() if ema is not None else None,
        "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
        "rng": rng.get_state(), "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # a kill mid-write leaves the previous checkpoint intact


def load_checkpoint(path: Path, cfg: TrainConfig, gen: torch.nn.Module, disc: torch.nn.Module,
                     ema: EMA | None, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer,
                     rng: torch.Generator, device: torch.device) -> tuple[int, int, int, float, list[dict[str, Any]]]:
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    state = torch.load(path, map_location=device, weights_only=True)
    saved = TrainConfig.from_dict(state["config"])
    ignore = {"budget_images", "device", "data_root", "schedules", *SCHEDULABLE}  # rates may change between runs
    diff = sorted(k for k, v in saved.to_dict().items() if k not in ignore and getattr(cfg, k) != v)
    if diff:
        raise ConfigError(f"checkpoint {path} was made with another config (differs in {', '.join(diff)}).")
    gen.load_state_dict(state["gen"])
    disc.load_state_dict(state["disc"])
    if ema is not None:
        ema.load_state_dict(state["ema"])
    opt_g.load_state_dict(state["opt_g"])
    opt_d.load_state_dict(state["opt_d"])
    rng.set_state(state["rng"].cpu())
    torch.set_rng_state(state["torch_rng"].cpu())
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])
    return state["step"], state["images_seen"], state["eval_index"], state["seconds"], state["history"]

