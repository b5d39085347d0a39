"""The diffusion extractor (DiffuRec-style): its schedule arithmetic checked by hand, its
K interests, deterministic inference, a short real training, and what it refuses."""

from __future__ import annotations

import math

import pytest
import torch

from mirec.config import load_config
from mirec.core.diffusion import (
    add_noise,
    beta_schedule,
    cumulative_alphas,
    ddim_step,
    sampling_levels,
)
from mirec.data.prepare import prepare
from mirec.errors import ConfigError
from mirec.evaluation.evaluator import evaluate
from mirec.extractors import EXTRACTORS
from mirec.extractors.diffusion import DiffusionExtractor, sinusoidal_table
from mirec.models.build import build_ctr_model, build_model
from mirec.training.trainer import fit

D, K, MAXLEN = 8, 3, 10


def left_padded_mask(lengths: list[int], maxlen: int = MAXLEN) -> torch.Tensor:
    return torch.arange(maxlen).unsqueeze(0) >= maxlen - torch.tensor(lengths).unsqueeze(1)


def extractor(**settings: object) -> DiffusionExtractor:
    torch.manual_seed(0)
    return DiffusionExtractor(D, K, MAXLEN, **settings).eval()  # type: ignore[arg-type]


def test_the_cosine_schedule_by_hand():
    # T = 2, s = 0.008: f(t) = cos((t/2 + s) / (1 + s) * pi/2)^2, abar_t = f(t + 1) / f(0)
    s = 0.008
    f0 = math.cos(s / 1.008 * math.pi / 2) ** 2  # 0.99984...
    f1 = math.cos(0.508 / 1.008 * math.pi / 2) ** 2  # 0.49377...
    betas = beta_schedule("cosine", 2)
    assert betas[0].item() == pytest.approx(1 - f1 / f0, abs=1e-12)
    assert betas[0].item() == pytest.approx(0.50616, abs=1e-5)  # half the signal gone
    # f(1) = cos(pi/2)^2 is 0: beta_1 would be 1, clipped to 0.999
    assert betas[1].item() == pytest.approx(0.999, abs=1e-12)
    abar = cumulative_alphas(betas)
    assert abar[0].item() == pytest.approx(f1 / f0, abs=1e-12)
    assert abar[1].item() == pytest.approx(f1 / f0 * 0.001, abs=1e-12)


def test_the_linear_schedule_by_hand():
    # Ho et al.: 1e-4 .. 0.02 over 1,000 levels
    thousand = beta_schedule("linear", 1000)
    assert thousand[0].item() == pytest.approx(1e-4) and thousand[-1].item() == pytest.approx(0.02)
    # T = 50 scales both ends by 1000 / 50 = 20: 0.002 .. 0.4, evenly spaced
    betas = beta_schedule("linear", 50)
    assert betas[0].item() == pytest.approx(0.002) and betas[-1].item() == pytest.approx(0.4)
    assert betas[1].item() == pytest.approx(0.002 + 0.398 / 49)
    abar = cumulative_alphas(betas)
    assert abar[1].item() == pytest.approx((1 - 0.002) * (1 - 0.002 - 0.398 / 49))
    assert (abar[1:] < abar[:-1]).all() and abar[-1].item() < 1e-4  # ends near pure noise
    with pytest.raises(ValueError, match="unknown noise schedule 'sqrt'"):
        beta_schedule("sqrt", 10)


