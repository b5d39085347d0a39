"""Build a model from a :class:`~mirec.config.Config`: the extractor named by
``config.extractor`` under an :class:`InterestModel`, or the popularity baseline."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from mirec.aggregators.hard_argmax import select_by_argmax
from mirec.aggregators.label_aware import label_aware
from mirec.config import Config
from mirec.errors import ConfigError
from mirec.extractors.capsule_routing import BehaviorToInterestRouting, CapsuleRouting
from mirec.extractors.causal_transformer import SASRecExtractor
from mirec.extractors.mean_pooling import MeanPoolingExtractor
from mirec.extractors.self_attentive import SelfAttentiveExtractor
from mirec.models.interest_model import InterestModel, Selector
from mirec.models.most_popular import MostPopular
from mirec.regularizers import parse_regularizers

EXTRACTORS: dict[str, Callable[[Config, int], nn.Module]] = {
    "self_attentive": lambda c, maxlen: SelfAttentiveExtractor(
        c.embedding_dim, c.num_interests, maxlen, c.hidden_dim, c.encoder_layers, c.dropout
    ),
    "causal_transformer": lambda c, maxlen: SASRecExtractor(
        c.embedding_dim, maxlen, c.encoder_layers, dropout=c.dropout
    ),
    "mean_pooling": lambda c, maxlen: MeanPoolingExtractor(c.embedding_dim, c.hidden_dim),
    "dynamic_routing": lambda c, maxlen: BehaviorToInterestRouting(
        c.embedding_dim,
        c.num_interests,
        maxlen,
        iterations=c.routing_iterations,
        sigma=c.routing_sigma,
        dynamic_interests=c.dynamic_interests,
        hidden_dim=c.hidden_dim,
    ),
    "capsule_routing": lambda c, maxlen: CapsuleRouting(
        c.embedding_dim, c.num_interests, maxlen, iterations=c.routing_iterations
    ),
}


SELECTORS: dict[str, Callable[[Config], Selector]] = {
    "hard_argmax": lambda c: select_by_argmax,
    "label_aware": lambda c: label_aware(c.label_aware_power),
}


def build_model(config: Config, n_items: int, maxlen: int) -> InterestModel | MostPopular:
    if config.extractor == "popularity":
        return MostPopular(n_items)
    extractor = _lookup(EXTRACTORS, config.extractor, "extractor", ["popularity"])(config, maxlen)
    selector = _lookup(SELECTORS, config.selector, "selector")(config)
    regularizers = parse_regularizers(config.regularizer, config.contrastive_temperature)
    if config.num_interests < 2 and any(name == "disagreement" for name, _, _ in regularizers):
        raise ConfigError("regularizer 'disagreement' needs num_interests >= 2")
    return InterestModel(n_items, config.embedding_dim, extractor, selector, regularizers)


def _lookup(table: dict, name: str, what: str, extra: list[str] | None = None):
    if name not in table:
        known = ", ".join([*table, *(extra or [])])
        raise ConfigError(f"unknown {what} {name!r}; known: {known}")
    return table[name]
