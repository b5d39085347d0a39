"""Build a model from a :class:`~mirec.core.config.Config`: a retrieval model (the
extractor named by ``config.extractor`` under an :class:`InterestModel`, or the popularity
baseline) or a CTR model, and check that its components fit together. The components
themselves come from their registries (extractors, selectors, aggregators, regularizers).

Every rule that ties a setting to a component ("the extractor is one the task has", "SINE
needs as many concepts as interests") lives here, once, in :func:`check_components`; the
schema (:mod:`mirec.core.config`) checks each setting's own range. A command checks both
before any work, and the builders check again, so a model is never built from a config
that breaks one.

``config.user_features`` (MIND only) adds the dataset's user profiles: one embedding table
per feature, ``embedding_dim // 4`` wide, whose concatenation widens the input of MIND's
ReLU tower (Li et al., CIKM 2019, section 4.3)."""

from __future__ import annotations

import math

import numpy as np
from torch import nn

from mirec.aggregators import AGGREGATORS, CTR, RETRIEVAL, Level, build_aggregation
from mirec.core.config import Config, bad_setting, one_of, shown
from mirec.data.readers import FORMATS
from mirec.data.sequences import Sequences, UserProfiles
from mirec.data.synthetic import SyntheticSpec
from mirec.errors import ConfigError
from mirec.extractors import EXTRACTORS
from mirec.models.ctr_model import CTRModel, ItemEncoder, PopularityCTR
from mirec.models.dmin import DMIN, REFINER_HEADS
from mirec.models.interest_model import InterestModel
from mirec.models.most_popular import MostPopular
from mirec.regularizers import REGULARIZERS, parse_regularizers
from mirec.retrieval.adaptive_k import parse_adaptive_k
from mirec.selectors import SELECTORS

BUILT_IN_EXTRACTORS = {"retrieval": ("popularity",), "ctr": ("popularity", "dmin")}
"""Extractor names the model builders handle themselves, by task; every other name is a
component registered where it is defined (``mirec.extractors``)."""
PROFILE_EXTRACTOR = "dynamic_routing"
"""The extractor that takes user profiles: MIND's, the one model that defines their use."""


