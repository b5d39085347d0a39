"""The component registries, the Extractor contract, InterestModel.forward and the one masked
softmax."""

from __future__ import annotations

import pytest
import torch

from mirec.aggregators import AGGREGATORS, CTR, RETRIEVAL, Level, build_aggregation
from mirec.config import load_config, model_names
from mirec.core.contracts import Extractor, Retriever
from mirec.core.functional import masked_softmax
from mirec.core.registry import Registry
from mirec.errors import ConfigError
from mirec.extractors import EXTRACTORS
from mirec.models.most_popular import MostPopular
from mirec.models.registry import build_model
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
    # retrieval cannot use DIN's behaviours: refused where the config is built
    with pytest.raises(ConfigError, match=r"extractor='behaviors': must be one of .*popularity"):
        load_config("comirec-sa", overrides=["extractor=behaviors"])


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
        return build_aggregation(config, task).level

    assert level("max", RETRIEVAL) is level("max", CTR) is level("mean", RETRIEVAL) is Level.SCORE
    for fused in ("attention", "concat_mlp"):
        assert level(fused, RETRIEVAL) is level(fused, CTR) is Level.REPRESENTATION
    assert level("intention", RETRIEVAL) is Level.REPRESENTATION
    assert level("target", CTR) is Level.TARGET
    # a name the task does not know is refused where the config is built
    with pytest.raises(ConfigError, match=r"aggregator='mean': must be one of .*task=ctr"):
        level("mean", CTR)
    with pytest.raises(ConfigError, match=r"aggregator='target': must be one of .*task=retrieval"):
        level("target", RETRIEVAL)
    assert set(AGGREGATORS.entries()) == {
        "attention",
        "concat_mlp",
        "intention",
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
