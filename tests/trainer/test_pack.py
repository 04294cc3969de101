"""A vectorised pack trains each member as ``train`` trains it alone (CPU, fp32)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from trainer import TrainConfig, load_data, train
from trainer.io import CHECKPOINT_FILE
from trainer.pack import Pack, pack_key, train_pack

# Tolerances: members and single runs do the same float32 arithmetic, but vmap runs the K convolutions as one
# grouped convolution and Adam's per-member scalars are tensors, which changes rounding order (measured: at
# most 2e-7 on weights after 40 steps; 0.0 when the members run in turn). The printed losses are averaged in
# float64 by the pack and in float32 by train (1e-7 relative). 1e-5 leaves room for other CPUs' kernels
# while any real difference (another batch, another noise draw, a wrong Adam term) shows at 1e-2 or more.
LOSS_RTOL, WEIGHT_ATOL = 1e-5, 1e-5

BASE = TrainConfig(dataset="digits", arch="dcgan", g_width=8, d_width=8, latent_dim=8, batch_size=32, device="cpu",
                   budget_images=32 * 30, eval_every_images=32 * 10, eval_metric="none", amp="off",
                   channels_last="off")
MEMBERS = [BASE.replace(seed=0),
           BASE.replace(seed=1, lr_g=1e-3, beta1=0.0, loss="hinge", ema_decay=0.99),
           BASE.replace(seed=2, lr_d=5e-4, beta2=0.9, loss="lsgan", budget_images=32 * 20),
           BASE.replace(seed=3, loss="wgan-gp", lr_d=1e-4)]


@pytest.fixture(scope="module")
def data():  # type: ignore[no-untyped-def]
    return load_data(BASE)


@pytest.fixture(scope="module")
def singles(data):  # type: ignore[no-untyped-def]
    return [train(cfg, data=data) for cfg in MEMBERS]


def _same_run(single, packed) -> None:  # type: ignore[no-untyped-def]
    assert [h["mark"] for h in packed.history] == [h["mark"] for h in single.history]
    for hs, hp in zip(single.history, packed.history, strict=True):
        for key in ("d_loss", "g_loss"):
            assert hp["losses"][key] == pytest.approx(hs["losses"][key], rel=LOSS_RTOL, abs=1e-6)
    ws, wp = single.generator.state_dict(), packed.generator.state_dict()
    assert ws.keys() == wp.keys()
    for k in ws:
        torch.testing.assert_close(wp[k].float(), ws[k].float(), atol=WEIGHT_ATOL, rtol=0)
    assert packed.steps == single.steps and packed.images_seen == single.images_seen


@pytest.mark.slow
@pytest.mark.parametrize("vectorise", ["on", "off"])
def test_each_member_trains_as_it_would_alone(data, singles, vectorise: str) -> None:  # type: ignore[no-untyped-def]
    outcomes = train_pack(MEMBERS, data, vectorise=vectorise)
    for single, outcome in zip(singles, outcomes, strict=True):
        assert outcome.error is None and outcome.result is not None
        _same_run(single, outcome.result)


def test_the_dcgan_vectorises_and_spectral_norm_falls_back(data) -> None:  # type: ignore[no-untyped-def]
    for cfg, expected in ((BASE, True),
                          (BASE.replace(spectral_norm=True), False)):
        pack = Pack(data, "cpu", vectorise="on")
        pack.add(cfg)
        pack.add(cfg.replace(seed=5))
        assert pack.decide() is expected
    auto = Pack(data, "cpu")  # auto: vmap only where measured faster; with one member, nothing to vectorise
    auto.add(BASE)
    assert auto.decide() is False


@pytest.mark.slow
def test_spectral_norm_members_run_in_turn_and_match(data) -> None:  # type: ignore[no-untyped-def]
    cfgs = [BASE.replace(spectral_norm=True, seed=s, budget_images=32 * 10) for s in (0, 1)]
    for cfg, outcome in zip(cfgs, train_pack(cfgs, data), strict=True):
        assert outcome.result is not None
        _same_run(train(cfg, data=data), outcome.result)


@pytest.mark.slow
def test_a_pruned_member_leaves_without_disturbing_the_others(data, singles) -> None:  # type: ignore[no-untyped-def]
    class Pruned(Exception):
        pass

    def prune_at_first_evaluation(event) -> None:  # type: ignore[no-untyped-def]
        raise Pruned(f"pruned at {event.mark}")

    callbacks = [None, prune_at_first_evaluation, None, None]
    outcomes = train_pack(MEMBERS, data, callbacks=callbacks, vectorise="on")  # type: ignore[arg-type]
    assert isinstance(outcomes[1].error, Pruned) and outcomes[1].result is None
    for i in (0, 2, 3):
        assert outcomes[i].result is not None
        _same_run(singles[i], outcomes[i].result)


@pytest.mark.slow
def test_a_new_member_takes_a_freed_slot_mid_run(data, singles) -> None:  # type: ignore[no-untyped-def]
    pack = Pack(data, "cpu", vectorise="on")
    first = pack.add(MEMBERS[2])  # the shortest budget: leaves after 20 steps
    other = pack.add(MEMBERS[0])
    results = {}
    while len(pack):
        for outcome in pack.step():
            results[outcome.id] = outcome.result
            if outcome.id == first:
                late = pack.add(MEMBERS[1])  # joins at step 20 of member 0, from its own step 0
    _same_run(singles[2], results[first])
    _same_run(singles[0], results[other])
    _same_run(singles[1], results[late])


@pytest.mark.slow
def test_checkpoints_resume_alone_or_in_a_pack(data, singles, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A member's checkpoint is train()'s: a killed pack's members resume alone, and a single run resumes in a pack."""
    stop_after_first = [tmp_path / f"m{i}" for i in range(2)]

    class Killed(Exception):
        pass

    def kill(event) -> None:  # type: ignore[no-untyped-def]
        raise Killed  # as if the worker died right after the first checkpoint

    train_pack(MEMBERS[:2], data, callbacks=[kill, kill], out_dirs=stop_after_first)  # type: ignore[arg-type]
    for i, folder in enumerate(stop_after_first):
        assert (folder / CHECKPOINT_FILE).is_file()
        _same_run(singles[i], train(MEMBERS[i], data=data, resume_from=folder / CHECKPOINT_FILE))

    pack = Pack(data, "cpu")
    ids = [pack.add(MEMBERS[i], resume_from=stop_after_first[i] / CHECKPOINT_FILE) for i in range(2)]
    by_id = {o.id: o.result for o in pack.run()}
    for i, member in enumerate(ids):
        _same_run(singles[i], by_id[member])


