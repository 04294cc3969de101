"""Precision and memory layout chosen by measurement, once per machine and model shape.

``amp: auto`` / ``channels_last: auto`` used to mean "on for CUDA, off for CPU". Measured, that is wrong
both ways: bf16 autocast + channels_last ran a DCGAN step 1.39x faster than fp32 on a CPU with
avx512_bf16 and 0.47x on one without, and 0.91x on an H200 for the 28 px DCGAN (launch-bound kernels).
So ``auto`` times a few training steps of each candidate on this device (fp32; bf16 autocast where the
device runs bf16; each with channels_last where the discriminator has convolutions), picks the fastest,
and keeps fp32 unless another mode is at least ``MARGIN`` faster (so timing noise never makes a run
slower than fp32). bf16 autocast is the only reduced precision on offer (its usual tolerance; a test
trains digits to the same FID within a stated margin); fp16 is never chosen.

The decision is cached in memory and on disk (``$GAN_SEARCH_CACHE/precision/<key>.json``), keyed by the
device's name, the torch version, the arch and the shapes that set the kernels (image shape, batch size,
widths, latent size, spectral norm), and is recorded with each trial.

Probing costs training time, so it is cut where the answer is already plain. On a CPU without fast bf16 kernels
bf16 ran at a tenth of fp32's speed, and the old probe spent 0.69 of three 64k-image trials deciding their three
shapes. Now: (1) a screen of two timed steps per mode drops a mode that runs under ``SLOW`` of the fastest before
the timed rounds; (2) what a machine cannot do fast is decided once per machine: bf16 under ``SLOW`` of fp32's
speed at one shape is recorded for the device (``precision/machine-<key>.json``), and later shapes time only the
fp32 layouts. ``Decision.seconds`` is the probe's own time (0 when read from a cache), recorded with each trial.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trainer.config import TrainConfig
from trainer.io import cache_dir
from trainer.models import build_models, has_conv
from trainer.step import RunState, SingleNets, gan_step

log = logging.getLogger(__name__)

MARGIN = 1.05  # a mode other than fp32 must be at least 5% faster than fp32 to be chosen
SLOW = 0.5  # a mode under half the fastest's images/s is dropped from a probe; bf16 that slow is slow for the machine
VERSION = 2  # bump when the probe changes: invalidates cached decisions
_memo: dict[str, Decision] = {}


@dataclass(frozen=True)
class Mode:
    amp: bool  # bf16 autocast
    channels_last: bool

    @property
    def name(self) -> str:
        return ("bf16" if self.amp else "fp32") + ("+channels_last" if self.channels_last else "")


FP32 = Mode(False, False)


@dataclass(frozen=True)
class Decision:
    mode: Mode
    table: dict[str, float]  # images/s per mode name, as measured
    key: str
    device: str  # the device's name as keyed
    cached: bool = False
    seconds: float = 0.0  # the probe's own time (0: read from memory or disk)

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode.name, "table": self.table, "key": self.key, "device": self.device,
                "seconds": round(self.seconds, 2)}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{_cpu_name()} x{torch.get_num_threads()} threads"


@functools.lru_cache(maxsize=1)
def _cpu_name() -> str:
    """The CPU's model and the instruction-set flags that decide its bf16 kernels (read once per process)."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            info = fh.read()
        model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                     model)
        flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
        isa = sorted(f for f in flags if f.startswith(("avx", "amx")))  # what decides the bf16 kernels
        model += " [" + " ".join(isa) + "]"
    except OSError:
        pass
    return model


def decision_key(cfg: TrainConfig, shape: tuple[int, int, int], device: torch.device) -> tuple[str, str]:
    name = device_name(device)
    keyed = {"v": VERSION, "device": name, "torch": torch.__version__, "arch": cfg.arch, "shape": list(shape),
             "batch_size": cfg.batch_size, "g_width": cfg.g_width, "d_width": cfg.d_width,
             "latent_dim": cfg.latent_dim, "spectral_norm": cfg.spectral_norm, "extra": cfg.extra,
             **({"classes": cfg.classes} if cfg.classes else {})}  # old keys unchanged
    return hashlib.sha256(json.dumps(keyed, sort_keys=True, default=str).encode()).hexdigest()[:20], name