def user_feature_dim(config: Config) -> int:
    """Width of each user-profile feature's embedding: a quarter of the item embedding."""
    return max(1, config.embedding_dim // 4)


def build_model(
    config: Config, n_items: int, maxlen: int, user_profiles: UserProfiles | None = None
) -> InterestModel | MostPopular:
    """The model ``config`` describes, for a catalogue of ``n_items`` and histories of
    ``maxlen``. ``user_profiles`` (``Sequences.user_profiles()``) is used only when
    ``config.user_features`` is true; a ConfigError says when that cannot be."""
    check_components(config)
    if config.user_features:
        _check_user_features(config, user_profiles)
    if config.extractor == "popularity":
        return MostPopular(n_items)
    extractor_class = EXTRACTORS.lookup(
        config.extractor,
        accept=lambda cls: not cls.ctr_only,
        extra=BUILT_IN_EXTRACTORS["retrieval"],
    )
    if config.user_features:
        assert user_profiles is not None
        dim = user_feature_dim(config)
    else:
        user_profiles, dim = None, 0
    width = 0 if user_profiles is None else len(user_profiles.cardinalities) * dim
    extractor = extractor_class.from_config(config, maxlen, width)
    if config.sequence_training and not extractor.causal:
        raise ConfigError(
            "sequence_training scores every position of a window with the interests of its "
            "own prefix, which needs a causal extractor: extractor=causal_transformer, or "
            "self_attentive with encoder_layers > 0"
        )
    selector = SELECTORS.lookup(config.selector)(config)
    regularizers = parse_regularizers(config.regularizer, config.contrastive_temperature)
    names = {name for name, _, _ in regularizers}
    if config.num_interests < 2 and "disagreement" in names:
        raise ConfigError("regularizer 'disagreement' needs num_interests >= 2")
    _check_covariance(config, names)
    if "concept_covariance" in names and config.extractor != "sparse_interest":
        raise ConfigError(
            "regularizer 'concept_covariance' penalises SINE's concept pool: it needs "
            "extractor=sparse_interest"
        )
    aggregation = build_aggregation(config, RETRIEVAL)
    if config.aggregator == "intention" and config.extractor != "sparse_interest":
        raise ConfigError("aggregator 'intention' is SINE's: it needs extractor=sparse_interest")
    if config.extractor == "sparse_interest" and config.num_interests > config.num_concepts:
        raise ConfigError(
            f"SINE activates num_interests={config.num_interests} concepts from a pool of "
            f"num_concepts={config.num_concepts}: the pool must be at least as large"
        )
    return InterestModel(
        n_items,
        config.embedding_dim,
        extractor,
        selector,
        regularizers,
        scorer=aggregation.scorer,
        fuse=aggregation.module,
        adaptive_k=parse_adaptive_k(config.adaptive_k),
        user_profiles=user_profiles,
        user_feature_dim=dim,
    )


def build_ctr_model(config: Config, seqs: Sequences, maxlen: int) -> nn.Module:
    """The CTR model ``config`` describes (task=ctr): DIN, DMIN, the popularity baseline, or
    any retrieval extractor under a CTR head with a CTR aggregator; item categories and
    behaviour types of the dataset ``seqs`` become side features."""
    check_components(config)
    if config.extractor == "popularity":
        return PopularityCTR(seqs.n_items)
    if config.user_features:
        raise ConfigError("user_features are not used by CTR models yet; set user_features=false")
    categories, n_categories = padded_categories(seqs)
    n_behaviors = 0 if seqs.behavior_names is None else len(seqs.behavior_names)
    encoder = ItemEncoder(seqs.n_items, config.embedding_dim, categories, n_categories, n_behaviors)
    if config.extractor == "dmin":
        return DMIN(
            encoder,
            config.embedding_dim,
            config.num_interests,
            maxlen,
            dropout=config.dropout,
            aux_weight=config.aux_loss_weight,
        )
    if config.extractor == "behaviors" and config.aggregator not in ("target", "max"):
        raise ConfigError(
            "extractor 'behaviors' (DIN) keeps every history item: aggregate with target or max"
        )
    extractor_class = EXTRACTORS.lookup(config.extractor, extra=BUILT_IN_EXTRACTORS["ctr"])
    if extractor_class.target_conditioned:
        raise ConfigError(
            f"extractor {config.extractor!r} trains by denoising each next item's embedding, "
            "which a CTR model does not give it: use it with task=retrieval"
        )
    extractor = extractor_class.from_config(config, maxlen)
    aggregation = build_aggregation(config, CTR)
    regularizers = parse_regularizers(config.regularizer, config.contrastive_temperature)
    _check_covariance(config, {name for name, _, _ in regularizers})
    return CTRModel(encoder, config.embedding_dim, extractor, aggregation, regularizers)


def padded_categories(seqs: Sequences) -> tuple[np.ndarray | None, int]:
    """(n_items + 1, C) category codes + 1 per item, 0-padded (C = the most categories any
    item has), and the number of categories; (None, 0) without categories."""
    if seqs.item_category_offsets is None or seqs.category_names is None:
        return None, 0
    counts = np.diff(seqs.item_category_offsets)
    table = np.zeros((seqs.n_items + 1, max(int(counts.max()), 1)), dtype=np.int64)
    rows = np.repeat(np.arange(1, seqs.n_items + 1), counts)
    column = np.arange(len(rows)) - np.repeat(seqs.item_category_offsets[:-1], counts)
    table[rows, column] = seqs.item_category_codes + 1
    return table, len(seqs.category_names)


def _check_covariance(config: Config, names: set[str]) -> None:
    """REMI's penalty acts through attention weights; capsule routing's coupling carries no
    gradient (its logits are updated from detached predictions, MIND and ComiRec-DR alike),
    so there the penalty would be a constant that trains nothing."""
    if "covariance" in names and config.extractor in ("dynamic_routing", "capsule_routing"):
        raise ConfigError(
            f"regularizer 'covariance' (REMI) regularizes attention weights; the coupling of "
            f"{config.extractor} carries no gradient, so the penalty would change nothing: use "
            "it with self_attentive or sparse_interest, or use disagreement/contrastive"
        )


def _check_user_features(config: Config, user_profiles: UserProfiles | None) -> None:
    if config.extractor != PROFILE_EXTRACTOR:
        raise ConfigError(
            f"user_features=true is MIND's user-profile input: it needs "
            f"extractor={PROFILE_EXTRACTOR}, not {config.extractor!r}"
        )
    if user_profiles is None or not user_profiles.cardinalities:
        raise ConfigError(
            f"dataset {config.dataset!r} has no user features; set user_features=false "
            "(MovieLens 100K and 1M have them)"
        )


# --------------------------------------------------------------------------- the rules


def check_components(config: Config) -> None:
    """Every rule that ties a setting of ``config`` to a component or a data source; a
    ConfigError naming the setting, its value and what is allowed (as the schema's own
    range checks do)."""
    c = config
    extractors = component_names("extractor", c.task)
    one_of("extractor", c.extractor, extractors, f"task={c.task}")
    one_of("selector", c.selector, component_names("selector", c.task))
    one_of("aggregator", c.aggregator, component_names("aggregator", c.task), f"task={c.task}")
    if c.dataset.partition(":")[0] == "synthetic":
        try:  # its options too, before a run folder is locked or anything generated
            SyntheticSpec.parse(c.dataset)
        except ConfigError as err:
            raise ConfigError(f"setting dataset={shown(c.dataset)}: {err}") from None
    if c.format is not None:
        one_of("format", c.format, FORMATS, none=True)
    parse_regularizers(c.regularizer)
    parse_adaptive_k(c.adaptive_k)
    if c.extractor == "sparse_interest" and c.num_interests > c.num_concepts:
        bad_setting(
            "num_concepts",
            c.num_concepts,
            f"SINE activates num_interests={c.num_interests} concepts from this pool: it must "
            "be at least as large",
        )
    one_vector = single_retrieval_vector(c)
    if c.quota_alpha is not None and one_vector is not None:
        bad_setting("quota_alpha", c.quota_alpha, f"{one_vector}; leave it unset")
    if c.extractor == "dmin":
        width = math.lcm(REFINER_HEADS, c.num_interests)
        if c.embedding_dim % width:
            bad_setting(
                "embedding_dim",
                c.embedding_dim,
                f"must be a multiple of {width} for extractor=dmin (its {REFINER_HEADS} "
                f"refiner heads and num_interests={c.num_interests} interest heads split it)",
            )


def single_retrieval_vector(config: Config) -> str | None:
    """Why a retrieval model of ``config`` ranks the catalogue with one vector (one interest,
    or interests fused by a representation-level aggregator), so that no merge shares its
    list among interests (the quota merge has nothing to divide: every setting of it would
    give the max merge's list); None when it retrieves with several."""
    if config.task != "retrieval":
        return None
    if config.num_interests == 1:
        return "the model has one interest: there is no list of several to share"
    entry = AGGREGATORS.entries().get(config.aggregator)
    if entry is not None and entry.level is Level.REPRESENTATION:
        return (
            f"aggregator={config.aggregator} fuses the interests into one retrieval vector: "
            "there is no list of several to share"
        )
    return None


def component_names(kind: str, task: str) -> tuple[str, ...]:
    """The names ``kind`` (extractor, selector, aggregator, regularizer) can take for
    ``task``, asked of the registry where each component registers itself."""
    if kind == "extractor":
        usable = [n for n, e in EXTRACTORS.entries().items() if task == "ctr" or not e.ctr_only]
        return (*usable, *BUILT_IN_EXTRACTORS[task])
    if kind == "aggregator":
        return tuple(n for n, e in AGGREGATORS.entries().items() if task in e.tasks)
    registry = {"selector": SELECTORS, "regularizer": REGULARIZERS}[kind]
    return tuple(registry.entries())
