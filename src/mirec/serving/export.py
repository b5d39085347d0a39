"""Export a trained retrieval model for serving without mirec: the item vectors, every known
user's interests, and the user tower as ONNX.

``mirec export --model-dir RUN --out DIR`` writes into ``DIR``, whole or not at all:

* ``items.parquet``: ``item`` (the raw id, in the source log's type) and ``vector`` (d
  float32), one row per item in the order of ``Recommender.info.item_ids``. A history holds
  item indices: an item's index is its row + 1, and 0 is padding.
* ``user_interests.parquet``: ``user`` (raw id), ``interest`` (k, its slot among the K) and
  ``vector`` (d float32) for every user of the training log, computed from the stored
  history that ``Recommender.recommend(user=...)`` serves them with. Only active interests are
  written: a user with MIND's dynamic K or an adaptive-K rule has fewer than K rows.
* ``user_tower.onnx``: ``history`` (B, L) int64 -> ``interests`` (B, K, d) float32 and
  ``active`` (B, K) bool, B dynamic; with MIND's user features (``user_features: true``)
  also a ``profile`` (B, F) int64 input of the user's feature codes.
* ``export.json``: the manifest a serving team needs to use these without mirec.

The user tower computes :meth:`~mirec.models.interest_model.InterestModel.forward`, the
vectors that search the catalogue: the K interests, or the one fused vector (K = 1) of a
model with representation aggregation. ``active`` is the per-user activity (MIND's dynamic
K, an adaptive-K rule), all True for a model without one.

Before anything is kept, onnxruntime runs the exported file on real histories of the
folder (stored histories of users from the shortest to the longest, and prefixes of every
length from 1 to maxlen), at a batch size other than the one traced; the export is refused
when an interest differs from PyTorch's by more than :data:`TOLERANCE` or an active flag
differs. The tower is exported with ``torch.onnx.export``'s default dynamo exporter, which
handles every retrieval extractor (GRU4Rec reads its unpacked window during export, see
:mod:`mirec.extractors.gru`); the TorchScript exporter cannot export the causal transformer
blocks of SASRec for onnxruntime (a boolean EyeLike it has no kernel for).
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn

from mirec.atomic import (
    kept_folders,
    refuse_foreign_contents,
    refuse_unsafe_target,
    staged_folder,
    write_json_atomic,
)
from mirec.core.contracts import Extracted
from mirec.core.extras import require
from mirec.data.examples import gather_histories
from mirec.data.sequences import Sequences
from mirec.errors import MirecError
from mirec.models.folder import LoadedModel, load_model
from mirec.models.interest_model import InterestModel
from mirec.version import __version__

ITEMS_FILE, USER_INTERESTS_FILE = "items.parquet", "user_interests.parquet"
TOWER_FILE, MANIFEST_FILE = "user_tower.onnx", "export.json"
EXPORT_MODULES = ("onnx", "onnxscript", "onnxruntime")
"""What torch.onnx.export and the check against PyTorch import (the export extra)."""
TOWER_WEIGHTS_FILE = f"{TOWER_FILE}.data"
EXPORT_FILES = (ITEMS_FILE, USER_INTERESTS_FILE, TOWER_FILE, TOWER_WEIGHTS_FILE, MANIFEST_FILE)
"""Every file an export folder may hold; a folder holding others is never replaced."""
"""Where the exporter puts the tower's weights when they near protobuf's 2 GB limit."""
FORMAT, FORMAT_VERSION = "mirec-export", 1
INPUTS, OUTPUTS = ("history", "profile"), ("interests", "active")
TOLERANCE = 1e-4
"""The largest |onnxruntime - PyTorch| an interest may show on the check histories."""
TRACE_BATCH = 2
"""Histories in the example batch the exporter traces; the batch axis stays dynamic, and the
check runs a larger batch (a batch of 1 would be specialised by the tracer)."""
CHECK_USERS = 64
"""Users whose stored histories check the export, spread over the range of lengths."""
USERS_PER_BATCH = 4096
"""Users per forward pass when computing every user's interests."""
SCORE_RULES = {
    "max": "score(user, item) = max over the user's active k of <interests[k], vector(item)>",
    "mean": "score(user, item) = mean over the user's active k of <interests[k], vector(item)>",
}
"""How a score-level aggregator ranks the catalogue with the interests (``Config.aggregator``)."""
FUSED_RULE = "score(user, item) = <interests[0], vector(item)>"
"""A model with representation aggregation searches with its one fused vector."""


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_model` wrote: the folder and its manifest (``export.json``)."""

    folder: Path
    manifest: dict[str, Any]

    @property
    def max_abs_diff(self) -> float:
        """The largest |onnxruntime - PyTorch| measured on the check histories."""
        return float(self.manifest["check"]["max_abs_diff"])


class UserTower(nn.Module):
    """What ``user_tower.onnx`` computes: history (B, L) [, profile (B, F)] -> interests
    (B, K, d) and active (B, K), :meth:`InterestModel.forward` with the active flags made
    explicit."""

    def __init__(self, model: InterestModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, history: torch.Tensor, profile: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return with_active(self.model(history, profile_codes=profile))


def with_active(extracted: Extracted) -> tuple[torch.Tensor, torch.Tensor]:
    """(interests (B, K, d), active (B, K) bool): all True when the model has no per-user
    activity."""
    interests, active = extracted.interests, extracted.active
    if active is None:
        active = torch.ones(interests.shape[:2], dtype=torch.bool, device=interests.device)
    return interests, active


def export_folder(checkpoint: Path, out: Path, *, overwrite: bool = False) -> ExportResult:
    """Export the model folder ``checkpoint`` (a ``mirec train`` output) into ``out``, as
    :func:`export_model` does; the model is run on the CPU."""
    refuse_unsafe_target(
        out, kept_folders((checkpoint, "the model folder")), "export somewhere else"
    )
    return export_model(
        load_model(checkpoint, device=torch.device("cpu")), out, overwrite=overwrite
    )


def export_model(loaded: LoadedModel, out: Path, *, overwrite: bool = False) -> ExportResult:
    """Write the export folder of ``loaded`` (see the module docstring) to ``out``, whole or
    not at all: an existing non-empty ``out`` is replaced only with ``overwrite``, only
    when it holds an earlier export and nothing else, and never when it is a symbolic
    link or holds or lies in a folder that must be kept (the data or cache folder, the
    current or home folder: :func:`~mirec.atomic.kept_folders`). A model with no user
    tower, an exporter failure or an ONNX file that disagrees with PyTorch is a
    MirecError, and then ``out`` is left as it was. The model is exported from the CPU:
    ``loaded.model`` is moved there, in eval mode."""
    for module in EXPORT_MODULES:
        require(module, "the ONNX export")
    model = _user_tower_model(loaded)
    score = _score_rule(loaded, model)
    # replacing out must never take the data with it (the model folder: export_folder)
    refuse_unsafe_target(out, kept_folders(), "export somewhere else")
    if out.exists() and not out.is_dir():
        raise MirecError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise MirecError(
            f"{out}: already exists and is not empty; pass --overwrite (overwrite=True) to "
            "replace it"
        )
    # replaced whole: only an earlier export (`--out data --overwrite` deleted a data folder)
    refuse_foreign_contents(out, set(EXPORT_FILES).__contains__, MANIFEST_FILE, "a mirec export")
    # the tower is checked on stored histories, and the export lists every known user's
    # interests
    loaded.data.require_histories("mirec export")
    model = model.to("cpu").eval()
    seqs, maxlen = loaded.data.sequences, loaded.data.maxlen
    check = _check_batch(seqs, maxlen, model.uses_user_rows)
    with staged_folder(out) as staging:
        tower = UserTower(model).eval()
        example = check.inputs(slice(0, TRACE_BATCH))
        opset = _export_onnx(tower, example, staging / TOWER_FILE, loaded)
        checked = _compare(staging / TOWER_FILE, model, check, loaded.config.model)
        _write_items(staging / ITEMS_FILE, seqs.item_ids, model.item_vectors())
        rows = _write_user_interests(staging / USER_INTERESTS_FILE, model, seqs, maxlen)
        files = {
            "items": ITEMS_FILE,
            "user_interests": USER_INTERESTS_FILE,
            "user_tower": TOWER_FILE,
        }
        if (staging / TOWER_WEIGHTS_FILE).is_file():
            files["user_tower_weights"] = TOWER_WEIGHTS_FILE
        manifest = _manifest(loaded, model, checked, rows, score, files, opset)
        write_json_atomic(staging / MANIFEST_FILE, manifest)
    return ExportResult(out, manifest)


def _user_tower_model(loaded: LoadedModel) -> InterestModel:
    """The retrieval model of ``loaded``, or a MirecError saying why it has no user tower."""
    config = loaded.config
    if config.task != "retrieval":
        raise MirecError(
            f"cannot export {config.model}: it is a {config.task} model (task: {config.task}) "
            "that scores a candidate it is given against the history; it has no user tower "
            "that maps a history to interests"
        )
    if not isinstance(loaded.model, InterestModel):
        raise MirecError(
            f"cannot export {config.model}: the popularity baseline has no user tower (every "
            "user gets the same most popular items)"
        )
    if config.adaptive_k is not None and config.adaptive_k.startswith("cluster:"):
        raise MirecError(
            f"cannot export {config.model} with adaptive_k={config.adaptive_k}: the cluster "
            "rule runs k-means per user, which ONNX cannot express; export it without the "
            "rule (another adaptive_k, or none)"
        )
    if config.aggregator == "mixture":
        raise MirecError(
            f"cannot export {config.model}: aggregator 'mixture' scores with each interest's "
            "log-partition over the whole catalogue, which the exported tower does not output; "
            "serve it with mirec (mirec serve, Recommender)"
        )
    return loaded.model


@dataclass(frozen=True)
class _CheckBatch:
    """Real histories of the model folder to check the export with, and their users."""

    histories: torch.Tensor
    """(n, L) left-padded item indices."""
    users: torch.Tensor
    """(n,) user rows."""
    profiles: torch.Tensor | None
    """(n, F) the users' profile codes, when the model takes them."""

    def inputs(self, rows: slice) -> tuple[torch.Tensor, ...]:
        """The user tower's inputs for ``rows``: history [, profile]."""
        if self.profiles is None:
            return (self.histories[rows],)
        return self.histories[rows], self.profiles[rows]


def _check_batch(seqs: Sequences, maxlen: int, with_profiles: bool) -> _CheckBatch:
    """The stored histories of up to :data:`CHECK_USERS` users spread from the shortest
    history to the longest, and the prefixes of every length 1..maxlen of the median and the
    longest user's, so that a rule on the history length (MIND's K'_u) is checked at every
    length."""
    by_length = np.argsort(seqs.lengths, kind="stable")
    spread = np.linspace(0, len(by_length) - 1, min(CHECK_USERS, len(by_length)))
    users = by_length[np.unique(spread.round().astype(np.int64))]
    prefixed = by_length[[len(by_length) // 2, -1]]
    sizes = np.minimum(seqs.lengths[prefixed], maxlen)
    prefix_users = np.repeat(prefixed, sizes)
    prefix_lengths = np.concatenate([np.arange(1, n + 1) for n in sizes])
    rows = np.concatenate([users, prefix_users])
    ends = np.concatenate([seqs.offsets[users + 1], seqs.offsets[prefix_users] + prefix_lengths])
    histories = gather_histories(
        torch.from_numpy(seqs.items),
        torch.from_numpy(seqs.offsets[rows]),
        torch.from_numpy(ends),
        maxlen,
    )
    profiles = None
    if with_profiles:
        assert seqs.user_feature_codes is not None  # the model was built with them
        profiles = torch.from_numpy(seqs.user_feature_codes[rows])
    return _CheckBatch(histories, torch.from_numpy(rows), profiles)


def _export_onnx(
    tower: UserTower, example: tuple[torch.Tensor, ...], path: Path, loaded: LoadedModel
) -> int:
    """``torch.onnx.export`` of ``tower`` to ``path`` with a dynamic batch axis; returns the
    file's ONNX opset."""
    batch = torch.export.Dim("batch")
    try:
        with _quiet_exporter():
            program = torch.onnx.export(
                tower,
                example,
                input_names=list(INPUTS[: len(example)]),
                output_names=list(OUTPUTS),
                dynamic_shapes=tuple({0: batch} for _ in example),
                verbose=False,
            )
    except torch.onnx.errors.OnnxExporterError as err:
        first = re.sub(r"\x1b\[[0-9;]*m", "", str(err).strip().splitlines()[0])  # no colours
        raise MirecError(
            f"cannot export {loaded.config.model}: torch.onnx.export failed on its "
            f"{loaded.config.extractor} extractor: {first}"
        ) from err
    assert program is not None  # the dynamo exporter returns the program it made
    # one file, unless the weights near protobuf's 2 GB limit: then the exporter puts them
    # in TOWER_WEIGHTS_FILE beside it (export.json lists it)
    program.save(str(path), external_data=False)
    return int(program.model.opset_imports[""])


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's progress, its notes on operators mirec never uses
    (torchvision's) and its deprecation warnings, so ``mirec export`` prints only its own
    lines: whether the file is right is decided by the check against PyTorch that follows.
    Errors still raise."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "onnx_ir")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


@dataclass(frozen=True)
class _Checked:
    """What the check of an exported file found."""

    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    """The file's inputs and outputs, as :func:`_tensor_spec` lists them."""
    max_abs_diff: float
    histories: int
    num_interests: int
    dim: int
    per_user_activity: bool
    """True when the model switches interests off per user (its ``active`` can be False)."""


def _compare(path: Path, model: InterestModel, check: _CheckBatch, name: str) -> _Checked:
    """Run ``path`` with onnxruntime on the check histories and compare with PyTorch (which
    reads the profiles through the user rows, as serving does); a MirecError when they
    differ by more than :data:`TOLERANCE` or in an active flag."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # PyTorch's share of the CPU
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feeds = dict(zip(INPUTS, (x.numpy() for x in check.inputs(slice(None))), strict=False))
    got_interests, got_active = session.run(list(OUTPUTS), feeds)
    with torch.no_grad():
        extracted = model(check.histories, check.users)
    interests, active = with_active(extracted)
    diff = float(np.abs(got_interests.astype(np.float64) - interests.double().numpy()).max())
    n = len(check.histories)
    if not diff <= TOLERANCE:  # NaN refuses too
        raise MirecError(
            f"cannot export {name}: onnxruntime's interests differ from PyTorch's by up to "
            f"{diff:.3g} (tolerance {TOLERANCE:g}) on {n} real histories; nothing was written"
        )
    flipped = int((got_active != active.numpy()).sum())
    if flipped:
        raise MirecError(
            f"cannot export {name}: onnxruntime switches {flipped} interest(s) on or off "
            f"unlike PyTorch on {n} real histories; nothing was written"
        )
    return _Checked(
        inputs=[_tensor_spec(arg) for arg in session.get_inputs()],
        outputs=[_tensor_spec(arg) for arg in session.get_outputs()],
        max_abs_diff=diff,
        histories=n,
        num_interests=interests.shape[1],
        dim=interests.shape[2],
        per_user_activity=extracted.active is not None,
    )


def _tensor_spec(arg: Any) -> dict[str, Any]:
    """An onnxruntime input or output as the manifest lists it: name, dtype, shape (the
    dynamic batch axis by its name)."""
    return {
        "name": arg.name,
        "dtype": arg.type.removeprefix("tensor(").removesuffix(")"),
        "shape": list(arg.shape),
    }


def _vectors(array: np.ndarray) -> pa.FixedSizeListArray:
    """(n, d) -> a Parquet column of n fixed-size float32 lists."""
    flat = pa.array(np.ascontiguousarray(array, dtype=np.float32).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, array.shape[1])


def _write_items(path: Path, item_ids: np.ndarray, vectors: torch.Tensor) -> None:
    table = pa.table({"item": pa.array(item_ids), "vector": _vectors(_numpy(vectors))})
    pq.write_table(table, path)


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().float().cpu().numpy()


def _write_user_interests(path: Path, model: InterestModel, seqs: Sequences, maxlen: int) -> int:
    """Every user's active interests from their stored history (its last ``maxlen`` items,
    what ``Recommender.recommend(user=...)`` reads), in batches; returns the rows written."""
    items, offsets = torch.from_numpy(seqs.items), torch.from_numpy(seqs.offsets)
    user_type = pa.array(seqs.user_ids[:1]).type
    dim = model.item_embedding.embedding_dim
    schema = pa.schema(
        [("user", user_type), ("interest", pa.int32()), ("vector", pa.list_(pa.float32(), dim))]
    )
    written = 0
    with pq.ParquetWriter(path, schema) as writer:
        for lo in range(0, seqs.n_users, USERS_PER_BATCH):
            users = torch.arange(lo, min(lo + USERS_PER_BATCH, seqs.n_users))
            histories = gather_histories(items, offsets[users], offsets[users + 1], maxlen)
            with torch.no_grad():
                interests, active = with_active(model(histories, users))
            row, slot = active.nonzero(as_tuple=True)
            table = pa.table(
                {
                    "user": pa.array(seqs.user_ids[users[row].numpy()]),
                    "interest": pa.array(slot.numpy().astype(np.int32)),
                    "vector": _vectors(_numpy(interests[row, slot])),
                },
                schema=schema,
            )
            writer.write_table(table)
            written += len(table)
    return written


def _score_rule(loaded: LoadedModel, model: InterestModel) -> str:
    if model.fuse is not None:
        return f"{FUSED_RULE} (the {loaded.config.aggregator} aggregation fuses the interests)"
    rule = SCORE_RULES.get(loaded.config.aggregator)
    if rule is None:
        raise MirecError(
            f"cannot export {loaded.config.model}: export.json cannot say how aggregator "
            f"{loaded.config.aggregator!r} scores items (known: {', '.join(SCORE_RULES)})"
        )
    return rule


def _manifest(
    loaded: LoadedModel,
    model: InterestModel,
    checked: _Checked,
    interest_rows: int,
    score: str,
    files: dict[str, str],
    opset: int,
) -> dict[str, Any]:
    import onnxruntime as ort

    config, data = loaded.config, loaded.data
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "mirec_version": __version__,
        "model": config.model,
        "dataset": config.dataset,
        "extractor": config.extractor,
        "aggregator": config.aggregator,
        "num_interests": checked.num_interests,
        "embedding_dim": checked.dim,
        "maxlen": data.maxlen,
        "n_items": data.sequences.n_items,
        "n_users": data.sequences.n_users,
        "n_user_interests": interest_rows,
        "item_id_type": data.meta["item_id_type"],
        "user_id_type": data.meta["user_id_type"],
        "files": files,
        "item_index": (
            f"an item's index is its row in {ITEMS_FILE} + 1 (the raw id in column item); "
            "0 is padding"
        ),
        "history": (
            f"the user's most recent {data.maxlen} known items as indices, oldest first, "
            "left-padded with 0 (the most recent item in the last column)"
        ),
        "active": (
            "active[b, k] is false for an interest user b does not have (dynamic or adaptive "
            f"K): leave it out of the score; {USER_INTERESTS_FILE} holds the active ones only"
            if checked.per_user_activity
            else "always true: this model has no per-user number of interests"
        ),
        "score": score,
        "onnx_opset": opset,
        "inputs": checked.inputs,
        "outputs": checked.outputs,
        "user_features": None,
        "check": {
            "max_abs_diff": checked.max_abs_diff,
            "tolerance": TOLERANCE,
            "histories": checked.histories,
            "traced_batch": TRACE_BATCH,
            "torch": torch.__version__,
            "onnxruntime": ort.__version__,
        },
    }
    if model.uses_user_rows:
        manifest["user_features"] = {
            **data.meta["user_features"],
            "profile": (
                "profile[b, f] is user b's code for feature names[f]: 1..cardinalities[f] for "
                "the values listed feature after feature in values, 0 for unknown"
            ),
        }
    if config.diversity_lambda is not None:
        manifest["not_exported"] = (
            f"diversity_lambda={config.diversity_lambda}: mirec re-ranks each list for "
            "category diversity; the score above is the model's own"
        )
    if config.quota_alpha is not None:
        manifest["not_exported"] = (
            f"quota_alpha={config.quota_alpha}: mirec gives each interest its quota of each "
            "list (mirec.retrieval.quota); the score above is the model's own"
        )
    return manifest
