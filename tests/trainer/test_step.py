"""The evaluation noise stream (``fixed_sampler``): what every FID, precision/recall and class share is counted on."""

from __future__ import annotations

import pytest
import torch

from trainer import TrainConfig, build_generator, load_data, train
from trainer.metrics import sampled
from trainer.noise import NOISE_BLOCK, SampleFn, fixed_sampler
from trainer.pack import train_pack

CFG = TrainConfig(dataset="digits", arch="dcgan", g_width=8, d_width=8, latent_dim=8, batch_size=32, device="cpu",
                  budget_images=64, eval_every_images=64, eval_metric="none", amp="off", channels_last="off")


def distinct(images: torch.Tensor) -> int:
    return len(torch.unique(images.flatten(1), dim=0))


def test_a_streamed_count_is_that_many_distinct_images_whatever_the_chunks() -> None:
    gen = build_generator(CFG, (1, 8, 8)).train()
    sample = fixed_sampler(gen, seed=5)
    n = 2 * NOISE_BLOCK + 300
    state = torch.get_rng_state()
    whole = sample(n)
    streamed = torch.cat(list(sampled(sample, n, size=500)))  # the chunks an evaluation asks for
    assert distinct(streamed) == n  # not one chunk over and over (the bug: 500 images scored 4 or 20 times)
    # the same latents; the network sees other batch sizes, which some CPU kernels round differently
    torch.testing.assert_close(streamed, whole, rtol=0, atol=1e-6)
    torch.testing.assert_close(sample(100, 250), whole[250:350], rtol=0, atol=1e-6)  # across a block boundary
    torch.testing.assert_close(sample(n), whole, rtol=0, atol=0)  # every evaluation scores the same latents
    assert not torch.equal(fixed_sampler(gen, seed=6)(10), whole[:10])
    assert torch.equal(torch.get_rng_state(), state) and gen.training  # no training stream touched, mode restored
    with pytest.raises(ValueError, match="start >= 0"):
        sample(4, -1)


def scorer(seen: list[int], n: int):  # type: ignore[no-untyped-def]
    """An evaluator that records how many distinct images it was given out of ``n``."""

    def evaluate(sample: SampleFn) -> dict[str, float]:
        seen.append(distinct(torch.cat(list(sampled(sample, n)))))
        return {}

    return evaluate


def test_training_and_packs_evaluate_distinct_images() -> None:
    data = load_data(CFG)
    alone: list[int] = []
    train(CFG.replace(ema_decay=0.9), data=data, evaluator=scorer(alone, 1200))
    packed: list[int] = []
    train_pack([CFG.replace(seed=1), CFG.replace(seed=2, ema_decay=0.9)], data, evaluator=scorer(packed, 1200),
               vectorise="off")
    assert alone == [1200] and packed == [1200, 1200]


@pytest.mark.parametrize("policy", ["cutout", "translation", "color"])
def test_the_discriminator_sees_augmented_fakes_in_both_steps(policy: str) -> None:
    """DiffAugment augments the fakes D judges in its own step and in G's step (Zhao et al. 2020: augmenting reals
    alone lets G learn the augmentations): the images D receives are never the generator's own output, while
    with augmentation off they are the very tensors G made (so the test sees the difference)."""
    from trainer import load_data
    from trainer.step import RunState, SingleNets, gan_step

    data = load_data(TrainConfig())
    seen: dict[str, list[torch.Tensor]] = {}
    for augment in (policy, ""):
        cfg = TrainConfig(augment=augment, batch_size=16, g_width=8, d_width=8, latent_dim=8)
        nets = SingleNets(cfg, data.shape, torch.device("cpu"))
        made: list[torch.Tensor] = []
        judged: list[torch.Tensor] = []
        nets.g.register_forward_hook(lambda m, i, out, made=made: made.append(out.detach().clone()))
        nets.d.register_forward_pre_hook(lambda m, args, judged=judged: judged.append(args[0].detach().clone()))
        gan_step(nets, [RunState(cfg, torch.Generator().manual_seed(0))], data.train, amp=False)
        assert len(made) == 2 and len(judged) == 3  # D step: G's fakes, D on reals and fakes; G step: G, D
        seen[augment or "off"] = [judged[1], made[0], judged[2], made[1]]
    d_fake, d_made, g_fake, g_made = seen[policy]
    assert not torch.equal(d_fake, d_made), "the D step judged un-augmented fakes"
    assert not torch.equal(g_fake, g_made), "the G step judged un-augmented fakes"
    off = seen["off"]
    assert torch.equal(off[0], off[1]) and torch.equal(off[2], off[3])