def test_noising_and_the_ddim_step_by_hand():
    x0, eps = torch.tensor([2.0, -1.0]), torch.tensor([0.5, 1.5])
    abar_t, abar_s = torch.tensor(0.36), torch.tensor(0.64)
    x_t = add_noise(x0, eps, abar_t)
    torch.testing.assert_close(x_t, torch.tensor([0.6 * 2 + 0.8 * 0.5, 0.6 * -1 + 0.8 * 1.5]))
    # with the true x_0 the step recovers eps, so x_s is x_0 noised with the same eps
    x_s = ddim_step(x_t, x0, abar_t, abar_s)
    torch.testing.assert_close(x_s, torch.tensor([0.8 * 2 + 0.6 * 0.5, 0.8 * -1 + 0.6 * 1.5]))
    # stepping to abar = 1 (no noise) lands on the prediction itself
    guess = torch.tensor([1.0, 1.0])
    torch.testing.assert_close(ddim_step(x_t, guess, abar_t, torch.tensor(1.0)), guess)


def test_the_sampler_visits_evenly_spaced_levels():
    assert sampling_levels(32, 4) == [31, 21, 10, 0]
    assert sampling_levels(5, 5) == [4, 3, 2, 1, 0]
    assert sampling_levels(32, 1) == [31]
    with pytest.raises(ValueError, match=r"steps must be in 1\.\.32"):
        sampling_levels(32, 33)


def test_the_step_embedding_is_the_sinusoid():
    table = sinusoidal_table(4, 5)  # half = 2: frequencies 1 and 1/100
    torch.testing.assert_close(table[3, :2], torch.tensor([math.cos(3), math.cos(0.03)]))
    torch.testing.assert_close(table[3, 2:4], torch.tensor([math.sin(3), math.sin(0.03)]))
    assert (table[:, 4] == 0).all()


def test_k_interests_and_their_routing():
    model = extractor()
    history, mask = torch.randn(4, MAXLEN, D), left_padded_mask([10, 6, 1, 3])
    out = model(history, mask)
    assert out.interests.shape == (4, K, D) and model.num_interests == K
    assert out.routing.shape == (4, MAXLEN, K)
    torch.testing.assert_close(out.routing.sum(1), torch.ones(4, K))  # a softmax per interest
    assert out.routing[~mask].abs().sum() == 0  # padding is routed nowhere
    assert model.causal and model.target_conditioned  # with the default causal encoder
    # the K interests start from different noise and queries: they are not one vector
    assert torch.cdist(out.interests, out.interests).sum() > 0


def test_padding_and_the_rest_of_the_batch_never_change_an_interest():
    model = extractor()
    items = torch.randn(2, 4, D)
    padded = torch.cat([torch.randn(2, 3, D) * 10, items], dim=1)
    mask = torch.ones(2, 4, dtype=torch.bool)
    padded_mask = torch.cat([torch.zeros(2, 3, dtype=torch.bool), mask], dim=1)
    short, long = model(items, mask), model(padded, padded_mask)
    torch.testing.assert_close(short.interests, long.interests)
    alone = model(padded[1:], padded_mask[1:])
    torch.testing.assert_close(alone.interests, long.interests[1:])  # same noise for every user


def test_inference_is_deterministic_and_the_noise_comes_from_the_seed():
    model = extractor(seed=3)
    history, mask = torch.randn(3, MAXLEN, D), left_padded_mask([10, 4, 1])
    first, again = model(history, mask), model(history, mask)
    assert torch.equal(first.interests, again.interests)
    # the starting noise is a stored buffer, drawn from the seed alone
    assert "start_noise" in model.state_dict()
    assert torch.equal(model.start_noise, extractor(seed=3).start_noise)
    assert not torch.equal(model.start_noise, extractor(seed=4).start_noise)
    # more steps visit more levels and give other interests from the same weights
    more = extractor(seed=3, steps=8)
    more.load_state_dict(model.state_dict())
    assert not torch.allclose(more(history, mask).interests, first.interests)


