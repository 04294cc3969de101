from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from search.cli import app
from trainer import ConfigError, TrainConfig


def test_defaults_are_valid_and_round_trip_through_yaml(tmp_path: Path) -> None:
    cfg = TrainConfig(lr_g=1e-3, arch="mlp")
    cfg.save(tmp_path / "c.yaml")
    assert TrainConfig.from_file(tmp_path / "c.yaml") == cfg
    cfg.save(tmp_path / "c.json")
    assert TrainConfig.from_file(tmp_path / "c.json") == cfg


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"lr_gg": 1e-3}, "unknown key 'lr_gg'"),
        ({"lr_g": 0}, "lr_g must be > 0, but got lr_g=0"),
        ({"lr_g": "fast"}, "lr_g must be a float"),
        ({"batch_size": 1.5}, "batch_size must be a int"),
        ({"loss": "wasserstein"}, "loss must be one of bce, "),
        ({"beta1": 1.0}, "beta1 must be in [0, 1)"),
        ({"arch": "dcgan", "image_size": 20}, "image_size must be one of (8, 16, 28, 32, 64)"),
        ({"spectral_norm": "yes"}, "spectral_norm must be a bool"),
        ({"dataset": "folder"}, "data_root is required"),
        ({"d_norm": "instance"}, "d_norm must be one of"),
        ({"arch": "mlp", "d_norm": "batch"}, "d_norm must be 'none' for arch='mlp'"),
        ({"d_norm": "batch", "r1_weight": 1.0}, "d_norm='batch' mixes a batch's samples"),
        ({"d_norm": "batch", "loss": "wgan-gp"}, "use d_norm='layer' or 'none'"),
    ],
)
def test_bad_values_name_the_key_and_what_is_allowed(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_dict(data)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_overrides_are_parsed_as_yaml_scalars(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("arch: mlp\nlr_g: 1e-3\n")
    cfg = TrainConfig.from_file(tmp_path / "c.yaml", ["batch_size=32", "spectral_norm=true", "loss=hinge"])
    assert (cfg.arch, cfg.lr_g, cfg.batch_size, cfg.spectral_norm, cfg.loss) == ("mlp", 1e-3, 32, True, "hinge")


def test_cli_train_rejects_bad_config_with_exit_2_and_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("arch: transformer\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["train", "--config", str(tmp_path / "c.yaml"), "--out", str(out)])
    assert result.exit_code == 2
    assert "arch must be one of " in result.output and "'package.module:attribute'" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists()
    result = CliRunner().invoke(app, ["train", "--config", str(tmp_path / "c.yaml"), "--out", str(out),
                                      "--set", "arch=mlp", "--set", "n_critic=0"])
    assert result.exit_code == 2 and "n_critic must be > 0" in result.output
    assert not out.exists()


@pytest.mark.slow
def test_shipped_article_config_trains(tmp_path: Path, mnist_dir: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    result = CliRunner().invoke(app, ["train", "--config", str(root / "configs" / "article-mlp.yaml"), "--out",
                                      str(tmp_path), "--data-root", str(mnist_dir),
                                      "--set", "budget_images=512", "--set", "eval_metric=none"])
    assert result.exit_code == 0, result.output
    cfg = TrainConfig.from_file(tmp_path / "config.yaml")
    assert (cfg.arch, cfg.loss, cfg.lr_g, cfg.lr_d, cfg.batch_size) == ("mlp", "bce", 2e-4, 2e-4, 256)


@pytest.mark.parametrize(("text", "expected"), [("off", "off"), ("on", "on"), ("false", "off"), ("yes", "on"),
                                                ("auto", "auto"), ('"off"', "off")])
def test_switches_take_on_and_off_however_yaml_reads_them(tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "c.yaml").write_text(f"amp: {text}\nchannels_last: {text}\n")
    cfg = TrainConfig.from_file(tmp_path / "c.yaml")
    assert (cfg.amp, cfg.channels_last) == (expected, expected)
    cfg = TrainConfig.from_file(tmp_path / "c.yaml", [f"amp={text}", f"channels_last={text}"])  # --set
    assert (cfg.amp, cfg.channels_last) == (expected, expected)
    assert TrainConfig(amp=False).amp == "off" and TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="amp must be one of 'auto', 'on', 'off', but got amp='fast'"):
        TrainConfig(amp="fast")  # type: ignore[arg-type]
