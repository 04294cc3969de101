"""The ``pytorch-dcgan`` preset through ``gan-search train`` against a plain pytorch/examples DCGAN loop.

    python -m benchmarks.quality.dcgan_parity --data-root ../shared/data/mnist --images 96000 --seeds 0 1

Both train on the same training split (MNIST here, [-1, 1]) with the preset's hyperparameters (BCE, Adam 2e-4,
beta1 0.5, batch 64) for the same number of images and seeds, and are scored by the same evaluator (FID of
the domain classifier's features, ``eval_samples`` held-out images, plus recall/coverage and the smallest
class share). The plain loop is pytorch/examples' dcgan/main.py written out for 28-pixel images: its
networks (ConvTranspose generator, strided-conv discriminator with batch norm after every conv but the first,
Sigmoid + BCELoss), its ``weights_init`` (N(0, 0.02) convolutions, N(1, 0.02) batch-norm scales) and its
three-pass step (D on real, D on the detached fake, G on the same fake). Printed: FID per seed, side by side.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
from torch import nn

from benchmarks._common import parser as bench_parser
from benchmarks._common import write_result
from search.spec.presets import WARM_STARTS
from trainer import TrainConfig, load_data, make_evaluator, train
from trainer.noise import fixed_sampler


class ExamplesGenerator(nn.Module):
    """pytorch/examples' netG for 28x28: latent -> 7x7 -> 14x14 -> 28x28."""

    def __init__(self, nz: int, ngf: int, nc: int) -> None:
        super().__init__()
        self.nz = nz
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 2, 7, 1, 0, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),  # 7x7
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),      # 14x14
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh())                                    # 28x28

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z.view(-1, self.nz, 1, 1))


class ExamplesDiscriminator(nn.Module):
    """pytorch/examples' netD for 28x28: batch norm after every conv but the first, Sigmoid output."""

    def __init__(self, ndf: int, nc: int) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),                        # 14x14
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, True),  # 7x7
            nn.Conv2d(ndf * 2, 1, 7, 1, 0, bias=False), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x).view(-1)


def weights_init(m: nn.Module) -> None:  # pytorch/examples dcgan/main.py
    name = m.__class__.__name__
    if name.find("Conv") != -1:
        nn.init.normal_(m.weight.data, 0.0, 0.02)  # type: ignore[arg-type]
    elif name.find("BatchNorm") != -1:
        nn.init.normal_(m.weight.data, 1.0, 0.02)  # type: ignore[arg-type]
        nn.init.constant_(m.bias.data, 0)  # type: ignore[arg-type]


def plain_loop(cfg: TrainConfig, data: Any, evaluator: Any) -> dict[str, Any]:
    """pytorch/examples' training loop, batches drawn with replacement from the same training split."""
    torch.manual_seed(cfg.seed)
    nc = data.shape[0]
    net_g, net_d = ExamplesGenerator(cfg.latent_dim, cfg.g_width, nc), ExamplesDiscriminator(cfg.d_width, nc)
    net_g.apply(weights_init)
    net_d.apply(weights_init)
    criterion = nn.BCELoss()
    opt_d = torch.optim.Adam(net_d.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2))
    opt_g = torch.optim.Adam(net_g.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2))
    gen = torch.Generator().manual_seed(cfg.seed)
    x, b = data.train, cfg.batch_size
    t0 = time.perf_counter()
    for _ in range(cfg.budget_images // b):
        real = x[torch.randint(len(x), (b,), generator=gen)]
        net_d.zero_grad()
        err_real = criterion(net_d(real), torch.ones(b))
        err_real.backward()
        fake = net_g(torch.randn(b, cfg.latent_dim, generator=gen))
        err_fake = criterion(net_d(fake.detach()), torch.zeros(b))
        err_fake.backward()
        opt_d.step()
        net_g.zero_grad()
        err_g = criterion(net_d(fake), torch.ones(b))
        err_g.backward()
        opt_g.step()
    seconds = time.perf_counter() - t0
    net_g.eval()
    sample = fixed_sampler(net_g, cfg.seed + 1, latent_dim=cfg.latent_dim)  # the noise gan-search evaluates on
    return {**evaluator(sample), "seconds": round(seconds, 1)}


def main() -> None:
    parser = bench_parser(__doc__, "dcgan-parity", out="auto")
    parser.add_argument("--data-root", default="../shared/data/mnist")
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--images", type=int, default=96_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--width", type=int, default=32, help="ngf = ndf = g_width = d_width")
    parser.add_argument("--latent", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    preset = dict(WARM_STARTS.get("pytorch-dcgan"))
    base = TrainConfig(dataset=args.dataset, data_root=args.data_root, arch="dcgan", latent_dim=args.latent,
                       g_width=args.width, d_width=args.width, budget_images=args.images, eval_every_images=args.images,
                       eval_samples=2000, amp="off", channels_last="off", device="cpu").replace(**preset)
    data = load_data(base)
    evaluator = make_evaluator(base, data)
    rows: dict[str, list[dict[str, Any]]] = {"gan-search train (pytorch-dcgan preset)": [], "plain pytorch/examples loop": []}
    for seed in args.seeds:
        cfg = base.replace(seed=seed)
        t0 = time.perf_counter()
        result = train(cfg, data=data, evaluator=evaluator)
        rows["gan-search train (pytorch-dcgan preset)"].append({**result.final_metrics,
                                                                "seconds": round(time.perf_counter() - t0, 1)})
        rows["plain pytorch/examples loop"].append(plain_loop(cfg, data, evaluator))
        for name, runs in rows.items():
            r = runs[-1]
            print(f"seed {seed} {name:<42} FID {r['fid']:6.2f}  recall {r['recall']:.3f}  coverage {r['coverage']:.3f}"
                  f"  smallest class {r['class_min_share']:.1%}  {r['seconds']:.0f} s", flush=True)
    print(f"\n{args.dataset}, {args.images:,} images, seeds {args.seeds}, preset {preset}")
    for name, runs in rows.items():
        fids = [r["fid"] for r in runs]
        print(f"{name:<42} FID {', '.join(f'{f:.2f}' for f in fids)}  (mean {statistics.fmean(fids):.2f})")
    write_result(args, {"preset": preset, "rows": rows})


if __name__ == "__main__":
    main()
