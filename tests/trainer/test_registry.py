"""Registries check what they receive; built-ins and plug-ins resolve through the same door."""

from __future__ import annotations

import pytest
import torch

from trainer import ARCHS, LOSSES, ConfigError, GANLoss, TrainConfig
from trainer.registry import Registry, import_object


def test_registry_refuses_duplicates_bad_names_and_objects_outside_the_contract() -> None:
    registry: Registry[type] = Registry("loss", lambda obj: isinstance(obj, type), "trainer.losses")

    @registry.register("mine")
    class Mine:
        pass

    with pytest.raises(ValueError, match="'mine' is already registered"):
        registry.register("mine")(Mine)
    with pytest.raises(ValueError, match="without ':'"):
        registry.register("a:b")
    with pytest.raises(TypeError, match="does not fit the loss contract"):
        registry.register("other")(42)  # type: ignore[arg-type]
    assert registry.get("mine") is Mine


def test_builtins_are_registered_and_validation_reads_the_registry() -> None:
    assert {"mlp", "dcgan"} <= set(ARCHS.names()) and {"bce", "hinge", "wgan-gp", "lsgan"} <= set(LOSSES.names())
    with pytest.raises(ConfigError, match="arch must be one of .*dcgan.* or 'package.module:attribute'"):
        TrainConfig(arch="resnet")


def test_import_paths_resolve_and_fail_with_one_line_naming_the_key() -> None:
    assert import_object("trainer.losses:GANLoss", "loss") is GANLoss
    with pytest.raises(ConfigError, match="loss='nope_pkg.x:Y': module 'nope_pkg' is not installed"):
        import_object("nope_pkg.x:Y", "loss")
    with pytest.raises(ConfigError, match="has no attribute 'Nope'"):
        import_object("trainer.losses:Nope", "loss")
    with pytest.raises(ConfigError, match="does not fit the loss contract"):
        LOSSES.get("trainer.losses:d_bce")


def test_a_plugin_loss_object_sees_real_and_fake_logits() -> None:
    from trainer.losses import build_loss

    loss = build_loss(TrainConfig(loss="examples.resnet_gan.losses:RelativisticLoss"))
    real, fake = torch.tensor([2.0, 3.0]), torch.tensor([-1.0, 0.0])
    d = loss.d_loss(real, fake)
    assert d.shape == () and float(d) < float(loss.d_loss(fake, real))  # real above fake is the better D state
    assert loss.penalty(torch.nn.Identity(), real, fake, None) is None


def test_builtin_names_are_read_without_importing_and_match_what_registers() -> None:
    """Validation reads built-in names from their module's source (no torch import); the import registers the same."""
    from search.registries import PRUNERS, SAMPLERS, WARM_STARTS
    from trainer.registry import DATASETS

    for registry in (ARCHS, DATASETS, LOSSES, SAMPLERS, PRUNERS, WARM_STARTS):
        declared = registry.declared()
        assert declared, registry.kind
        for name in sorted(declared):
            registry.get(name)  # imports the built-ins; each declared name is really registered
        assert declared <= set(registry.names())
