"""The component registries, the Extractor contract, InterestModel.forward, the one masked
softmax and the map over real rows that training uses."""

from __future__ import annotations

import pytest
import torch

from mirec.aggregators import AGGREGATORS, CTR, RETRIEVAL, Level, build_aggregation
from mirec.config import load_config, model_names
from mirec.core.contracts import Extractor, Retriever
from mirec.core.functional import map_real_rows, masked_softmax
from mirec.core.registry import Registry
from mirec.errors import ConfigError
from mirec.extractors import EXTRACTORS
from mirec.extractors.capsule_routing import BehaviorToInterestRouting
from mirec.extractors.self_attentive import SelfAttentiveExtractor
from mirec.models.build import build_model, check_components
from mirec.models.most_popular import MostPopular
from mirec.regularizers import REGULARIZERS, parse_regularizers
from mirec.selectors import SELECTORS

WHOLE_MODELS = {RETRIEVAL: ("popularity",), CTR: ("dmin", "popularity")}
"""Extractor names the builders handle as whole models, not registered extractors."""


def test_an_unknown_name_lists_the_known_ones():
    known = ", ".join(EXTRACTORS.entries())
    with pytest.raises(ConfigError, match=f"^unknown extractor 'nope'; known: {known}$"):
        EXTRACTORS.lookup("nope")
    selectors = "hard_argmax, label_aware"
    with pytest.raises(ConfigError, match=f"^unknown selector 'nope'; known: {selectors}$"):
        SELECTORS.lookup("nope")
    # retrieval cannot use DIN's behaviours: refused by the builder's rules, and so before
    # a model is built
    config = load_config("comirec-sa", overrides=["extractor=behaviors"])
    with pytest.raises(ConfigError, match=r"extractor='behaviors': must be one of .*popularity"):
        check_components(config)
    with pytest.raises(ConfigError, match=r"extractor='behaviors'"):
        build_model(config, n_items=50, maxlen=10)


def test_a_name_is_registered_once():
    registry: Registry[int] = Registry("thing", "mirec.selectors")
    registry.register("one")(1)
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("one")(2)


@pytest.mark.parametrize("name", model_names())
def test_every_published_config_resolves(name):
    config = load_config(name)
    extractors = [*EXTRACTORS.entries(), *WHOLE_MODELS[config.task]]
    assert config.extractor in extractors
    if config.extractor in WHOLE_MODELS[config.task]:
        return
    assert config.selector in SELECTORS.entries()
    assert {entry for entry, _, _ in parse_regularizers(config.regularizer)} <= set(
        REGULARIZERS.entries()
    )
    assert build_aggregation(config, config.task).level in Level
    if config.task == RETRIEVAL:
        build_model(config, n_items=50, maxlen=10)


def test_aggregators_say_their_level_and_tasks():
    def level(aggregator: str, task: str) -> Level:
        config = load_config("comirec-sa", overrides=[f"aggregator={aggregator}", f"task={task}"])
        check_components(config)
        return build_aggregation(config, task).level

    assert level("max", RETRIEVAL) is level("max", CTR) is level("mean", RETRIEVAL) is Level.SCORE
    for fused in ("attention", "concat_mlp"):
        assert level(fused, RETRIEVAL) is level(fused, CTR) is Level.REPRESENTATION
    assert level("intention", RETRIEVAL) is Level.REPRESENTATION
    assert level("target", CTR) is Level.TARGET
    # a name the task does not know is refused by the builder's rules
    with pytest.raises(ConfigError, match=r"aggregator='mean': must be one of .*task=ctr"):
        level("mean", CTR)
    with pytest.raises(ConfigError, match=r"aggregator='target': must be one of .*task=retrieval"):
        level("target", RETRIEVAL)
    assert set(AGGREGATORS.entries()) == {
        "attention",
        "concat_mlp",
        "intention",
        "mixture",
        "max",
        "mean",
        "target",
    }


@pytest.mark.parametrize("layers", [0, 2])
@pytest.mark.parametrize("name", sorted(EXTRACTORS.entries()))
def test_every_extractor_meets_the_contract(name, layers):
    config = load_config("comirec-sa", overrides=["embedding_dim=8", f"encoder_layers={layers}"])
    extractor = EXTRACTORS.lookup(name).from_config(config, maxlen=6)
    assert isinstance(extractor, Extractor)
    assert isinstance(extractor.num_interests, int) and extractor.num_interests >= 1
    causal = name == "causal_transformer" or (
        name in ("self_attentive", "diffusion") and layers > 0
    )
    assert extractor.causal is causal
    assert extractor.profile_dim == 0
    history, mask = torch.randn(2, 6, 8), torch.ones(2, 6, dtype=torch.bool)
    extracted = extractor.eval()(history, mask)
    k = 6 if extractor.ctr_only else extractor.num_interests  # DIN's: every behaviour
    assert extracted.interests.shape == (2, k, 8)
    if causal:
        every, _ = extractor.every_position(history, mask)
        assert every.shape == (2, 6, extractor.num_interests, 8)
    else:
        with pytest.raises(ValueError):
            extractor.every_position(history, mask)


