"""A pack's members as stacked tensors (first dimension = member): the bookkeeping apart from the training.

``Stacked`` holds the K members' generator and discriminator parameters and buffers, their EMA generators, Adam
moments and step counts; it appends a member's ordinary modules (``insert``), drops one (``remove``), applies
Adam and the EMA with per-member values, and gives member k back as ordinary modules and ``torch.optim.Adam``
objects (to sample, save or checkpoint it as ``train`` does). ``trainer.pack.Pack`` decides how the stacks are
called (vmapped or in turn) and runs the step, the evaluations and the members' comings and goings.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from trainer.ema import EMA
from trainer.step import Modules

Tensors = dict[str, torch.Tensor]


class Stacked:
    """The stacked state of a pack's members, on ``device``."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.g_base: torch.nn.Module | None = None  # the first member's modules: the functions the stacks are called with
        self.d_base: torch.nn.Module | None = None
        self.gp: Tensors = {}
        self.gb: Tensors = {}
        self.dp: Tensors = {}
        self.db: Tensors = {}
        self.ema_p: Tensors = {}
        self.ema_b: Tensors = {}
        self.adam: dict[str, Tensors] = {"mg": {}, "vg": {}, "md": {}, "vd": {}}
        self.steps_g = torch.zeros(0, dtype=torch.float64)
        self.steps_d = torch.zeros(0, dtype=torch.float64)

    def insert(self, nets: Modules) -> None:
        """Append a member's networks, EMA and Adam state (the first member's modules become the bases)."""
        if self.g_base is None:
            self.g_base, self.d_base = copy.deepcopy(nets.g), copy.deepcopy(nets.d)
        gen, disc, ema, opt_g, opt_d = nets.g, nets.d, nets.ema, nets.opt_g, nets.opt_d

        def put(stack: Tensors, name: str, value: torch.Tensor, grad: bool = False) -> None:
            value = value.detach().to(self.device).unsqueeze(0)
            joined = torch.cat([stack[name].detach(), value]) if name in stack else value.clone()
            stack[name] = joined.requires_grad_(grad)

        ema_module = ema.module if ema is not None else gen
        for name, p in gen.named_parameters():
            put(self.gp, name, p, grad=True)
            state = opt_g.state.get(p, {})
            put(self.adam["mg"], name, state.get("exp_avg", torch.zeros_like(p)))
            put(self.adam["vg"], name, state.get("exp_avg_sq", torch.zeros_like(p)))
        for name, b in gen.named_buffers():
            put(self.gb, name, b)
        for name, p in ema_module.named_parameters():
            put(self.ema_p, name, p)
        for name, b in ema_module.named_buffers():
            put(self.ema_b, name, b)
        for name, p in disc.named_parameters():
            put(self.dp, name, p, grad=True)
            state = opt_d.state.get(p, {})
            put(self.adam["md"], name, state.get("exp_avg", torch.zeros_like(p)))
            put(self.adam["vd"], name, state.get("exp_avg_sq", torch.zeros_like(p)))
        for name, b in disc.named_buffers():
            put(self.db, name, b)

        def step_of(opt: torch.optim.Optimizer) -> float:
            states = list(opt.state.values())
            return float(states[0]["step"]) if states else 0.0

        self.steps_g = torch.cat([self.steps_g, torch.tensor([step_of(opt_g)], dtype=torch.float64)])
        self.steps_d = torch.cat([self.steps_d, torch.tensor([step_of(opt_d)], dtype=torch.float64)])

    def remove(self, index: int) -> None:
        """Drop member ``index`` from every stack."""

        keep = [i for i in range(len(self.steps_g)) if i != index]
        idx = torch.tensor(keep, dtype=torch.long, device=self.device)
        for stack in (self.gp, self.dp):
            for name, t in stack.items():
                stack[name] = t.detach().index_select(0, idx).requires_grad_(True)
        for stack in (self.gb, self.db, self.ema_p, self.ema_b, *self.adam.values()):
            for name, t in stack.items():
                stack[name] = t.index_select(0, idx)
        self.steps_g, self.steps_d = self.steps_g[keep], self.steps_d[keep]

    def adam_d(self, lrs: list[float], beta1: list[float], beta2: list[float]) -> None:
        self._adam(self.dp, self.adam["md"], self.adam["vd"], self.steps_d, lrs, beta1, beta2)

    def adam_g(self, lrs: list[float], beta1: list[float], beta2: list[float]) -> None:
        self._adam(self.gp, self.adam["mg"], self.adam["vg"], self.steps_g, lrs, beta1, beta2)

    @staticmethod
    def _adam(params: Tensors, m: Tensors, v: Tensors, steps: torch.Tensor, lrs: list[float], beta1: list[float],
              beta2: list[float]) -> None:
        """torch.optim.Adam's arithmetic (single-tensor path), with each member's lr, betas and step count."""
        b1 = torch.tensor(beta1, dtype=torch.float64)
        b2 = torch.tensor(beta2, dtype=torch.float64)
        steps += 1
        bc1, bc2 = 1 - b1**steps, 1 - b2**steps
        step_size = (torch.tensor(lrs, dtype=torch.float64) / bc1)
        with torch.no_grad():
            for name, p in params.items():
                if p.grad is None:
                    continue
                shape = (-1,) + (1,) * (p.dim() - 1)

                def per_member(t: torch.Tensor, like: torch.Tensor = p, shape: tuple[int, ...] = shape) -> torch.Tensor:
                    return t.to(dtype=like.dtype, device=like.device).view(shape)

                g = p.grad
                m[name].lerp_(g, per_member(1 - b1))
                v[name].mul_(per_member(b2)).addcmul_(g, g * per_member(1 - b2))
                denom = (v[name].sqrt() / per_member(bc2.sqrt())).add_(1e-8)
                p.addcdiv_(m[name] * per_member(-step_size), denom)
                p.grad = None

    @torch.no_grad()
    def ema_update(self, weights: list[float]) -> None:
        """Each member's EMA of G moves towards its generator by its own weight (1: the generator itself)."""
        w = torch.tensor(weights, device=self.device)
        for name, p in self.gp.items():
            self.ema_p[name].lerp_(p.detach(), w.to(p.dtype).view((-1,) + (1,) * (p.dim() - 1)))
        for name, b in self.gb.items():
            self.ema_b[name].copy_(b)

    def modules(self, k: int, ema_decay: float, ema_updates: int,
                ema_warmup: bool = True) -> tuple[torch.nn.Module, torch.nn.Module, EMA | None]:
        """Member k as ordinary modules (generator, discriminator, EMA), e.g. to sample or to save."""
        assert self.g_base is not None and self.d_base is not None
        gen, disc = copy.deepcopy(self.g_base), copy.deepcopy(self.d_base)
        gen.load_state_dict({**{n: v[k].detach() for n, v in self.gp.items()}, **{n: v[k] for n, v in self.gb.items()}})
        disc.load_state_dict({**{n: v[k].detach() for n, v in self.dp.items()}, **{n: v[k] for n, v in self.db.items()}})
        ema = None
        if ema_decay > 0:
            ema = EMA(gen, ema_decay, ema_warmup)
            ema.module.load_state_dict({**{n: v[k] for n, v in self.ema_p.items()},
                                        **{n: v[k] for n, v in self.ema_b.items()}})
            ema.updates = ema_updates
        return gen, disc, ema

    def optimisers(self, k: int, gen: torch.nn.Module, disc: torch.nn.Module, lr_g: float, lr_d: float,
                   betas: tuple[float, float]) -> tuple[Any, Any]:
        """Member k's Adam states as torch.optim.Adam objects (what ``train`` checkpoints)."""
        out = []
        for net, lr, m, v, steps in ((gen, lr_g, self.adam["mg"], self.adam["vg"], self.steps_g),
                                     (disc, lr_d, self.adam["md"], self.adam["vd"], self.steps_d)):
            opt = torch.optim.Adam(net.parameters(), lr=lr, betas=betas)
            if float(steps[k]) > 0:
                for name, p in net.named_parameters():
                    opt.state[p] = {"step": torch.tensor(float(steps[k])), "exp_avg": m[name][k].clone(),
                                    "exp_avg_sq": v[name][k].clone()}
            out.append(opt)
        return out[0], out[1]


__all__ = ["Stacked", "Tensors"]