def candidates(cfg: TrainConfig, shape: tuple[int, int, int], device: torch.device) -> list[Mode]:
    """The modes worth timing here: fp32 first; bf16 where the device runs it; channels_last for conv nets."""
    amps = [False]
    if cfg.amp != "off" and (device.type == "cpu" or (device.type == "cuda" and torch.cuda.is_bf16_supported())):
        amps.append(True)
    if cfg.amp == "on":
        amps = [True]
    layouts = [False]
    if cfg.channels_last != "off" and has_conv(build_models(cfg, shape)[1]):
        layouts.append(True)
    if cfg.channels_last == "on":
        layouts = [True]
    return [Mode(a, c) for a in amps for c in layouts]


def time_modes(cfg: TrainConfig, shape: tuple[int, int, int], device: torch.device, modes: list[Mode],
               steps: int = 6, rounds: int = 3, screen: bool = True) -> dict[str, float]:
    """Images/s of the training step itself (``trainer.step.gan_step``) per mode, on random images; rounds
    interleave the modes so drift hits all alike. With ``screen`` two timed single steps per mode come first, and a
    mode whose faster step runs under ``SLOW`` of the fastest mode's is not timed further (its table entry is the
    screen's figure)."""
    probe = cfg.replace(schedules={}, budget_images=cfg.batch_size, eval_every_images=cfg.batch_size)
    real = torch.rand(max(cfg.batch_size, 256), *shape, device=device) * 2 - 1
    labels = torch.arange(len(real), device=device) % cfg.classes if cfg.classes else None
    nets = {mode: SingleNets(probe.replace(seed=0), shape, device, channels_last=mode.channels_last) for mode in modes}
    runs = {mode: RunState(probe, torch.Generator(device=device).manual_seed(0)) for mode in modes}
    images = cfg.batch_size * cfg.n_critic

    def run(mode: Mode, n: int) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        for _ in range(n):
            gan_step(nets[mode], [runs[mode]], real, mode.amp, labels)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0

    table: dict[str, float] = {}
    for mode in modes:
        run(mode, 1 if screen else 2)  # warm-up: allocations, kernel selection (the screen then warms up further)
    timed = list(modes)
    if screen and len(modes) > 1:  # the faster of two single steps: one hiccup (a collection, a page fault) is not a verdict
        speed = {mode: images / min(run(mode, 1), run(mode, 1)) for mode in modes}
        fastest = max(speed.values())
        timed = [m for m in modes if speed[m] >= SLOW * fastest]
        for mode in modes:
            if mode not in timed:
                table[mode.name] = round(speed[mode], 1)
                log.info("precision: %s dropped from the probe (%.0f images/s against %.0f)", mode.name,
                         speed[mode], fastest)
    seconds: dict[Mode, list[float]] = {m: [] for m in timed}
    for _ in range(rounds):
        for mode in timed:
            seconds[mode].append(run(mode, steps))
    table |= {m.name: round(steps * images / statistics.median(s), 1) for m, s in seconds.items()}
    return {m.name: table[m.name] for m in modes}


def machine_verdict(device: torch.device, cache: Path | None = None) -> Path:
    """Where this machine's verdict on what it cannot do fast is kept (device name, torch version, probe version)."""
    keyed = {"v": VERSION, "device": device_name(device), "torch": torch.__version__}
    key = hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:20]
    return (cache or cache_dir()) / "precision" / f"machine-{key}.json"


def slow_bf16(device: torch.device, cache: Path | None = None) -> bool:
    """Whether a probe on this machine already found bf16 under ``SLOW`` of fp32's speed."""
    path = machine_verdict(device, cache)
    try:
        return bool(json.loads(path.read_text()).get("bf16_slow")) if path.is_file() else False
    except (OSError, ValueError):
        return False


