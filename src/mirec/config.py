"""Run configuration: one flat, typed record, loaded from a model's YAML and ``--set`` overrides.

A run's resolved config is written next to its results (``config.yaml``), and training
again from that file repeats the run exactly.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from mirec.errors import ConfigError


@dataclass
class Config:
    # what to train
    task: str = "retrieval"
    """retrieval (next item over the whole catalogue, PROTOCOL.md) | ctr (click-through rate
    of a given candidate: AUC, GAUC, LogLoss)."""
    model: str = "remi-plain"
    """Name of the published configuration this run started from; the default is the best
    multi-interest configuration measured so far (docs/results.md: REMI's routing
    regularization without its hard negatives leads on amazon-beauty and amazon-toys)."""
    extractor: str = "self_attentive"
    """self_attentive (ComiRec-SA) | dynamic_routing (MIND) | capsule_routing (ComiRec-DR) |
    sparse_interest (SINE) | causal_transformer (SASRec) | gru (GRU4Rec) | mean_pooling
    (YouTube-DNN) | popularity; for task=ctr also behaviors (DIN: every history item is its
    own vector) and dmin (DMIN's refiner and multi-head extractor)."""
    embedding_dim: int = 64
    num_interests: int = 4
    hidden_dim: int | None = None
    """Extractor hidden width; None means 4 x embedding_dim (GRU: embedding_dim)."""
    maxlen: int | None = None
    """History length; None means PROTOCOL.md section 7 (50 for MovieLens, else 20)."""
    encoder_layers: int = 0
    """Transformer blocks: SASRec's depth, or (self_attentive) a contextual encoder under the
    K heads; 0 keeps ComiRec-SA as published."""
    dropout: float = 0.2
    """Dropout in transformer blocks."""
    interest_tower: bool = False
    """self_attentive: pass each pooled interest through MIND's ReLU layers (not in
    ComiRec; lets interests move away from the history's own items)."""
    routing_iterations: int = 3
    """Dynamic-routing extractors: routing iterations (gradient through the last only)."""
    routing_sigma: float = 1.0
    """MIND: standard deviation of the random initial routing logits."""
    dynamic_interests: bool = True
    """MIND: K'_u = max(1, min(K, log2 |history|)) interests per user."""
    user_features: bool = False
    """MIND (dynamic_routing) only: concatenate the user's profile embeddings (one table per
    categorical feature, embedding_dim // 4 wide each) to every interest capsule before the
    ReLU layers (Li et al., CIKM 2019, section 4.3); needs a dataset with user features
    (MovieLens 100K and 1M: age group, gender, occupation, zip region)."""
    selector: str = "hard_argmax"
    """Training-time interest selection: hard_argmax (ComiRec) | label_aware (MIND)."""
    label_aware_power: float = 1.0
    """MIND's label-aware attention power p (large p is argmax)."""
    aggregator: str = "max"
    """How the K interests meet the items: max | mean (score-level: the selector trains,
    all K retrieve) or attention | concat_mlp | intention (representation-level: one fused
    vector trains and retrieves; intention is SINE's own weighting). For task=ctr: target
    (target-aware attention, DIN's unit) | max (best per-interest logit) | attention |
    concat_mlp."""
    diversity_lambda: float | None = None
    """ComiRec's diversity-controllable aggregation at test time: each top-N list is picked
    greedily for score + lambda x category diversity (needs item categories); None ranks
    by score alone."""
    adaptive_k: str | None = None
    """Per-user number of interests at inference: ``mass:t`` drops interests with less than
    a share t of the soft routing mass, ``share:t`` those fewer than a share t of the
    history items route to most (the rule for self-attention), ``merge:t`` merges interests
    with cosine above t."""
    num_concepts: int = 500
    """SINE: size of the concept prototype pool."""
    intention_temperature: float = 0.1
    """SINE: temperature of the intention-aware aggregation softmax."""
    regularizer: str | None = None
    """Penalties against collapse, ``name:weight[,name:weight]``: disagreement,
    contrastive, covariance (REMI). None: no regularization."""
    contrastive_temperature: float = 0.1
    ctr_negatives: int = 1
    """task=ctr: sampled negatives (items the user never interacted with) per positive."""
    aux_loss_weight: float = 1.0
    """DMIN: weight of the behaviour refiner's auxiliary next-item loss."""
    sequence_training: bool = False
    """Score the next item at every position of a history window in one pass (SASRec's
    training, Kang and McAuley, ICDM 2018, section III-E) instead of one position per
    example; an epoch still visits every training position once. Needs a causal extractor:
    causal_transformer, or self_attentive with encoder_layers > 0. ``batch_size`` then
    counts windows of up to ``maxlen`` targets. Retrieval only, like the negatives: task=ctr
    trains on labelled candidates."""
    # data
    dataset: str = "synthetic"
    """A registry name (``mirec datasets``) or a path."""
    format: str | None = None
    """File format when ``dataset`` is a path."""
    columns: str | None = None
    sep: str | None = None
    split_seed: int = 42
    # training
    seed: int = 42
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    num_negatives: int | None = None
    """Shared negatives per batch; 0 scores the whole catalogue; None (auto) is the whole
    catalogue up to 16,384 items, else 4,096 (see ``resolve_negatives``)."""
    negative_sampling: str = "uniform"
    """uniform | popularity (log-Q corrected) | in_batch (the batch's other targets)."""
    hard_negative_beta: float = 0.0
    """REMI's interest-aware hard negatives: negatives reweighted by exp(beta * score);
    0 is the plain sampled softmax."""
    temperature: float = 1.0
    max_epochs: int = 200
    patience: int = 3
    """Epochs without a better validation Recall@50 before stopping."""
    max_train_minutes: float | None = None
    device: str = "auto"
    """auto (CUDA when present, else CPU), cpu, cuda, cuda:1, ..."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELD_TYPES = {f.name: f.type for f in fields(Config)}

CTR_DEFAULT_MODEL = "comirec-sa"
"""The model of ``--task ctr`` without ``--model``: ComiRec-SA's interests under DIN's head,
max-aggregated, the best or within a seed's spread of the best in docs/ctr.md."""


def model_names() -> list[str]:
    """The published configurations shipped in ``mirec/configs``."""
    folder = resources.files("mirec.configs")
    return sorted(
        p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")
    )


def model_summary(name: str) -> str:
    """The first comment line of a published config, for ``mirec models``."""
    text = resources.files("mirec.configs").joinpath(f"{name}.yaml").read_text()
    first = text.splitlines()[0] if text else ""
    return first.lstrip("# ").strip()


def load_config(
    model: str | None = None,
    config_file: Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    fixed: dict[str, Any] | None = None,
    **settings: Any,
) -> Config:
    """Published config ``model`` (else the config file's, else :data:`CTR_DEFAULT_MODEL`
    for the CTR task and ``Config.model`` otherwise), then ``config_file``, then ``settings``
    (non-None keyword values), then ``fixed`` (None included: it unsets a setting), then
    ``--set key=value`` overrides, each over the last."""
    values: dict[str, Any] = {}
    if config_file is not None:
        values.update(_read_yaml(config_file))
    task = parse_overrides(overrides).get("task") or settings.get("task") or values.get("task")
    name = model or values.get("model") or (CTR_DEFAULT_MODEL if task == "ctr" else Config.model)
    if name not in model_names():
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(model_names())}")
    merged = _read_published(name)
    merged.update(values)
    merged["model"] = name
    merged.update({k: v for k, v in settings.items() if v is not None})
    merged.update(fixed or {})
    merged.update(parse_overrides(overrides))
    return config_from_dict(merged, source=str(config_file or f"model {name}"))


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["key=value", ...]`` -> {key: value}, values read as YAML; an empty value is None."""
    out: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected key=value")
        out[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
    return out


def save_config(config: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))


def _read_published(name: str) -> dict[str, Any]:
    text = resources.files("mirec.configs").joinpath(f"{name}.yaml").read_text()
    return yaml.safe_load(text) or {}


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: config file does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "parse error"
        raise ConfigError(f"{path}: {where}: not valid YAML") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    return data


def config_from_dict(values: dict[str, Any], source: str) -> Config:
    """A Config from a mapping, with unknown keys and wrong types reported against ``source``."""
    unknown = sorted(set(values) - set(FIELD_TYPES))
    if unknown:
        raise ConfigError(
            f"{source}: unknown setting {unknown[0]!r}; settings are: {', '.join(FIELD_TYPES)}"
        )
    checked = {key: _coerce(key, value) for key, value in values.items()}
    return Config(**checked)


def _coerce(key: str, value: Any) -> Any:
    """Check ``value`` against the field's annotation; ints (and YAML-1.1 strings such as
    ``3e-3``) are accepted for floats."""
    annotation = typing.get_type_hints(Config)[key]
    allowed = (
        typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    )
    if value is None and type(None) in allowed:
        return None
    for kind in allowed:
        if kind is bool and isinstance(value, bool):
            return value
        if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if kind is float and isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind is str and isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value)
    names = " or ".join("none" if k is type(None) else k.__name__ for k in allowed)
    raise ConfigError(f"setting {key}={value!r}: expected {names}")
