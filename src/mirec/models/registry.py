"""Build a model from a :class:`~mirec.config.Config`: the extractor named by
``config.extractor`` under an :class:`InterestModel`, or the popularity baseline."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from mirec.config import Config
from mirec.errors import ConfigError
from mirec.extractors.mean_pooling import MeanPoolingExtractor
from mirec.extractors.self_attentive import SelfAttentiveExtractor
from mirec.models.interest_model import InterestModel
from mirec.models.most_popular import MostPopular

EXTRACTORS: dict[str, Callable[[Config, int], nn.Module]] = {
    "self_attentive": lambda c, maxlen: SelfAttentiveExtractor(
        c.embedding_dim, c.num_interests, maxlen, c.hidden_dim
    ),
    "mean_pooling": lambda c, maxlen: MeanPoolingExtractor(c.embedding_dim, c.hidden_dim),
}


def build_model(config: Config, n_items: int, maxlen: int) -> InterestModel | MostPopular:
    if config.extractor == "popularity":
        return MostPopular(n_items)
    if config.extractor not in EXTRACTORS:
        known = ", ".join([*EXTRACTORS, "popularity"])
        raise ConfigError(f"unknown extractor {config.extractor!r}; known: {known}")
    extractor = EXTRACTORS[config.extractor](config, maxlen)
    return InterestModel(n_items, config.embedding_dim, extractor)
