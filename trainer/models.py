"""Generators and discriminators: the article's MLP (fixed) and a DCGAN for 8/16/28/32/64 px."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _sn

from trainer.config import DCGAN_SIZES, TrainConfig
from trainer.errors import ConfigError
from trainer.registry import ARCHS


class Generator(nn.Module):
    """Base of every generator: knows its latent size and samples images in [-1, 1]."""

    latent_dim: int

    @torch.no_grad()
    def sample(self, n: int, device: torch.device | str | None = None,
               generator: torch.Generator | None = None, labels: torch.Tensor | None = None) -> torch.Tensor:
        """``n`` images; ``labels`` (n,) asks a class-conditional generator for those classes (else drawn from z)."""
        device = device or next(self.parameters()).device
        z = torch.randn(n, self.latent_dim, device=device, generator=generator)
        return (self(z) if labels is None else self(z, labels.to(device))).float()


class MLPGenerator(Generator):
    """The article's generator, fixed: ends in C*H*W units with Tanh and is reshaped to an image."""

    def __init__(self, latent_dim: int, width: int, shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.latent_dim, self.shape = latent_dim, shape
        out = math.prod(shape)
        self.net = nn.Sequential(
            nn.Linear(latent_dim, 4 * width), nn.LeakyReLU(0.2),   # (B, 4w)
            nn.Linear(4 * width, 8 * width), nn.LeakyReLU(0.2),    # (B, 8w)
            nn.Linear(8 * width, 16 * width), nn.LeakyReLU(0.2),   # (B, 16w)
            nn.Linear(16 * width, out), nn.Tanh(),                 # (B, C*H*W) in [-1, 1]
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, *self.shape)  # (B, C, H, W)


class MLPDiscriminator(nn.Module):
    """The article's discriminator, fixed: returns logits (no Sigmoid) so the losses stay stable."""

    def __init__(self, width: int, shape: tuple[int, int, int], sn: bool) -> None:
        super().__init__()
        w = _sn if sn else (lambda m: m)
        self.net = nn.Sequential(
            nn.Flatten(),                                                     # (B, C*H*W)
            w(nn.Linear(math.prod(shape), 16 * width)), nn.LeakyReLU(0.2), nn.Dropout(0.3),  # (B, 16w)
            w(nn.Linear(16 * width, 8 * width)), nn.LeakyReLU(0.2), nn.Dropout(0.3),         # (B, 8w)
            w(nn.Linear(8 * width, 4 * width)), nn.LeakyReLU(0.2), nn.Dropout(0.3),          # (B, 4w)
            w(nn.Linear(4 * width, 1)),                                       # (B, 1) logit
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).view(-1)  # (B,)


def has_conv(net: nn.Module) -> bool:
    """channels_last helps convolutions only."""
    return any(isinstance(m, nn.modules.conv._ConvNd) for m in net.modules())


def _dcgan_plan(size: int) -> tuple[int, int]:
    """(start side s0, number of x2 stages n) with s0 * 2**n == size."""
    if size not in DCGAN_SIZES:
        raise ConfigError(f"image_size must be one of {DCGAN_SIZES} for arch='dcgan', but got image_size={size}.")
    return (7, 2) if size == 28 else (4, int(math.log2(size // 4)))


class DCGANGenerator(Generator):
    """Transposed convs from a projected z. With ``classes`` it is class-conditional: the class as a one-hot vector
    is concatenated to z (a learned class embedding there let G ignore z: its samples of one class hardly varied,
    recall 0.0 on MNIST, BENCHMARKS-HISTORY-2026-12-05.md "Discriminator options"). The class is an argument in training;
    where it is not given (sampling, evaluation, an exported generator) it is read from z's first coordinate
    through the class prior (``label_of``), so ``G(z)`` draws the classes in the training split's proportions and
    a fixed noise stream fixes the classes too."""

    def __init__(self, latent_dim: int, width: int, shape: tuple[int, int, int], classes: int = 0) -> None:
        super().__init__()
        c, size, _ = shape
        s0, n = _dcgan_plan(size)
        ch = width * 2 ** (n - 1) if n else width
        self.latent_dim, self.s0, self.ch, self.classes = latent_dim, s0, ch, classes
        if classes:
            self.register_buffer("class_prior", torch.full((classes,), 1.0 / classes))  # set from the data in training
        self.project = nn.Sequential(nn.Linear(latent_dim + classes, ch * s0 * s0, bias=False),
                                     nn.BatchNorm1d(ch * s0 * s0), nn.ReLU(True))  # (B, ch*s0*s0)
        blocks: list[nn.Module] = []
        for _ in range(n):  # each stage: (B, ch, s, s) -> (B, ch/2, 2s, 2s)
            out = max(ch // 2, 16)
            blocks += [nn.ConvTranspose2d(ch, out, 4, 2, 1, bias=False), nn.BatchNorm2d(out), nn.ReLU(True)]
            ch = out
        blocks += [nn.Conv2d(ch, c, 3, 1, 1), nn.Tanh()]  # (B, C, size, size) in [-1, 1]
        self.body = nn.Sequential(*blocks)

    def label_of(self, z: torch.Tensor) -> torch.Tensor:
        """The class of each latent: the class-prior quantile of Phi(z[:, 0]), uniform in [0, 1) for z ~ N(0, I)."""
        u = torch.special.ndtr(z[:, 0].float()).contiguous()  # (B,)
        prior: torch.Tensor = self.class_prior  # type: ignore[assignment]
        cdf = torch.cumsum(prior.float(), 0)
        return torch.searchsorted(cdf, u, right=True).clamp_(max=self.classes - 1)  # (B,) int64

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.classes:
            y = self.label_of(z) if y is None else y
            z = torch.cat([z, F.one_hot(y, self.classes).to(z.dtype)], 1)  # (B, latent + classes)
        x = self.project(z).view(-1, self.ch, self.s0, self.s0)  # (B, ch, s0, s0)
        return self.body(x)


class MinibatchStd(nn.Module):
    """Appends one channel: the standard deviation of each feature over a group of ``group`` samples, averaged
    (ProGAN's minibatch standard deviation as StyleGAN2 groups it). A discriminator that sees how varied a
    batch is can tell apart a generator that drops modes; samples of one group share the value."""

    def __init__(self, group: int = 4) -> None:
        super().__init__()
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = min(self.group, n) if n % min(self.group, n) == 0 else n  # groups of 4, else the whole batch
        y = x.reshape(g, -1, c, h, w)  # (G, N/G, C, H, W): sample i is in group i mod N/G
        y = (y - y.mean(0)).square().mean(0).add(1e-8).sqrt()  # (N/G, C, H, W) spread within each group
        y = y.mean(dim=(1, 2, 3)).reshape(-1, 1, 1, 1).repeat(g, 1, h, w)  # (N, 1, H, W)
        return torch.cat([x, y], 1)


class DCGANDiscriminator(nn.Module):
    """Strided convs, optional spectral norm; ``norm`` after every conv but the first: none (gradient penalties
    stay per-sample), batch (as pytorch/examples' DCGAN), layer (per-sample: GroupNorm with one group);
    ``mbstd`` adds the minibatch standard deviation channel before the last layer; ``classes`` makes it a
    projection discriminator (Miyato & Koyama 2018): logit = linear(h) + <embed(y), h> on the last features h;
    ``pack`` > 1 makes it PacGAN's (Lin et al. 2018): consecutive groups of ``pack`` images are stacked as channels
    and judged together, one logit per group, so a generator that repeats itself is seen doing so."""

    def __init__(self, width: int, shape: tuple[int, int, int], sn: bool, norm: str = "none",
                 mbstd: bool = False, classes: int = 0, pack: int = 1) -> None:
        super().__init__()
        c, size, _ = shape
        s0, n = _dcgan_plan(size)
        w = _sn if sn else (lambda m: m)
        layers: list[nn.Module] = []
        self.pack = pack
        ch_in, ch = c * pack, width
        for stage in range(n):  # each stage: (B, ch_in, s, s) -> (B, ch, s/2, s/2)
            normed = stage > 0 and norm != "none"
            layers.append(w(nn.Conv2d(ch_in, ch, 4, 2, 1, bias=not normed)))
            if normed:
                layers.append(nn.BatchNorm2d(ch) if norm == "batch" else nn.GroupNorm(1, ch))
            layers.append(nn.LeakyReLU(0.2, True))
            ch_in, ch = ch, ch * 2
        if mbstd:
            layers.append(MinibatchStd())  # (B, ch_in, s0, s0) -> (B, ch_in + 1, s0, s0)
            ch_in += 1
        layers += [nn.Flatten(), w(nn.Linear(ch_in * s0 * s0, 1))]  # (B, ch_in*s0*s0) -> (B, 1) logit
        self.net = nn.Sequential(*layers)
        self.classes = classes
        if classes:  # small initial class vectors (Xavier, as SNGAN's projection): N(0, 1) ones swamp the logit at first
            embed = nn.Embedding(classes, ch_in * s0 * s0)
            nn.init.xavier_uniform_(embed.weight)
            self.embed = w(embed)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.pack > 1:  # (B, C, H, W) -> (B / pack, pack * C, H, W): images i*pack .. i*pack+pack-1 together
            x = x.reshape(-1, self.pack * x.shape[1], *x.shape[2:])
        if not self.classes:
            return self.net(x).view(-1)  # (B,) or (B / pack,)
        if y is None:
            raise ValueError(f"this discriminator is class-conditional ({self.classes} classes): pass the labels y.")
        h = self.net[:-1](x)  # (B, F) features
        return self.net[-1](h).view(-1) + (self.embed(y) * h).sum(1)  # (B,) logit + projection


@ARCHS.register("mlp")
def build_mlp(cfg: TrainConfig, shape: tuple[int, int, int]) -> tuple[Generator, nn.Module]:
    return MLPGenerator(cfg.latent_dim, cfg.g_width, shape), MLPDiscriminator(cfg.d_width, shape, cfg.spectral_norm)


@ARCHS.register("dcgan")
def build_dcgan(cfg: TrainConfig, shape: tuple[int, int, int]) -> tuple[Generator, nn.Module]:
    return (DCGANGenerator(cfg.latent_dim, cfg.g_width, shape, cfg.classes),
            DCGANDiscriminator(cfg.d_width, shape, cfg.spectral_norm, cfg.d_norm, cfg.d_mbstd, cfg.classes, cfg.d_pack))


def build_models(cfg: TrainConfig, shape: tuple[int, int, int]) -> tuple[Generator, nn.Module]:
    """(generator, discriminator) of ``cfg.arch`` for images of ``shape``; a plug-in's output is checked."""
    try:
        result = ARCHS.get(cfg.arch)(cfg, shape)
    except ConfigError:
        raise
    except Exception as exc:  # a plug-in's own error: one line naming the key
        raise ConfigError(f"arch={cfg.arch!r} failed to build for images of shape {shape}: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    if not (isinstance(result, tuple) and len(result) == 2 and all(isinstance(m, nn.Module) for m in result)):
        raise ConfigError(f"arch={cfg.arch!r} must return (generator, discriminator) nn.Modules, "
                          f"but returned {type(result).__name__}.")
    gen, disc = result
    latent = getattr(gen, "latent_dim", None)
    if not isinstance(latent, int) or latent < 1 or not callable(getattr(gen, "sample", None)):
        raise ConfigError(f"arch={cfg.arch!r}: the generator needs an int latent_dim and a sample(n, device=, "
                          "generator=) method (subclass trainer.Generator).")
    return gen, disc


def build_generator(cfg: TrainConfig, shape: tuple[int, int, int]) -> Generator:
    return build_models(cfg, shape)[0]  # type: ignore[return-value]


def build_discriminator(cfg: TrainConfig, shape: tuple[int, int, int]) -> nn.Module:
    return build_models(cfg, shape)[1]


def check_models(cfg: TrainConfig, shape: tuple[int, int, int]) -> None:
    """Build the models (and the loss) of ``cfg`` once on the CPU and check the shapes they return.

    Run before a study is created, so that a plug-in that returns the wrong shape fails at once.
    """
    from trainer.losses import build_loss

    gen, disc = build_models(cfg, shape)
    with torch.no_grad():
        images = gen.eval()(torch.zeros(2, gen.latent_dim))
        if tuple(images.shape) != (2, *shape):
            raise ConfigError(f"arch={cfg.arch!r}: the generator must return images of shape (B, {', '.join(map(str, shape))}), "
                              f"but returned {tuple(images.shape)}.")
        logits = disc.eval()(images, torch.zeros(2, dtype=torch.long)) if cfg.classes else disc.eval()(images)
        if tuple(logits.shape) != (2,):
            raise ConfigError(f"arch={cfg.arch!r}: the discriminator must return one logit per image, shape (B,), "
                              f"but returned {tuple(logits.shape)}.")
    try:
        build_loss(cfg)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"loss={cfg.loss!r} failed to build: {type(exc).__name__}: {exc}") from None
