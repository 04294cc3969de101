from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from trainer import ConfigError, ImageData, TrainConfig, build_generator, load_data, train
from trainer.metrics import (
    InceptionFeatures,
    domain_net,
    features,
    frechet_distance,
    kernel_distance,
    make_evaluator,
    real_features,
    sampled,
    statistics,
    train_domain_net,
)
from trainer.noise import fixed_sampler


@pytest.fixture(scope="module")
def mnist(mnist_dir: Path) -> ImageData:
    return load_data(TrainConfig(dataset="idx", data_root=str(mnist_dir)))


@pytest.fixture(scope="module")
def digits() -> ImageData:
    return load_data(TrainConfig())


@pytest.mark.slow
def test_domain_network_accuracy_thresholds(mnist: ImageData, digits: ImageData) -> None:
    _, acc_mnist = domain_net(mnist)
    _, acc_digits = domain_net(digits)
    assert acc_mnist >= 0.97
    assert acc_digits >= 0.95


def test_domain_network_is_cached_and_deterministic(digits: ImageData) -> None:
    first, acc = domain_net(digits)
    again, acc_again = domain_net(digits)  # from the cache file
    assert acc == acc_again
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values(), strict=True))


@pytest.mark.slow
def test_a_photometric_domain_network_weighs_brightness_less_against_missing_classes(digits: ImageData) -> None:
    x, y = digits.train[:1200], digits.train_labels[:1200]
    reference, others, labels = x[:600], x[600:], y[600:]
    brighter, half = (others + 0.25).clamp(-1.0, 1.0), others[labels < 5]

    def brightness_against_coverage(net: torch.nn.Module) -> float:
        ref = statistics(features(net, iter([reference])))
        fid = [frechet_distance(ref, statistics(features(net, iter([images])))) for images in (brighter, half)]
        return fid[0] / fid[1]

    plain, _ = domain_net(digits)  # the service's (cached)
    jittered, accuracy = train_domain_net(digits, photometric=True)
    assert accuracy >= 0.9
    assert brightness_against_coverage(jittered) < brightness_against_coverage(plain) / 3


@pytest.mark.slow
def test_real_halves_score_far_lower_than_an_untrained_generator(mnist: ImageData) -> None:
    net, _ = domain_net(mnist)
    half_a, half_b = mnist.holdout[:1000], mnist.holdout[1000:2000]
    fa, fb = features(net, iter([half_a])), features(net, iter([half_b]))
    gen = build_generator(TrainConfig(), mnist.shape).eval()
    fg = features(net, sampled(fixed_sampler(gen, 0), 1000))
    real_fid, fake_fid = frechet_distance(statistics(fa), statistics(fb)), frechet_distance(statistics(fa), statistics(fg))
    assert real_fid * 20 < fake_fid, (real_fid, fake_fid)
    assert kernel_distance(fa, fb) * 20 < kernel_distance(fa, fg)


@pytest.mark.slow
def test_longer_training_scores_better(digits: ImageData) -> None:
    cfg = TrainConfig(arch="dcgan", g_width=16, d_width=16, latent_dim=16, batch_size=64, ema_decay=0.99,
                      budget_images=24_000, eval_every_images=3_000, eval_samples=500)
    evaluator = make_evaluator(cfg, digits)
    result = train(cfg, data=digits, evaluator=evaluator)
    fids = [h["metrics"]["fid"] for h in result.history]
    assert fids[-1] < 0.5 * fids[0], fids


@pytest.mark.slow
def test_kid_metric_and_real_statistics_cache(digits: ImageData, tmp_path: Path) -> None:
    cfg = TrainConfig(eval_metric="kid", eval_samples=200)
    evaluator = make_evaluator(cfg, digits, cache=tmp_path)
    assert evaluator is not None
    assert list(tmp_path.glob("real-*-holdout-domain-*-200.safetensors"))
    gen = build_generator(cfg, digits.shape).eval()
    assert evaluator(gen.sample)["kid"] > kernel_distance(evaluator.real_feats[:100], evaluator.real_feats[100:])
    cached = real_features(evaluator.net, evaluator.net_key, digits, 200, cache=tmp_path)
    assert torch.equal(cached, evaluator.real_feats)


def test_too_few_samples_for_the_feature_dimension(digits: ImageData) -> None:
    with pytest.raises(ConfigError, match="eval_samples must be > the feature dimension 128"):
        make_evaluator(TrainConfig(eval_samples=100), digits)


@pytest.mark.slow
def test_inception_loads_a_weights_file(tmp_path: Path) -> None:
    from torchvision.models import inception_v3

    torch.manual_seed(0)  # the FID Inception layout (1008 classes, no aux head), random values
    layout = inception_v3(weights=None, aux_logits=False, init_weights=False, num_classes=1008).state_dict()
    torch.save(layout, tmp_path / "w.pth")
    net = InceptionFeatures(str(tmp_path / "w.pth"))
    feats = features(net, iter([torch.rand(2, 1, 28, 28) * 2 - 1]))
    assert feats.shape == (2, 2048) and bool(torch.isfinite(feats).all())
    with pytest.raises(ConfigError, match="feature_weights"):
        InceptionFeatures(str(tmp_path / "missing.pth"))
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    with pytest.raises(ConfigError, match="does not have the Inception-v3 FID layout"):
        InceptionFeatures(str(tmp_path / "other.pth"))


