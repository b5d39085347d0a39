"""The run configuration as a schema: one flat, typed record of every setting, each
checked against its own range when the record is built (a ConfigError naming the setting,
its value and what is allowed). What a setting's value must be given another component (a
known extractor, an aggregator of the task, a regularizer's name) is the model builder's
rule (:mod:`mirec.models.build`); published models and loading from YAML and ``--set`` are
:mod:`mirec.config`'s.

A run's resolved config is written next to its results (``config.yaml``), and training
again from that file repeats the run exactly.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, fields
from typing import Any

from mirec.errors import ConfigError


@dataclass
class Config:
    # what to train
    task: str = "retrieval"
    """retrieval (next item over the whole catalogue, docs/protocol.md) | ctr (click-through rate
    of a given candidate: AUC, GAUC, LogLoss)."""
    model: str = "remi-plain"
    """Name of the published configuration this run started from. (A bare ``Config()``
    says remi-plain; ``mirec train`` without ``--model`` trains :data:`AUTO_MODEL`.)"""
    extractor: str = "self_attentive"
    """self_attentive (ComiRec-SA) | dynamic_routing (MIND) | capsule_routing (ComiRec-DR) |
    sparse_interest (SINE) | causal_transformer (SASRec) | gru (GRU4Rec) | mean_pooling
    (YouTube-DNN) | diffusion (DiffuRec-style denoised interests) | popularity; for task=ctr
    also behaviors (DIN: every history item is its own vector) and dmin (DMIN's refiner and
    multi-head extractor)."""
    embedding_dim: int = 64
    """d: the width of item embeddings and interest vectors."""
    num_interests: int = 4
    """K: interests per user (an upper bound where K is dynamic or adaptive)."""
    hidden_dim: int | None = None
    """Extractor hidden width; None means 4 x embedding_dim (GRU: embedding_dim)."""
    maxlen: int | None = None
    """History length; None means docs/protocol.md section 7 (50 for MovieLens, else 20)."""
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
    quota_alpha: float | None = None
    """The quota merge at test time (mirec.retrieval.quota): interest k gets
    round(N p_k^alpha / sum_j p_j^alpha) of a top-N's slots, p_k its share of the history's
    items by routing, each filled with its own best items; 0 gives equal quotas, 1 the
    history's proportions, large alpha the leading interest nearly all. None merges by the
    max score; not with diversity_lambda."""
    quota_half_life: float | None = None
    """With quota_alpha: the shares p_k weigh the history's recent items more, an item's
    weight halving every this many positions back from the most recent (3: the item 3
    positions back counts half as much as the last), so the quotas follow what the user
    does now. None: every history item counts the same."""
    adaptive_k: str | None = None
    """Per-user number of interests at inference: ``mass:t`` drops interests with less than
    a share t of the soft routing mass, ``share:t`` those fewer than a share t of the
    history items route to most (the rule for self-attention), ``merge:t`` merges interests
    with cosine above t, ``cluster:t`` keeps as many interests as k-means finds clusters
    among the history's item embeddings (the k of 1..K with the best mean silhouette; one
    when no k >= 2 reaches a mean silhouette of t)."""
    num_concepts: int = 500
    """SINE: size of the concept prototype pool."""
    intention_temperature: float = 0.1
    """SINE: temperature of the intention-aware aggregation softmax."""
    regularizer: str | None = None
    """Penalties against collapse, ``name:weight[,name:weight]``: disagreement,
    contrastive, covariance (REMI). None: no regularization."""
    contrastive_temperature: float = 0.1
    """The InfoNCE temperature of the ``contrastive`` regularizer (Re4)."""
    diffusion_timesteps: int = 32
    """diffusion: T, the noise levels of the forward process that training corrupts each
    target's embedding with (DiffuRec's default is 32)."""
    diffusion_steps: int = 4
    """diffusion: denoising steps at inference, from the fixed starting noise at level T
    down to the interests (DDIM's deterministic sampler over evenly spaced levels); acts at
    inference only, at most ``diffusion_timesteps``."""
    diffusion_signal: float = 0.01
    """diffusion: the norm of the diffused data, the target's direction, against noise of
    norm about 1. At 1 the denoiser reads the target out of x_t at most levels and learns
    to copy it instead of predicting it from the history; at 0.01 no level shows it
    (DiffuRec's lambda plays this part)."""
    noise_schedule: str = "cosine"
    """diffusion: the betas of the forward process: cosine (Nichol and Dhariwal, ICML 2021)
    | linear (Ho et al., NeurIPS 2020)."""
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
    """For ``format=interactions``: the ``user,item[,timestamp][,category]`` column names."""
    sep: str | None = None
    """For ``format=interactions``: the field separator (default: from the file)."""
    id_type: str | None = None
    """How user and item ids are read: int (every id must be an integer; a line that is not
    is an error naming it), str (ids are text, as written), or None: integers when every id
    is one, text when most are not, and an error naming the first odd line when most ids are
    integers but not all (a repeated header, a 20-digit id, a stray word)."""
    init_from: str | None = None
    """A model folder to fine-tune (``mirec train --init-from DIR``) on this run's dataset,
    typically the grown log: the folder's settings are the run's (the options given change
    the data and the training; one that changes the architecture is refused), items and
    users it knows keep their learned rows, and an item new to it starts at the mean row of
    the known items of its category (of all known items where the log has no categories).
    What happens to the items the new log no longer holds is ``removed_items``; the
    optimizer starts afresh unless ``init_optimizer=carry``."""
    fine_tune_on: str = "new"
    """With ``init_from``, which training positions an epoch trains on: ``new``, the
    interactions the folder's log did not hold (each user's items past the history the
    folder stored; every item of a new user), each predicted from the whole history before
    it, so an epoch costs what the log gained, not the whole log; ``all``, every position
    of the new log, as a run from scratch. A folder that stored no histories
    (``stored_users`` ids or none) cannot tell what is new: ``all`` then."""
    removed_items: str = "drop"
    """With ``init_from``, the items the folder knows that the new log no longer holds:
    ``drop``, gone with their rows (the new model knows the new log's items only); ``keep``,
    kept in the new model's catalogue with their learned rows and the folder's titles and
    categories (popularity 0: no interaction of the new log holds them), so they can still
    be looked up and recommended. Retrieval only: a CTR run draws its negatives from the
    catalogue, where a kept item would only ever be one."""
    init_optimizer: str = "fresh"
    """With ``init_from``, where the optimizer starts: ``fresh``, a new Adam (zero moments);
    ``carry``, the folder's final optimizer state (it needs a folder trained with
    ``keep_optimizer_state=true``), each tensor's state remapped as its weights are: an
    item the folder knows keeps its row's moments, a new item's start at zero, a dropped
    item's go. The learning rate and the other hyperparameters are this run's."""
    split_seed: int = 42
    """Seeds the 8:1:1 permutation of users into train, validation and test
    (docs/protocol.md section 2); the same for every model seed."""
    # training
    seed: int = 42
    """Seeds weights, batches and negatives."""
    batch_size: int = 256
    """Training examples per step (windows with ``sequence_training``)."""
    lr: float = 1e-3
    """Adam's learning rate."""
    weight_decay: float = 0.0
    """Adam's L2 weight decay."""
    sparse_items: bool | str = "auto"
    """How the item table trains: true gives it sparse gradients and a row-wise Adam (a step
    costs the rows the batch touches), false dense Adam (a step costs the whole table);
    auto is true from 32,768 items up (where it measured faster) when the loss samples its
    negatives and ``weight_decay`` is 0 (the row-wise Adam has none), else false
    (``mirec.training.optimizer``)."""
    num_negatives: int | None = None
    """Shared negatives per batch; 0 scores the whole catalogue; None (auto) is the whole
    catalogue up to 16,384 items, else 4,096 (see ``resolve_negatives``)."""
    negative_sampling: str = "uniform"
    """uniform | popularity (log-Q corrected) | in_batch (the batch's other targets)."""
    hard_negative_beta: float = 0.0
    """REMI's interest-aware hard negatives: negatives reweighted by exp(beta * score);
    0 is the plain sampled softmax."""
    temperature: float = 1.0
    """Divides the logits of the training softmax."""
    max_epochs: int = 200
    """Training stops after this many epochs at the latest."""
    patience: int = 3
    """Validations without a better validation Recall@50 before stopping (with the default
    ``valid_every`` = 1, epochs)."""
    valid_every: int = 1
    """Validate after every N-th epoch (and after the last one, or when the time limit
    stops training); the best weights are chosen among validated epochs."""
    valid_users: int | None = 10_000
    """Retrieval: validation scores this many validation users, a fixed random sample
    drawn once from the split's seed (the same users every epoch, and for every model
    seed); a split with fewer validates on all of them (every dataset of
    docs/results.md does). None: always all. The test pass is always complete and exact.
    A CTR run validates on all its rows."""
    max_train_minutes: float | None = None
    """Training stops after the first epoch that ends past this many minutes; None: no
    limit."""
    device: str = "auto"
    """auto (CUDA when present, else CPU), cpu, cuda, cuda:1, ..., mps."""
    precision: str = "fp32"
    """fp32, or bf16: training's forward passes under ``torch.autocast`` in bfloat16 (meant
    for CUDA; weights, optimiser state, validation and test stay fp32)."""
    # the model folder
    stored_users: str = "histories"
    """What the model folder keeps of the log's users (``users.parquet``): histories (every
    user's raw id and whole history: known users are served by id, and ``mirec evaluate``
    re-scores the protocol's split from the folder; sharing the folder shares the log's
    behaviour) | ids (raw ids only: a request by user id is refused with a line asking for
    the history) | none (no user data: only requests that send a history)."""
    keep_optimizer_state: bool = False
    """Keep the optimizer's state at the end of training (Adam's moments and step counts,
    after the last epoch trained) in the model folder, ``optimizer.safetensors``, so that
    a fine-tune of the folder can carry it on (``init_optimizer=carry``); it is about twice
    the size of the weights."""

    def __post_init__(self) -> None:
        # every way of building a Config (YAML, --set, grids, Python) ends here
        for name in FIELD_NAMES:
            setattr(self, name, _coerce(name, getattr(self, name)))
        validate(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELD_TYPES = {f.name: f.type for f in fields(Config)}
FIELD_NAMES = tuple(FIELD_TYPES)
_HINTS = typing.get_type_hints(Config)

ARCHITECTURE_SETTINGS = (
    "task",
    "model",
    "extractor",
    "embedding_dim",
    "num_interests",
    "hidden_dim",
    "maxlen",
    "encoder_layers",
    "interest_tower",
    "dynamic_interests",
    "user_features",
    "selector",
    "aggregator",
    "num_concepts",
    "diffusion_timesteps",
    "noise_schedule",
)
"""Settings that decide what the model is, its tensors' shapes or what they mean: a run that
fine-tunes a folder (``init_from``) keeps the folder's."""
FINE_TUNE_ON = ("new", "all")
REMOVED_ITEMS = ("drop", "keep")
INIT_OPTIMIZER = ("fresh", "carry")
INFERENCE_SETTINGS = (
    "adaptive_k",
    "diversity_lambda",
    "quota_alpha",
    "quota_half_life",
    "diffusion_steps",
    "device",
)
"""Settings that act at inference, not in training: ``mirec evaluate --set`` may change them
for a trained model, and a resumed run may differ from its start in them."""


def changed_setting(
    config: Config, recorded: dict[str, Any], ignore: tuple[str, ...] = ()
) -> str | None:
    """The first setting of ``recorded`` (a run's settings as written to a file), outside
    ``ignore``, whose value differs from ``config``'s; None when they agree. Settings the
    record lacks (added to mirec since it was written) are not compared."""
    for name, value in recorded.items():
        if name in FIELD_TYPES and name not in ignore and getattr(config, name) != value:
            return name
    return None


def config_from_dict(values: dict[str, Any], source: str) -> Config:
    """A Config from a mapping, with unknown keys and wrong types reported against ``source``."""
    unknown = sorted(set(values) - set(FIELD_TYPES))
    if unknown:
        raise ConfigError(
            f"{source}: unknown setting {unknown[0]!r}; settings are: {', '.join(FIELD_TYPES)}"
        )
    return Config(**values)


def _coerce(key: str, value: Any) -> Any:
    """Check ``value`` against the field's annotation; ints (and YAML-1.1 strings such as
    ``3e-3``) are accepted for floats."""
    annotation = _HINTS[key]
    allowed = (
        typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    )
    if value is None and type(None) in allowed:
        return None
    for kind in allowed:
        if kind is bool and isinstance(value, bool):
            return value
        if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:
                raise ConfigError(f"setting {key}={shown(value)}: too large") from None
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
    raise ConfigError(f"setting {key}={shown(value)}: expected {names}")


def shown(value: Any) -> str:
    """``repr(value)``, cut short: a message stays one readable line."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --------------------------------------------------------------------------- validation

TASKS = ("retrieval", "ctr")
NEGATIVE_SAMPLING = ("uniform", "popularity", "in_batch")
ID_TYPES = ("int", "str")
DEVICE_FORMS = "auto, cpu, cuda, cuda:N (N = 0, 1, ...) or mps"

_MAX_SIZE = 2**31 - 1
_MAX_SEED = 2**63 - 1
MAX_DIVERSITY_LAMBDA = 1000.0
"""The largest ``diversity_lambda``. The greedy pick adds lambda times a count of up to
n - 1 categories to each float32 score (mirec.retrieval.diversity_greedy): at 1e3 the
count already decides every pick (ComiRec's own values are below 1), from about 1e4 the
scores' digits are lost to rounding (deep in a list, ties broken by the float32 grid), from
1e7 items come in index order, and near 1e36 the sum overflows to inf, where inf - inf is
NaN and one item is picked several times."""

MAX_QUOTA_ALPHA = 100.0
"""The largest ``quota_alpha``. At 100 an interest with 10% more of the history than the
next one already weighs 1.1^100, about 14,000 times as much: every slot the leader can fill,
which any larger alpha gives too (and inf or NaN would give no quota at all)."""
MAX_QUOTA_HALF_LIFE = 1e6
"""The largest ``quota_half_life``, in positions: far longer than any history, where every
item already counts the same."""


def validate(config: Config) -> None:
    """Every setting's range, and the few combinations that are impossible whatever the data;
    a ConfigError naming the setting, its value and what is allowed."""
    c = config
    one_of("task", c.task, TASKS)
    _text("model", c.model)
    for name in (
        "embedding_dim",
        "num_interests",
        "routing_iterations",
        "num_concepts",
        "batch_size",
        "max_epochs",
        "patience",
        "valid_every",
        "ctr_negatives",
    ):
        _int_range(name, getattr(c, name), 1)
    if c.valid_users is not None:
        _int_range("valid_users", c.valid_users, 1, none=True)
    for name in ("hidden_dim", "maxlen"):
        if getattr(c, name) is not None:
            _int_range(name, getattr(c, name), 1, none=True)
    _int_range("encoder_layers", c.encoder_layers, 0, limit=1024)
    _int_range("diffusion_timesteps", c.diffusion_timesteps, 1, limit=100_000)
    _int_range("diffusion_steps", c.diffusion_steps, 1, limit=c.diffusion_timesteps)
    from mirec.core.diffusion import SCHEDULES

    one_of("noise_schedule", c.noise_schedule, SCHEDULES)
    _number("diffusion_signal", c.diffusion_signal, low=0.0)
    if c.num_negatives is not None:
        _int_range("num_negatives", c.num_negatives, 0, none=True)
    for name in ("seed", "split_seed"):
        _int_range(name, getattr(c, name), 0, limit=_MAX_SEED)
    _number("dropout", c.dropout, low=0.0, high=1.0, high_open=True)
    for name in ("lr", "intention_temperature", "contrastive_temperature", "temperature"):
        _number(name, getattr(c, name), low=0.0, low_open=True)
    for name in (
        "routing_sigma",
        "label_aware_power",
        "aux_loss_weight",
        "weight_decay",
        "hard_negative_beta",
    ):
        _number(name, getattr(c, name), low=0.0)
    if c.diversity_lambda is not None:
        _number(
            "diversity_lambda", c.diversity_lambda, low=0.0, high=MAX_DIVERSITY_LAMBDA, none=True
        )
        if c.extractor == "popularity":
            # MostPopular's float64 counts are no interest vectors the greedy re-ranking can
            # score (it failed deep in torch), and its list is the same for everyone
            bad_setting(
                "diversity_lambda",
                c.diversity_lambda,
                "the popularity baseline (extractor=popularity) has no diversity-controllable "
                "list; leave it unset",
            )
    if c.quota_alpha is not None:
        _number("quota_alpha", c.quota_alpha, low=0.0, high=MAX_QUOTA_ALPHA, none=True)
        if c.diversity_lambda is not None:
            bad_setting(
                "quota_alpha",
                c.quota_alpha,
                f"the quota merge and diversity_lambda={c.diversity_lambda:g} are two ways to "
                "merge the interests' lists: set one of them",
            )
        if c.extractor == "popularity":
            bad_setting(
                "quota_alpha",
                c.quota_alpha,
                "the popularity baseline (extractor=popularity) has no interests to give "
                "quotas to; leave it unset",
            )
    if c.quota_half_life is not None:
        _number(
            "quota_half_life",
            c.quota_half_life,
            low=0.0,
            low_open=True,
            high=MAX_QUOTA_HALF_LIFE,
            none=True,
        )
        if c.quota_alpha is None:
            bad_setting(
                "quota_half_life",
                c.quota_half_life,
                "it weighs the quota merge's shares: set quota_alpha too",
            )
    if c.max_train_minutes is not None:
        _number("max_train_minutes", c.max_train_minutes, low=0.0, low_open=True, none=True)
    one_of("negative_sampling", c.negative_sampling, NEGATIVE_SAMPLING)
    if isinstance(c.sparse_items, str) and c.sparse_items != "auto":
        bad_setting("sparse_items", c.sparse_items, "must be true, false or auto")
    if c.sparse_items is True and c.weight_decay > 0:
        bad_setting(
            "sparse_items",
            True,
            f"the row-wise Adam of a sparse item table has no weight decay: set "
            f"weight_decay=0 (it is {c.weight_decay:g}) or sparse_items=false",
        )
    if c.negative_sampling == "in_batch" and c.batch_size < 2 and not c.sequence_training:
        bad_setting(
            "batch_size",
            c.batch_size,
            "must be >= 2 with negative_sampling=in_batch (the batch's other targets are the "
            "negatives: one example has none)",
        )
    _text("dataset", c.dataset)
    if c.init_from is not None:
        _text("init_from", c.init_from)
    one_of("fine_tune_on", c.fine_tune_on, FINE_TUNE_ON)
    one_of("removed_items", c.removed_items, REMOVED_ITEMS)
    one_of("init_optimizer", c.init_optimizer, INIT_OPTIMIZER)
    for name, default in (("removed_items", "drop"), ("init_optimizer", "fresh")):
        if c.init_from is None and getattr(c, name) != default:
            bad_setting(
                name, getattr(c, name), "acts on the folder a run fine-tunes: give init_from"
            )
    if c.removed_items == "keep" and c.task == "ctr":
        bad_setting(
            "removed_items",
            "keep",
            "a CTR run draws its negatives from the catalogue, where a kept item, with no "
            "behaviour in the new log, would only ever be a negative: use removed_items=drop",
        )
    for name in ("columns", "sep"):
        if getattr(c, name) == "":
            bad_setting(name, "", "must not be empty (leave it unset for the default)")
    if c.id_type is not None:
        one_of("id_type", c.id_type, ID_TYPES, none=True)
    _check_device(c.device)
    one_of("precision", c.precision, PRECISIONS)
    one_of("stored_users", c.stored_users, STORED_USERS)
    if c.stored_users != "histories" and c.user_features:
        bad_setting(
            "stored_users",
            c.stored_users,
            "user_features=true reads each known user's stored profile: it needs "
            "stored_users=histories",
        )


def bad_setting(name: str, value: Any, allowed: str) -> typing.NoReturn:
    raise ConfigError(f"setting {name}={shown(value)}: {allowed}")


def _int_range(
    name: str, value: int, low: int, *, limit: int = _MAX_SIZE, none: bool = False
) -> None:
    if not low <= value <= limit:
        what = f"an integer from {low} to {limit}" if value > limit else f"an integer >= {low}"
        bad_setting(name, value, f"must be {what}" + (", or unset" if none else ""))


def _number(
    name: str,
    value: float,
    *,
    low: float,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    none: bool = False,
) -> None:
    too_low = value <= low if low_open else value < low
    too_high = high is not None and (value >= high if high_open else value > high)
    if math.isfinite(value) and not too_low and not too_high:
        return
    what = f"> {low:g}" if low_open else f">= {low:g}"
    if high is not None:
        what = f"in [{low:g}, {high:g}{')' if high_open else ']'}"
    bad_setting(name, value, f"must be a finite number {what}" + (", or unset" if none else ""))


def one_of(
    name: str, value: str, allowed: tuple[str, ...], context: str = "", *, none: bool = False
) -> None:
    if value not in allowed:
        known = ", ".join(allowed) + (", or unset" if none else "")
        where = f" (for {context})" if context else ""
        bad_setting(name, value, f"must be one of {known}{where}")


def _text(name: str, value: str) -> None:
    if not value.strip():
        bad_setting(name, value, "must not be empty")


PRECISIONS = ("fp32", "bf16")
STORED_USERS = ("histories", "ids", "none")
"""What a model folder's ``users.parquet`` keeps (``Config.stored_users``)."""

_DEVICE = re.compile(r"(auto|cpu|mps|cuda(:(0|[1-9][0-9]{0,3}))?)")


def _check_device(value: str) -> None:
    if not _DEVICE.fullmatch(value):
        bad_setting("device", value, f"must be {DEVICE_FORMS}")
