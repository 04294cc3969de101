"""One GAN training step, written once: ``n_critic`` discriminator steps (loss, penalty, R1), a generator step,
the optimisers, the EMA of G, the scheduled values, bf16 autocast and the memory layout.

``gan_step(nets, runs, real_data, amp)`` steps K runs together: ``runs`` hold each run's counters, RNG stream,
current (scheduled) values and loss; ``nets`` holds their networks and optimisers behind one small interface
(``Nets``): stacked inputs in, stacked outputs out, first dimension = run. ``train()`` steps one run through
``SingleNets`` (plain modules and ``torch.optim.Adam``), ``trainer.pack.Pack`` steps K runs through its stacked
parameters (vmapped, or in turn), and the precision probe times ``gan_step`` itself, so the three cannot drift.
A single run through this path was timed against the loop it replaced: ``python -m benchmarks.speed.throughput
--compare-with <old checkout>`` (BENCHMARKS.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from trainer.augment import augment
from trainer.config import TrainConfig
from trainer.ema import EMA
from trainer.errors import Diverged
from trainer.losses import build_loss, r1_penalty
from trainer.models import Generator, build_models, has_conv
from trainer.noise import Evaluator, SampleFn, fixed_sampler


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
class RunState:
    """One run's progress outside its tensors: config and its values now, loss, RNG stream, counters, history."""

    cfg: TrainConfig
    rng: torch.Generator  # batches, noise, augmentation (real, then fake), gradient-penalty interpolation, in that order
    step: int = 0  # generator steps done
    images_seen: int = 0
    eval_index: int = 0
    seconds: float = 0.0  # training time, evaluations excluded
    history: list[dict[str, Any]] = field(default_factory=list)
    hp: TrainConfig = field(init=False)  # cfg with every scheduled field at its value now (== cfg without schedules)
    loss: Any = field(init=False)
    acc: torch.Tensor = field(init=False)  # running sums of (d_loss, g_loss) since the last evaluation
    acc_steps: int = 0

    def __post_init__(self) -> None:
        self.acc = torch.zeros(2, device=self.rng.device)
        self.resync()

    def resync(self) -> None:
        """Take the config's values at ``images_seen`` (at the start, after a resume, when a schedule moves on)."""
        self.hp = self.cfg.at(self.images_seen)
        self.loss = build_loss(self.hp)

    def follow_schedule(self) -> bool:
        """True when a schedule moved on since the last step (then ``hp`` and ``loss`` hold the new values)."""
        if not self.cfg.schedules or self.cfg.at(self.images_seen) == self.hp:
            return False
        self.resync()
        return True

    @property
    def final(self) -> bool:
        return self.images_seen >= self.cfg.budget_images

    @property
    def due(self) -> bool:
        """An evaluation is due: the next ``eval_every_images`` mark is passed, or the budget is done."""
        return self.final or self.images_seen >= (self.eval_index + 1) * self.cfg.eval_every_images

    def check_finite(self, last: dict[str, float] | None = None) -> None:
        if not bool(torch.isfinite(self.acc).all()):
            raise Diverged(self.step, last or {"d_loss": float(self.acc[0]), "g_loss": float(self.acc[1])})

    def evaluate(self, evaluator: Evaluator | None, sample: SampleFn, sample_raw: SampleFn | None,
                 save: Callable[[], Path | None], callback: Callback | None) -> EvalEvent:
        """Close the interval: mean losses, metrics, a history entry, the checkpoint (``save``), the callback."""
        self.check_finite()
        self.eval_index += 1
        losses = {"d_loss": float(self.acc[0]) / self.acc_steps, "g_loss": float(self.acc[1]) / self.acc_steps}
        self.acc.zero_()
        self.acc_steps = 0
        metrics = evaluator(sample) if evaluator is not None else {}
        mark = min(self.eval_index * self.cfg.eval_every_images, self.cfg.budget_images)
        self.history.append({"step": self.step, "images_seen": self.images_seen, "mark": mark, "losses": losses,
                             "metrics": metrics, "images_per_s": self.images_seen / max(self.seconds, 1e-9)})
        event = EvalEvent(self.step, self.images_seen, self.eval_index, mark, losses, metrics, sample, save(),
                          self.final, sample_raw)
        if callback is not None:
            callback(event)
        return event