def _judge_machine(table: dict[str, float], device: torch.device, cache: Path | None) -> None:
    """Record bf16 as slow for this machine when its best layout ran under ``SLOW`` of the best fp32 layout."""
    bf16 = max((v for k, v in table.items() if k.startswith("bf16")), default=None)
    fp32 = max((v for k, v in table.items() if k.startswith("fp32")), default=None)
    if bf16 is not None and fp32 and bf16 < SLOW * fp32:
        log.info("precision: bf16 runs at %.2fx fp32 on %s: not timed again on this machine", bf16 / fp32,
                 device_name(device))
        _write_json(machine_verdict(device, cache), {"bf16_slow": True, "ratio": round(bf16 / fp32, 3),
                                                     "device": device_name(device), "torch": torch.__version__})


def pick(table: dict[str, float], modes: list[Mode]) -> Mode:
    """The fastest mode; fp32 unless another is at least MARGIN faster (fp32 itself when it is a candidate)."""
    by_name = {m.name: m for m in modes}
    best = max(modes, key=lambda m: table[m.name])
    if FP32.name in by_name and table[best.name] < MARGIN * table[FP32.name]:
        return FP32
    return best


def choose(cfg: TrainConfig, shape: tuple[int, int, int], device: torch.device,
           cache: Path | None = None) -> Decision:
    """The mode for ``cfg``'s ``auto`` switches on ``device``: from memory, the disk cache, or a probe now."""
    key, name = decision_key(cfg, shape, device)
    memo_key = f"{key}/{cfg.amp}/{cfg.channels_last}/{cache}"
    if memo_key in _memo:  # every run of a worker after its first: no model built, nothing read
        return _memo[memo_key]
    modes = candidates(cfg, shape, device)
    if cfg.amp == "auto" and len(modes) > 1 and slow_bf16(device, cache):  # decided once for this machine
        modes = [m for m in modes if not m.amp]
    if len(modes) == 1:
        _memo[memo_key] = Decision(modes[0], {}, key, name)
        return _memo[memo_key]
    path = (cache or cache_dir()) / "precision" / f"{key}-{'-'.join(m.name for m in modes)}.json"
    if path.is_file():
        try:
            stored = json.loads(path.read_text())
            decision = Decision(next(m for m in modes if m.name == stored["mode"]), stored["table"], key, name, True)
            _memo[memo_key] = decision
            return decision
        except (ValueError, KeyError, StopIteration):
            log.warning("precision: ignoring an unreadable cached decision %s", path)
    rng_state = torch.get_rng_state()
    t0 = time.perf_counter()
    table = time_modes(cfg, shape, device, modes)
    torch.set_rng_state(rng_state)  # the probe leaves training's global RNG stream as it was
    _judge_machine(table, device, cache)
    decision = Decision(pick(table, modes), table, key, name, seconds=time.perf_counter() - t0)
    log.info("precision on %s: %s (images/s: %s)", name, decision.mode.name,
             ", ".join(f"{k} {v:,.0f}" for k, v in table.items()))
    _write_json(path, decision.to_dict())
    _memo[memo_key] = decision
    return decision


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomic and safe with concurrent workers: a unique temporary file renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=1)
    os.replace(tmp, path)


def resolve(cfg: TrainConfig, shape: tuple[int, int, int], device: torch.device) -> tuple[Mode, Decision | None]:
    """The mode a run of ``cfg`` uses: its explicit on/off switches, the probe's choice for ``auto`` ones."""
    if cfg.amp != "auto" and cfg.channels_last != "auto":
        return Mode(cfg.amp == "on", cfg.channels_last == "on"), None
    decision = choose(cfg, shape, device)
    return decision.mode, decision


def clear_memo() -> None:
    """Forget decisions made in this process (tests; a changed machine)."""
    _memo.clear()


__all__ = ["FP32", "MARGIN", "SLOW", "Decision", "Mode", "candidates", "choose", "clear_memo", "decision_key",
           "device_name", "machine_verdict", "pick", "resolve", "slow_bf16", "time_modes"]