@pytest.mark.slow
def test_cli_evaluate_scores_a_trained_folder(digits: ImageData, tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from search.cli import app

    cfg = TrainConfig(g_width=8, d_width=8, latent_dim=8, budget_images=640, eval_every_images=640,
                      eval_metric="none", eval_samples=300)
    train(cfg, data=digits, out_dir=tmp_path)
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(scores) == {"fid", "kid"} and scores["fid"] > 0
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path), "--samples", "50"])
    assert result.exit_code == 2 and "eval_samples must be > the feature dimension" in result.output


def test_class_shares_measure_mode_coverage(digits: ImageData, tmp_path: Path) -> None:
    """A generator that outputs real images of one class covers one class; the held-out images cover all ten."""
    from trainer.metrics import class_shares, domain_net, features, sampled

    net, _ = domain_net(digits)
    ones = digits.holdout[digits.holdout_labels == 1]
    one_class = class_shares(net, features(net, sampled(lambda n, start=0: ones[(start + torch.arange(n)) % len(ones)], 300)))
    assert one_class[1] > 0.9 and sum(one_class) == pytest.approx(1.0, abs=1e-3)
    everything = class_shares(net, features(net, sampled(lambda n, start=0: digits.holdout[start:start + n], 300)))
    assert min(everything) > 0.03 and max(everything) < 0.2

    cfg = TrainConfig(g_width=8, d_width=8, latent_dim=8, budget_images=640, eval_every_images=640,
                      eval_metric="none", eval_samples=300)
    train(cfg, data=digits, out_dir=tmp_path)
    from trainer import evaluate

    scores = evaluate(tmp_path, metrics=("classes", "coverage"))
    assert len(scores["class_shares"]) == 10 and scores["class_share_min"] <= 0.1 <= scores["class_share_max"]
    assert {"precision", "recall", "density", "coverage"} <= set(scores)


def test_manifold_metrics_on_known_cases() -> None:
    """A set against itself: precision, recall and coverage 1, density about 1; disjoint sets: all 0; a set that
    covers one of two real modes: recall and coverage one half, precision 1."""
    from trainer.metrics import manifold_metrics

    g = torch.Generator().manual_seed(0)
    real = torch.randn(400, 8, generator=g, dtype=torch.float64)
    same = manifold_metrics(real, real)
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0
    assert 0.8 < same["density"] < 1.2
    far = manifold_metrics(real, real + 100.0)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}
    two_modes = torch.cat([real[:200], real[200:] + 50.0])
    one_mode = manifold_metrics(two_modes, real[:200])  # a generator that drops one of two modes
    assert one_mode["precision"] == 1.0 and one_mode["coverage"] == 0.5 and one_mode["recall"] == 0.5


def test_class_share_metrics_see_a_removed_class(digits: ImageData) -> None:
    """Held-out digits with the sevens removed: the evaluator's class share of 7 is 0 and the smallest share 0;
    with every digit the smallest share is near the real split's and the entropy near 1."""
    from trainer.metrics import CLASS_SHARE, make_evaluator

    cfg = TrainConfig(eval_samples=300)
    evaluator = make_evaluator(cfg, digits)
    assert evaluator is not None
    real = digits.holdout[:300]
    every = evaluator(lambda n, start=0: real[start:start + n])
    assert every["class_entropy"] > 0.97 and every["class_min_share"] > 0.05
    assert every["precision"] > 0.9 and every["coverage"] > 0.9
    no_sevens = digits.holdout[digits.holdout_labels != 7]
    missing = evaluator(lambda n, start=0: no_sevens[(start + torch.arange(n)) % len(no_sevens)])
    assert missing[f"{CLASS_SHARE}7"] == 0.0 and missing["class_min_share"] == 0.0
    assert missing["class_entropy"] < every["class_entropy"]
    assert missing["recall"] < every["recall"] or missing["coverage"] < every["coverage"]


def test_class_shares_count_share_samples_and_the_rest_scores_eval_samples(digits: ImageData) -> None:
    """share_samples > eval_samples: the class shares count every generated image, FID and precision/recall
    only the first eval_samples (a sampler of 200 sevens, then 600 other digits, shows which saw what)."""
    from trainer.metrics import CLASS_SHARE

    sevens = digits.holdout[digits.holdout_labels == 7]
    others = digits.holdout[digits.holdout_labels != 7]
    stream = torch.cat([sevens[torch.arange(200) % len(sevens)], others[torch.arange(600) % len(others)]])
    drawn: list[int] = []

    def sample(n: int, start: int = 0) -> torch.Tensor:
        drawn.append(n)
        return stream[start:start + n]

    plain = make_evaluator(TrainConfig(eval_samples=200), digits)
    wide = make_evaluator(TrainConfig(eval_samples=200, share_samples=800), digits)
    assert plain is not None and wide is not None
    only_sevens = plain(sample)
    drawn.clear()
    mixed = wide(sample)
    assert sum(drawn) == 800
    assert only_sevens[f"{CLASS_SHARE}7"] > 0.9 and mixed[f"{CLASS_SHARE}7"] < 0.4  # shares saw all 800
    assert mixed["fid"] == pytest.approx(only_sevens["fid"]) and mixed["recall"] == only_sevens["recall"]
    with pytest.raises(ConfigError, match="share_samples must be 0 .eval_samples. or >= eval_samples=100"):
        TrainConfig(eval_samples=100, share_samples=50)