class Nets(Protocol):
    """K runs' networks and optimisers behind stacked tensors (first dimension = run)."""

    # y: (K, B) class labels, given only to class-conditional networks (cfg.classes > 0)
    def gen(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor: ...  # (K, B, latent) -> (K, B, C, H, W)

    def disc(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor: ...  # (K, B, C, H, W) -> (K, B)

    def disc_of(self, k: int, y: torch.Tensor | None = None) -> Callable[[torch.Tensor], torch.Tensor]: ...  # run k's D

    def zero_grad(self) -> None: ...

    def step_d(self, runs: Sequence[RunState]) -> None: ...  # D's optimiser step, each run at its hp

    def step_g(self, runs: Sequence[RunState]) -> None: ...  # G's optimiser step and EMA update


def _stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    return tensors[0].unsqueeze(0) if len(tensors) == 1 else torch.stack(tensors)


def _augmented(images: torch.Tensor, runs: Sequence[RunState]) -> torch.Tensor:
    """(K, B, C, H, W) images through each run's DiffAugment policy, drawn from its own stream (none: as given)."""
    if not any(r.hp.augment for r in runs):
        return images
    return _stack([augment(images[k], r.hp.augment, r.rng) if r.hp.augment else images[k] for k, r in enumerate(runs)])


def gan_step(nets: Nets, runs: Sequence[RunState], train_images: torch.Tensor, amp: bool,
             train_labels: torch.Tensor | None = None) -> None:
    """One generator step (after ``n_critic`` discriminator steps) of every run; counters and losses accumulate.

    Class-conditional runs (``classes > 0``) need ``train_labels``: in a D step the fakes take the real batch's
    labels (so a penalty's interpolates have one label each), in the G step labels drawn from the training split."""
    hp = runs[0].hp
    bsz, latent, n_critic = hp.batch_size, hp.latent_dim, hp.n_critic
    if any(r.hp.n_critic != n_critic or r.hp.batch_size != bsz for r in runs):
        raise ValueError("runs stepped together must take the same n_critic and batch_size at each step.")
    conditional = hp.classes > 0
    if any((r.hp.classes > 0) != conditional for r in runs) or (conditional and train_labels is None):
        raise ValueError("runs stepped together must all be class-conditional (with train_labels) or none.")
    device, n_train = train_images.device, len(train_images)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp)
    r1 = any(r.hp.r1_weight > 0 for r in runs)
    d_losses: list[torch.Tensor] = []
    y: torch.Tensor | None = None
    for _ in range(n_critic):  # discriminator steps
        index = _stack([torch.randint(n_train, (bsz,), device=device, generator=r.rng) for r in runs])  # (K, B)
        real = train_images[index]
        y = train_labels[index] if conditional else None  # type: ignore[index]
        z = _stack([torch.randn(bsz, latent, device=device, generator=r.rng) for r in runs])
        with torch.no_grad(), autocast:
            fake = nets.gen(z, y)
        if r1:
            real.requires_grad_(True)
        d_losses = []
        with autocast:
            seen_real, seen_fake = _augmented(real, runs), _augmented(fake, runs)  # DiffAugment: both, alike
            real_logits, fake_logits = nets.disc(seen_real, y), nets.disc(seen_fake, y)
            for k, run in enumerate(runs):
                d_loss = run.loss.d_loss(real_logits[k].float(), fake_logits[k].float())
                penalty = run.loss.penalty(nets.disc_of(k, None if y is None else y[k]), seen_real[k], seen_fake[k],
                                           run.rng)
                if penalty is not None:
                    d_loss = d_loss + penalty
                if run.hp.r1_weight > 0:
                    d_loss = d_loss + 0.5 * run.hp.r1_weight * r1_penalty(real_logits[k], real, index=k)
                d_losses.append(d_loss)
        nets.zero_grad()
        _stack(d_losses).sum().backward()
        nets.step_d(runs)
        for run in runs:
            run.images_seen += bsz
    z = _stack([torch.randn(bsz, latent, device=device, generator=r.rng) for r in runs])  # generator step
    if conditional:
        y = train_labels[_stack([torch.randint(n_train, (bsz,), device=device, generator=r.rng)  # type: ignore[index]
                                 for r in runs])]
    with autocast:
        fake_logits = nets.disc(_augmented(nets.gen(z, y), runs), y)
        g_losses = [run.loss.g_loss(fake_logits[k].float()) for k, run in enumerate(runs)]
    nets.zero_grad()
    _stack(g_losses).sum().backward()
    nets.step_g(runs)
    losses = torch.stack([_stack(d_losses).detach().float(), _stack(g_losses).detach().float()], dim=1)  # (K, 2)
    for k, run in enumerate(runs):
        run.step += 1
        run.acc += losses[k]
        run.acc_steps += 1


@dataclass
class Modules:
    """One run as plain modules and optimisers: what a checkpoint holds (``trainer.loop.save_checkpoint``)."""

    g: Generator
    d: nn.Module
    ema: EMA | None
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer


class SingleNets(Modules):
    """One run's plain modules and ``torch.optim.Adam`` optimisers, seen as a stack of one."""

    def __init__(self, cfg: TrainConfig, shape: tuple[int, int, int], device: torch.device,
                 channels_last: bool = False) -> None:
        torch.manual_seed(cfg.seed)  # the initial weights (packs seed the same way)
        gen, disc = build_models(cfg, shape)
        self.channels_last = channels_last and has_conv(disc)
        gen, disc = gen.to(device), disc.to(device)
        if self.channels_last:
            gen, disc = gen.to(memory_format=torch.channels_last), disc.to(memory_format=torch.channels_last)
        super().__init__(gen, disc, EMA(gen, cfg.ema_decay, cfg.ema_warmup) if cfg.ema_decay > 0 else None,
                         torch.optim.Adam(gen.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2)),
                         torch.optim.Adam(disc.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2)))

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    @torch.no_grad()
    def set_class_prior(self, labels: torch.Tensor) -> None:
        """A class-conditional generator (and its EMA) samples classes in the proportions of ``labels`` (checked to
        be 0..classes-1 by ``trainer.data.check_labels``)."""
        for g in (self.g, self.ema.module if self.ema is not None else None):
            prior = getattr(g, "class_prior", None)
            if isinstance(prior, torch.Tensor):
                counts = torch.bincount(labels, minlength=len(prior)).float()
                prior.copy_(counts / counts.sum())

    def gen(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return (self.g(z[0]) if y is None else self.g(z[0], y[0])).unsqueeze(0)

    def disc(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return (self.d(self._layout(x[0])) if y is None else self.d(self._layout(x[0]), y[0])).unsqueeze(0)

    def disc_of(self, k: int, y: torch.Tensor | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
        return (lambda x: self.d(self._layout(x))) if y is None else (lambda x: self.d(self._layout(x), y))

    def zero_grad(self) -> None:
        self.opt_d.zero_grad(set_to_none=True)
        self.opt_g.zero_grad(set_to_none=True)

    def set_rates(self, hp: TrainConfig) -> None:
        """The optimisers take ``hp``'s rates and betas (a schedule moved on; a resumed run with new rates)."""
        for opt, lr in ((self.opt_g, hp.lr_g), (self.opt_d, hp.lr_d)):
            for group in opt.param_groups:
                group["lr"], group["betas"] = lr, (hp.beta1, hp.beta2)

    def step_d(self, runs: Sequence[RunState]) -> None:
        self.opt_d.step()

    def step_g(self, runs: Sequence[RunState]) -> None:
        self.opt_g.step()
        if self.ema is not None:
            self.ema.update(self.g)

    def sampler(self, seed: int, raw: bool = False) -> SampleFn:
        """Images from the EMA generator (the raw one with ``raw`` or without EMA) over a fixed noise stream."""
        return fixed_sampler(self.ema.module if self.ema is not None and not raw else self.g, seed)


__all__ = ["Callback", "EvalEvent", "Modules", "Nets", "RunState", "SingleNets", "gan_step"]