def test_an_all_padding_history_is_finite():
    model = extractor().train()
    history, mask = torch.randn(2, MAXLEN, D), left_padded_mask([0, 5])
    out = model(history, mask)
    assert torch.isfinite(out.interests).all() and out.routing[0].abs().sum() == 0
    target = torch.randn(2, D)
    trained = model.denoise_target(history, mask, target)
    (trained.interests * torch.randn_like(trained.interests)).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_training_noise_comes_from_the_generator_and_reaches_every_weight():
    model = extractor()  # eval mode: no dropout, only the diffusion noise is random
    history, mask = torch.randn(3, MAXLEN, D), left_padded_mask([10, 6, 2])
    target = torch.randn(3, D)

    def denoised(seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return model.denoise_target(history, mask, target, generator).interests

    torch.testing.assert_close(denoised(1), denoised(1))
    assert not torch.allclose(denoised(1), denoised(2))
    out = model.train().denoise_target(history, mask, target).interests
    (out * torch.randn_like(out)).sum().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_it_registers_and_the_published_config_lists_it(mirec_main):
    assert EXTRACTORS.lookup("diffusion") is DiffusionExtractor
    config = load_config("diffurec")
    assert (config.extractor, config.diffusion_timesteps, config.diffusion_steps) == (
        "diffusion",
        32,
        4,
    )
    code, out, _ = mirec_main("models")
    assert code == 0 and "diffurec" in out and "DiffuRec" in out


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["diffusion_steps=33"], r"diffusion_steps=33: must be an integer from 1 to 32"),
        (["diffusion_steps=0"], r"diffusion_steps=0: must be an integer >= 1"),
        (["noise_schedule=sqrt"], r"noise_schedule='sqrt': must be one of cosine, linear"),
    ],
)
def test_bad_diffusion_settings_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("diffurec", overrides=overrides)


def test_what_it_cannot_do_is_refused_in_one_line():
    # without the causal encoder there are no prefixes to train at every position
    no_encoder = ["sequence_training=true", "encoder_layers=0"]
    with pytest.raises(ConfigError, match=r"sequence_training .* needs a causal extractor"):
        build_model(load_config("diffurec", overrides=no_encoder), 50, 10)
    data = prepare("synthetic:n_users=200,n_items=50,n_clusters=4")
    ctr = load_config("diffurec", overrides=["task=ctr", "aggregator=max"])
    with pytest.raises(ConfigError, match=r"denoising each next item's embedding.*task=retrieval"):
        build_ctr_model(ctr, data.sequences, data.maxlen)


def test_sequence_training_denoises_every_next_item_from_its_prefix():
    model = extractor()
    history, mask = torch.randn(2, MAXLEN, D), left_padded_mask([10, 6])
    targets = torch.randn(2, MAXLEN, D)
    every, last = model.denoise_every_position(
        history, mask, targets, torch.Generator().manual_seed(0)
    )
    assert every.shape == (2, MAXLEN, K, D) and last.interests.shape == (2, K, D)
    torch.testing.assert_close(last.interests, every[:, -1])
    assert last.routing.shape == (2, MAXLEN, K)
    # what position 5 denoises depends on neither later items nor later targets
    changed, later = history.clone(), targets.clone()
    changed[:, 6:], later[:, 6:] = torch.randn(2, 4, D), torch.randn(2, 4, D)
    again, _ = model.denoise_every_position(changed, mask, later, torch.Generator().manual_seed(0))
    torch.testing.assert_close(every[:, :6], again[:, :6])
    assert not torch.allclose(every[:, 6:], again[:, 6:])


def test_a_short_training_learns_and_evaluates_the_same_twice(tmp_path):
    data = prepare("synthetic:n_users=800,n_items=300,n_clusters=8")
    config = load_config("diffurec", overrides=["max_epochs=3", "embedding_dim=32"])
    torch.manual_seed(0)
    model = build_model(config, data.sequences.n_items, data.maxlen)
    result = fit(model, data, config, tmp_path, progress=False)
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 3 and losses[-1] < losses[0]
    first, again = evaluate(model, data.test), evaluate(model, data.test)
    assert first.metrics == again.metrics
    # a random ranking finds about 50 / 300 of the targets; popularity about 0.25
    assert first.metrics["recall@50"] > 0.3