@pytest.mark.parametrize("aggregator", ["max", "attention"])
def test_forward_is_the_retrieval_vectors(aggregator):
    config = load_config("comirec-sa", overrides=["embedding_dim=8", f"aggregator={aggregator}"])
    model = build_model(config, n_items=30, maxlen=6).eval()
    histories = torch.tensor([[0, 0, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6]])
    expected = model.retrieval_interests(model.extract(histories))
    got = model(histories)
    torch.testing.assert_close(got.interests, expected.interests)
    assert got.interests.shape[1] == (4 if aggregator == "max" else 1)


def test_scored_models_are_retrievers():
    model = build_model(load_config("comirec-sa"), n_items=30, maxlen=6)
    for retriever in (model, MostPopular(30)):
        assert isinstance(retriever, Retriever)
        assert retriever.uses_user_rows is False


def test_masked_softmax_is_zero_on_an_all_masked_slice():
    logits = torch.randn(3, 5, requires_grad=True)
    mask = torch.tensor([[1, 1, 0, 1, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    out = masked_softmax(logits, mask, dim=-1)
    assert out[1].abs().sum() == 0 and out[0, 2] == 0 and out[0, 4] == 0
    torch.testing.assert_close(out[0, [0, 1, 3]], torch.softmax(logits[0, [0, 1, 3]], -1))
    out.sum().backward()
    assert torch.isfinite(logits.grad).all() and logits.grad[1].abs().sum() == 0


def test_masked_softmax_is_the_softmax_where_nothing_is_masked():
    logits = torch.randn(4, 3, 6)
    expected = torch.softmax(logits, dim=1)
    assert torch.equal(masked_softmax(logits, torch.ones(4, 3, 6, dtype=torch.bool), 1), expected)
    assert torch.equal(masked_softmax(logits, None, 1), expected)


def test_map_real_rows_maps_the_real_rows_and_zeroes_the_rest():
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 3).double()
    rows = torch.randn(3, 5, 4, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[0, 1, 1, 0, 1], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    weights = torch.randn(3, 5, 3, dtype=torch.float64)
    out = map_real_rows(layer, rows, mask)
    (out * weights).sum().backward()
    got = [rows.grad.clone(), layer.weight.grad.clone(), layer.bias.grad.clone()]
    rows.grad = layer.weight.grad = layer.bias.grad = None
    expected = layer(rows) * mask.unsqueeze(-1)  # the dense map, masked downstream
    (expected * weights).sum().backward()
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    assert out[~mask].abs().sum() == 0
    for g, e in zip(got, [rows.grad, layer.weight.grad, layer.bias.grad], strict=True):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)
    empty = map_real_rows(layer, rows, torch.zeros(3, 5, dtype=torch.bool))
    assert empty.shape == (3, 5, 3) and empty.abs().sum() == 0


@pytest.mark.parametrize(
    "extractor",
    [
        lambda: SelfAttentiveExtractor(8, 3, 6),
        # sigma 0: the same (zero) initial routing logits in training as in eval mode
        lambda: BehaviorToInterestRouting(8, 3, 6, sigma=0.0, dynamic_interests=True),
    ],
    ids=["self_attentive", "dynamic_routing"],
)
def test_training_mode_skips_masked_work_and_computes_what_eval_mode_does(extractor):
    """In training, SA's logits and MIND's maps run on the real positions (and MIND's tower
    on the active interests) only; the interests and every gradient are eval mode's."""
    torch.manual_seed(0)
    model = extractor().double()
    lengths = torch.tensor([[1], [3], [6], [0], [4]])  # a padding-only history too
    mask = torch.arange(6) >= 6 - lengths
    history = torch.randn(5, 6, 8, dtype=torch.float64) * mask.unsqueeze(-1)
    weights = torch.randn(5, 3, 8, dtype=torch.float64)
    results = []
    for training in (True, False):
        model.train(training)
        model.zero_grad()
        leaf = history.clone().requires_grad_()
        interests = model(leaf, mask).interests
        (interests * weights).sum().backward()
        grads = [leaf.grad] + [p.grad for p in model.parameters()]
        results.append((interests.detach(), grads))
    (trained, trained_grads), (evaluated, eval_grads) = results
    torch.testing.assert_close(trained, evaluated, rtol=1e-10, atol=1e-12)
    for g, e in zip(trained_grads, eval_grads, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12)