def test_members_must_share_the_networks(data) -> None:  # type: ignore[no-untyped-def]
    pack = Pack(data, "cpu")
    pack.add(BASE)
    assert pack_key(BASE.replace(lr_g=1e-3, seed=9, loss="hinge")) == pack_key(BASE)
    with pytest.raises(ValueError, match="same networks"):
        pack.add(BASE.replace(batch_size=64))


@pytest.mark.slow
@pytest.mark.parametrize("vectorise", ["on", "off"])
def test_a_member_with_a_schedule_and_channels_last_matches_its_single_run(data, vectorise: str) -> None:  # type: ignore[no-untyped-def]
    """Packs run the same step as train(): schedules (rates, betas, R1 weight) move per member at the same image
    counts, and channels_last (applied where members run in turn) leaves the arithmetic as a single run's."""
    scheduled = BASE.replace(channels_last="on", r1_weight=1.0, schedules={
        "lr_g": [[0, BASE.lr_g], [32 * 12, 1e-3]], "beta1": [[0, BASE.beta1], [32 * 20, 0.0]],
        "r1_weight": [[0, 1.0], [32 * 9, 0.0]]})
    others = [scheduled.replace(seed=7, schedules={"lr_d": [[0, BASE.lr_d], [32 * 15, 5e-5]]}, loss="hinge")]
    outcomes = train_pack([scheduled, *others], data, vectorise=vectorise)
    for cfg, outcome in zip([scheduled, *others], outcomes, strict=True):
        assert outcome.result is not None, outcome.error
        single = train(cfg, data=data)
        assert single.precision == "fp32+channels_last"
        _same_run(single, outcome.result)
    assert outcomes[0].result is not None
    assert outcomes[0].result.precision == ("fp32" if vectorise == "on" else "fp32+channels_last")


def test_a_scheduled_n_critic_is_refused_with_its_reason(data) -> None:  # type: ignore[no-untyped-def]
    cfg = BASE.replace(schedules={"n_critic": [[0, BASE.n_critic], [320, 2]]})
    assert "n_critic" in (Pack.refuses(cfg) or "")
    assert Pack.refuses(BASE.replace(schedules={"lr_g": [[0, BASE.lr_g], [320, 2e-4]]})) is None
    # the article MLP's discriminator uses dropout (torch's global generator, shared by members): it trains alone
    assert "dropout" in (Pack.refuses(BASE.replace(arch="mlp", g_width=4, d_width=4), data.shape) or "")
    assert Pack.refuses(BASE, data.shape) is None
    with pytest.raises(ValueError, match="cannot join a pack: a scheduled n_critic trains alone"):
        Pack(data, "cpu").add(cfg)


@pytest.mark.slow
@pytest.mark.parametrize("vectorise", ["on", "off"])
def test_members_with_a_normalised_discriminator_match_their_single_runs(data, vectorise: str) -> None:  # type: ignore[no-untyped-def]
    """d_norm (batch as pytorch/examples' DCGAN, or layer), the minibatch-std channel and a packing D in a pack:
    each member trains as it would alone."""
    members = [BASE.replace(d_norm="batch"), BASE.replace(d_norm="batch", seed=5, lr_d=5e-4)]
    layered = [BASE.replace(d_norm="layer", r1_weight=1.0)]
    spread = [BASE.replace(d_mbstd=True, r1_weight=1.0), BASE.replace(d_mbstd=True, seed=3)]
    packing = [BASE.replace(d_pack=2, r1_weight=1.0), BASE.replace(d_pack=2, seed=3)]  # PacGAN's D
    for group in (members, layered, spread, packing):
        outcomes = train_pack(group, data, vectorise=vectorise)
        for cfg, outcome in zip(group, outcomes, strict=True):
            assert outcome.result is not None, outcome.error
            _same_run(train(cfg, data=data), outcome.result)