@pytest.mark.slow
def test_modes_and_mode_kl_on_known_cases(mnist_dir: Path) -> None:
    """Stacked MNIST's mode count under the per-channel digit classifier: real stacked images cover ~all 1000 modes
    with a small KL; a generator repeating one image covers 1; one with a fixed first channel covers at most 100."""
    cfg = TrainConfig(dataset="stacked-mnist", data_root=str(mnist_dir), eval_samples=2000)
    data = load_data(cfg)
    evaluator = make_evaluator(cfg, data)
    assert evaluator is not None and evaluator.prior is not None and abs(float(evaluator.prior.sum()) - 1) < 1e-9
    assert evaluator.share_samples == 26000  # by default 26 samples a mode, the papers' count
    real = data.holdout  # 10000 held-out stacked images

    def stream(images: torch.Tensor) -> Callable[[int, int], torch.Tensor]:
        return lambda n, start=0: images[(start + torch.arange(n)) % len(images)]  # round and round

    every = evaluator(stream(real))
    assert every["modes"] >= 990 and every["mode_kl"] < 0.1, every
    assert every["mode_samples"] == 26000 and every["mode_classifier_accuracy"] >= 0.95
    one = evaluator(stream(real[:1].expand(len(real), -1, -1, -1)))
    assert one["modes"] == 1 and one["mode_kl"] > 5  # log(1 / p(that triple)) ~ log(1000)
    fixed = real.clone()
    fixed[:, 0] = real[0, 0]  # the red digit is always the same image
    hundred = evaluator(stream(fixed))
    assert 90 <= hundred["modes"] <= 100 and hundred["mode_kl"] > 2  # ~log(10): one tenth of the modes, evenly
    assert "class_min_share" not in every  # 1000 "classes" are modes here, not class shares


def _channels(n: int, labels: str) -> Callable[[TrainConfig], tuple[torch.Tensor, ...]]:
    """A plug-in dataset of 2-channel 8x8 images, each channel one of 2 classes (4 modes): learnable (each class a
    bright or a dark channel) or random (labels that no classifier can read)."""

    def load(cfg: TrainConfig) -> tuple[torch.Tensor, ...]:
        g = torch.Generator().manual_seed(0)
        y = torch.randint(0, 4, (n,), generator=g)
        bits = torch.stack([y // 2, y % 2], 1).float()
        x = (bits[:, :, None, None].expand(n, 2, 8, 8) * 1.6 - 0.8 + 0.05 * torch.randn(n, 2, 8, 8, generator=g)).clamp(-1, 1)
        if labels == "random":
            y = torch.randint(0, 4, (n,), generator=g)
        return x[: n // 2], y[: n // 2], x[n // 2:], y[n // 2:], {"channel_classes": 2}  # type: ignore[return-value]

    return load


def test_modes_need_26_samples_a_mode_and_a_classifier_that_reads_the_channels(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Too few samples for the modes is a one-line ConfigError naming share_samples (0 picks 26 a mode); the
    classifier's held-out accuracy is stored with the mode metrics, and one below the floor is refused."""
    import sys
    import types

    from trainer.metrics import MODE_CLASSIFIER_FLOOR, mode_samples

    module = types.ModuleType("gs_test_channels")
    module.clean = _channels(800, "clean")  # type: ignore[attr-defined]
    module.noise = _channels(800, "random")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "gs_test_channels", module)
    monkeypatch.setenv("GAN_SEARCH_CACHE", str(tmp_path))
    cfg = TrainConfig(dataset="gs_test_channels:clean", eval_samples=50, eval_metric="kid", image_size=8)
    data = load_data(cfg)
    assert mode_samples(cfg, data) == 104  # 26 x 4 modes
    with pytest.raises(ConfigError, match=r"share_samples must be 0 \(then 104\) or >= 104 for the 4 modes"):
        make_evaluator(cfg.replace(share_samples=100), data)
    evaluator = make_evaluator(cfg, data)
    assert evaluator is not None and evaluator.share_samples == 104
    gen = build_generator(cfg, data.shape)
    out = evaluator(fixed_sampler(gen, seed=0, latent_dim=cfg.latent_dim))
    assert out["mode_samples"] == 104 and MODE_CLASSIFIER_FLOOR <= out["mode_classifier_accuracy"] <= 1
    noisy = cfg.replace(dataset="gs_test_channels:noise")
    with pytest.raises(ConfigError, match="per-channel classifier .* below the floor 0.95"):
        make_evaluator(noisy, load_data(noisy))
