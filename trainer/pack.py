"""Several training runs as one vectorised model: K generators and K discriminators, stacked.

A ``Pack`` trains members whose configs build the same networks (same arch, widths, batch size...; see
``pack_key``) while their optimisation differs: learning rates, Adam betas, loss, EMA decay, seed and budget
are per member. The K members' parameters are stacked along a new first dimension and one forward call runs
them all through ``torch.func.functional_call`` under ``torch.vmap`` (convolutions become grouped
convolutions, linear layers batched matmuls), so K small trials cost close to one kernel launch stream.
Where an architecture cannot be vmapped (spectral norm's power iteration writes with ``out=``; a plug-in
may do anything), or where vmap is measured slower than running the members one after another (CPUs, where
grouped convolutions lose to separate ones), the same code runs the members in turn: identical results.

The step is ``trainer.step.gan_step``, the one ``train`` runs: the pack only supplies the stacked networks and a
vectorised Adam (``Nets``). Each member reproduces ``trainer.train`` of its config: the same initial weights
(seeded as ``train`` does), its own RNG stream drawn in the same order, the same Adam arithmetic per member,
the same EMA warm-up, schedules, evaluations, callbacks and checkpoints (in ``train``'s format, so a member
resumes in a pack or alone). channels_last applies where members run in turn (vmap stacks a fifth dimension).
A member whose ``n_critic`` is scheduled is refused with a reason (``Pack.refuses``): members take their D
steps together.
Members join and leave at any step: one that finishes, is pruned (its callback raises) or diverges leaves
the pack without disturbing the others, and a new one can take its slot.

Layers that draw from the global RNG (dropout, in the article's MLP discriminator) draw per pack, not per
member: such members train like their single runs in distribution, not bit for bit.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.func import functional_call

from trainer.checkpoint import load_checkpoint, save_checkpoint
from trainer.config import TrainConfig
from trainer.data import ImageData
from trainer.ema import ema_weight
from trainer.io import CHECKPOINT_FILE
from trainer.loop import TrainResult, save_outputs
from trainer.noise import Evaluator, fixed_sampler
from trainer.precision import FP32, MARGIN, Mode
from trainer.precision import resolve as resolve_mode
from trainer.stacked import Stacked, Tensors
from trainer.step import Callback, Modules, RunState, SingleNets, gan_step

log = logging.getLogger(__name__)

PER_MEMBER = ("lr_g", "lr_d", "beta1", "beta2", "loss", "gp_weight", "r1_weight", "ema_decay", "seed", "augment",
              "budget_images", "eval_every_images", "schedules")  # what may differ between members of one pack


def pack_key(cfg: TrainConfig) -> str:
    """Members of one pack share this key: every field except the per-member ones (the networks' shapes)."""
    fixed = {k: v for k, v in cfg.to_dict().items() if k not in PER_MEMBER}
    return json.dumps(fixed, sort_keys=True, default=str)


def _has_dropout(key: str, cfg: TrainConfig, shape: tuple[int, int, int]) -> bool:
    """Whether ``cfg``'s networks hold a dropout layer (memoised per pack key and shape)."""
    if (key, shape) not in _DROPOUT:
        from trainer.models import build_models

        with torch.random.fork_rng(devices=[]):  # building draws initial weights: leave the caller's stream alone
            nets = build_models(cfg, shape)
        _DROPOUT[(key, shape)] = any(isinstance(m, torch.nn.modules.dropout._DropoutNd)
                                     for net in nets for m in net.modules())
    return _DROPOUT[(key, shape)]


_DROPOUT: dict[tuple[str, tuple[int, int, int]], bool] = {}


@dataclass
class _Member(RunState):
    """One run inside the pack: its progress (``RunState``) and where it reports (tensors live in the pack)."""

    callback: Callback | None = None
    out: Path | None = None
    ema_updates: int = 0
    id: int = 0


@dataclass
class Outcome:
    """How a member left the pack: a result (its budget is done) or the exception that stopped it."""

    id: int
    cfg: TrainConfig
    result: TrainResult | None = None
    error: BaseException | None = None


class Pack:
    """K training runs of one ``pack_key``, stepped together on one device."""

    def __init__(self, data: ImageData, device: torch.device | str, evaluator: Evaluator | None = None,
                 vectorise: str = "auto") -> None:
        self.data = data.to(torch.device(device))
        self.device = torch.device(device)
        self.evaluator = evaluator
        if vectorise not in ("auto", "on", "off"):
            raise ValueError(f"vectorise must be auto, on or off, but got {vectorise=}.")
        self.want_vmap = vectorise  # auto: vmap where it works and is measured faster than running in turn
        self.vectorised: bool | None = None  # decided at the first step (with the members there then)
        self._decided_for = 0  # members when decided: decided again once the pack has doubled
        self.mode = FP32  # as trainer.precision decides for the first member; channels_last only where run in turn
        self.key: str | None = None
        self.members: list[_Member] = []
        self._next_id = 0
        self.stack = Stacked(self.device)  # the members' networks, EMA and Adam state (trainer/stacked.py)

    def __len__(self) -> int:
        return len(self.members)

    # ------------------------------------------------------------ membership
    @staticmethod
    def refuses(cfg: TrainConfig, shape: tuple[int, int, int] | None = None) -> str | None:
        """Why ``cfg`` cannot train in a pack (it then trains alone with ``trainer.train``), or None.

        With the data's ``shape`` the networks are inspected too: dropout draws its masks from torch's global
        generator, which the members of a pack would share, so such a run could not match its single run.
        """
        if cfg.classes:
            return "a class-conditional run (classes > 0) trains alone: a pack's members take no labels"
        if "n_critic" in cfg.schedules:
            return "a scheduled n_critic trains alone: a pack's members take their discriminator steps together"
        if shape is not None and _has_dropout(pack_key(cfg), cfg, shape):
            return (f"arch {cfg.arch!r} uses dropout, whose masks come from torch's global generator that a pack's "
                    "members would share: it trains alone")
        return None

    def add(self, cfg: TrainConfig, *, callback: Callback | None = None, out_dir: str | Path | None = None,
            resume_from: str | Path | None = None) -> int:
        """Add a run; it starts from scratch (seeded as ``train``) or from a ``train``/pack checkpoint."""
        if (why := self.refuses(cfg, self.data.shape)) is not None:
            raise ValueError(f"this config cannot join a pack: {why}.")
        key = pack_key(cfg)
        if self.key is not None and key != self.key:
            raise ValueError("a pack's members must build the same networks (only "
                             f"{', '.join(PER_MEMBER)} may differ), but got a member that differs elsewhere.")
        nets = SingleNets(cfg, self.data.shape, self.device)  # as train(): the same initial weights
        member = _Member(cfg, torch.Generator(device=self.device).manual_seed(cfg.seed), callback=callback,
                         out=Path(out_dir) if out_dir is not None else None, id=self._next_id)
        if resume_from is not None:
            load_checkpoint(Path(resume_from), member, nets, self.device)
            member.ema_updates = nets.ema.updates if nets.ema is not None else 0
        if member.out is not None:
            member.out.mkdir(parents=True, exist_ok=True)
        if self.key is None:
            self.key = key
            self.mode, _ = resolve_mode(cfg, self.data.shape, self.device)  # bf16 autocast if measured faster
        self.stack.insert(nets)
        self.members.append(member)
        self._next_id += 1
        return member.id

    def decide(self) -> bool:
        """vmap or in turn, for the members there now: both give the same numbers (tests), so speed decides.

        ``on``: vmap where it works; ``off``: in turn; ``auto``: vmap only where it works and a timed forward
        and backward pass of G and D (on copies of the weights) is at least 5% faster than in turn. On CPUs
        the grouped convolutions vmap produces were measured slower than separate ones (benchmarks/speed/packing.py).
        """
        works = self.want_vmap != "off" and self._vmap_works()
        if self.want_vmap == "auto" and works:
            works = len(self.members) > 1 and self._timed(True) * MARGIN < self._timed(False)
        self.vectorised, self._decided_for = works, len(self.members)
        log.info("pack of %d: %s", len(self.members), "vectorised (torch.vmap)" if works else "members run in turn")
        return works

    # ------------------------------------------------------------ the step's view of the pack (trainer.step.Nets)
    # a pack's members are never class-conditional (``refuses``): the labels ``y`` are always None here
    def gen(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if y is not None:
            raise ValueError("a pack's members take no labels (class-conditional runs train alone).")
        return self._call(self.stack.g_base, self.stack.gp, self.stack.gb, z)

    def disc(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self._call(self.stack.d_base, self.stack.dp, self.stack.db, x)

    def disc_of(self, k: int, y: torch.Tensor | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
        """Member k's discriminator as a function (gradient penalties call it)."""
        def disc(x: torch.Tensor) -> torch.Tensor:
            return functional_call(self.stack.d_base, ({n: v[k] for n, v in self.stack.dp.items()},  # type: ignore[arg-type]
                                                 {n: v[k] for n, v in self.stack.db.items()}), (self._layout(x),))
        return disc

    def zero_grad(self) -> None:
        for p in (*self.stack.gp.values(), *self.stack.dp.values()):
            p.grad = None

    def step_d(self, runs: Sequence[RunState]) -> None:
        self.stack.adam_d([r.hp.lr_d for r in runs], [r.hp.beta1 for r in runs], [r.hp.beta2 for r in runs])

    def step_g(self, runs: Sequence[RunState]) -> None:
        self.stack.adam_g([r.hp.lr_g for r in runs], [r.hp.beta1 for r in runs], [r.hp.beta2 for r in runs])
        self._ema_update()

    @property
    def channels_last(self) -> bool:
        """channels_last where the members run in turn (a member's slice is an ordinary 4-D batch)."""
        return self.mode.channels_last and not self.vectorised and self.stack.d_base is not None and \
            any(isinstance(m, torch.nn.modules.conv._ConvNd) for m in self.stack.d_base.modules())

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    def _call(self, base: Any, params: Tensors, buffers: Tensors, x: torch.Tensor) -> torch.Tensor:
        def one(p: Tensors, b: Tensors, xi: torch.Tensor) -> torch.Tensor:
            return functional_call(base, (p, b), (self._layout(xi),))

        if self.vectorised:
            return torch.vmap(one, randomness="same")(params, buffers, x)  # type: ignore[no-any-return]
        return torch.stack([one({n: v[k] for n, v in params.items()}, {n: v[k] for n, v in buffers.items()}, x[k])
                            for k in range(x.shape[0])])

    def _timed(self, vectorised: bool, passes: int = 2) -> float:
        """Seconds for forward and backward passes of G and D over every member, on copies of the weights."""
        saved = self.vectorised
        self.vectorised = vectorised
        try:
            k, cfg = len(self.members), self.members[0].cfg
            z = torch.zeros(k, cfg.batch_size, cfg.latent_dim, device=self.device)
            gp = {n: v.detach().clone().requires_grad_(True) for n, v in self.stack.gp.items()}
            dp = {n: v.detach().clone().requires_grad_(True) for n, v in self.stack.dp.items()}
            gb, db = {n: v.clone() for n, v in self.stack.gb.items()}, {n: v.clone() for n, v in self.stack.db.items()}
            seconds = 0.0
            for i in range(passes + 1):  # the first pass warms up
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                t0 = time.perf_counter()
                self._call(self.stack.d_base, dp, db, self._call(self.stack.g_base, gp, gb, z)).float().sum().backward()
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                seconds += (time.perf_counter() - t0) if i else 0.0
            return seconds
        finally:
            self.vectorised = saved

    def _vmap_works(self) -> bool:
        """Try one vmapped forward of G and D on copies (buffers included), falling back if it fails."""
        try:
            z = torch.zeros(len(self.members), 2, self.members[0].cfg.latent_dim, device=self.device)
            gp = {n: v.detach().clone() for n, v in self.stack.gp.items()}
            gb = {n: v.clone() for n, v in self.stack.gb.items()}
            dp = {n: v.detach().clone() for n, v in self.stack.dp.items()}
            db = {n: v.clone() for n, v in self.stack.db.items()}
            self.vectorised = True
            with torch.no_grad():
                self._call(self.stack.d_base, dp, db, self._call(self.stack.g_base, gp, gb, z))
            return True
        except Exception as exc:  # noqa: BLE001 - any failure means: run the members in turn
            log.info("pack: vmap unavailable for this architecture (%s: %s)", type(exc).__name__, exc)
            return False
        finally:
            self.vectorised = None

    # ------------------------------------------------------------ optimisation
    @torch.no_grad()
    def _ema_update(self) -> None:

        weights = []
        for c in self.members:
            if c.cfg.ema_decay > 0:
                weights.append(ema_weight(c.cfg.ema_decay, c.ema_updates, c.cfg.ema_warmup))
                c.ema_updates += 1
            else:
                weights.append(1.0)  # no EMA: the "average" is the generator itself
        self.stack.ema_update(weights)

    # ------------------------------------------------------------ one step of every member
    def step(self) -> list[Outcome]:
        """One generator step (after n_critic discriminator steps) for every member, then the evaluations due.

        Returns the members that left the pack at this step (budget done, callback raised, diverged).
        """
        if not self.members:
            return []
        if self.vectorised is None or len(self.members) > 2 * self._decided_for:
            self.decide()
        t0 = time.perf_counter()
        for c in self.members:
            c.follow_schedule()  # rates and betas are read per member at each Adam step
        gan_step(self, self.members, self.data.train, self.mode.amp)
        elapsed = time.perf_counter() - t0
        for c in self.members:
            c.seconds += elapsed
        return self._evaluate_due()

    def run(self) -> list[Outcome]:
        """Step until every member has left; the outcomes in the order they left."""
        outcomes: list[Outcome] = []
        while self.members:
            outcomes += self.step()
        return outcomes

    # ------------------------------------------------------------ evaluations, checkpoints, exits
    def _evaluate_due(self) -> list[Outcome]:
        left: list[Outcome] = []
        k = 0
        while k < len(self.members):
            c = self.members[k]
            outcome = None
            try:
                c.check_finite()
                if c.due:
                    result = self._evaluate(k)
                    if result is not None:
                        outcome = Outcome(c.id, c.cfg, result=result)
            except BaseException as exc:  # noqa: BLE001 - pruned, diverged, a failing callback: this member only
                if isinstance(exc, KeyboardInterrupt):
                    raise
                outcome = Outcome(c.id, c.cfg, error=exc)
            if outcome is not None:
                self.stack.remove(k)
                del self.members[k]
                left.append(outcome)
            else:
                k += 1
        return left

    def _evaluate(self, k: int) -> TrainResult | None:
        """Member k's evaluation (``RunState.evaluate``, as in ``train``); its result when its budget is done."""
        c = self.members[k]
        cfg = c.cfg
        gen, disc, ema = self.stack.modules(k, c.cfg.ema_decay, c.ema_updates, c.cfg.ema_warmup)
        sampler_net: Any = ema.module if ema is not None else gen

        def save() -> Path | None:
            if c.out is None:
                return None
            opt_g, opt_d = self.stack.optimisers(k, gen, disc, c.hp.lr_g, c.hp.lr_d, (c.hp.beta1, c.hp.beta2))
            save_checkpoint(c.out / CHECKPOINT_FILE, c, Modules(gen, disc, ema, opt_g, opt_d))  # type: ignore[arg-type]
            return c.out / CHECKPOINT_FILE

        c.evaluate(self.evaluator, fixed_sampler(sampler_net, cfg.seed + 1, self.device),
                   fixed_sampler(gen, cfg.seed + 1, self.device) if ema is not None else None, save, c.callback)
        if not c.final:
            return None
        sampler_net.eval()
        precision = Mode(self.mode.amp, self.channels_last).name
        result = TrainResult(sampler_net, cfg, self.data.shape, c.step, c.images_seen, c.seconds,
                             c.images_seen / max(c.seconds, 1e-9), str(self.device), c.history, precision=precision)
        if c.out is not None:
            save_outputs(result, c.out)
        return result


def train_pack(cfgs: list[TrainConfig], data: ImageData, *, device: torch.device | str = "cpu",
               evaluator: Evaluator | None = None, callbacks: list[Callback | None] | None = None,
               out_dirs: list[str | Path | None] | None = None, vectorise: str = "auto") -> list[Outcome]:
    """Train ``cfgs`` (one ``pack_key``) together; one ``Outcome`` per config, in the order of ``cfgs``."""
    pack = Pack(data, device, evaluator, vectorise=vectorise)
    ids = [pack.add(cfg, callback=(callbacks or [None] * len(cfgs))[i], out_dir=(out_dirs or [None] * len(cfgs))[i])
           for i, cfg in enumerate(cfgs)]
    by_id = {o.id: o for o in pack.run()}
    return [by_id[i] for i in ids]
