"""A model folder that stands alone: everything needed to load a trained model and recommend,
with no dataset and no data directory present.

``mirec train`` writes, beside ``config.yaml`` and ``metrics.json``:

* ``model.safetensors``: the weights (never a pickle);
* ``model.json``: the format version, the run's identity (task, model, dataset, maxlen,
  split seed) and settings, the raw id types, and the vocabularies of categories, behaviour
  types and user-profile features;
* ``items.parquet``: one row per item index 1..N in order: the raw ``item`` id (the source
  log's type), its training ``count`` (popularity: MostPopular, tail statistics, the
  cold-start fallback), and where the dataset has them its ``title`` and ``categories``
  (codes into ``model.json``'s category names);
* ``users.parquet``: one row per user of the filtered log, in the protocol's order: the raw
  ``user`` id, the whole chronological ``items`` sequence (item indices), and MIND's
  ``profile`` codes where the dataset has user features. The setting ``stored_users``
  chooses how much of this a folder keeps: with ``histories`` (the default) sharing the
  folder shares the training log's behaviour; ``ids`` keeps the raw ids with empty
  histories, ``none`` no rows;
* ``optimizer.safetensors``, with ``keep_optimizer_state`` only: the optimizer's state after
  the last epoch, by parameter name, with the digest of ``model.safetensors`` it goes with
  (what a fine-tune with ``init_optimizer=carry`` starts from:
  :mod:`mirec.training.checkpoint`). Loading a model never reads it.

From these the filtered :class:`~mirec.data.sequences.Sequences` of the run are rebuilt
exactly, so a known user is served from their stored history and a run can be re-evaluated
on the protocol's split without the source log (both need ``stored_users=histories``).
Loading reads JSON, YAML (safe), Parquet and safetensors: nothing is ever unpickled. It
checks that the files belong together (the settings of ``config.yaml`` against those
recorded in ``model.json`` and ``metrics.json``, the weights' names, shapes and dtypes
against the model they build, the tables against ``model.json``); anything missing,
unreadable or from another run is a ConfigError naming the file.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import yaml
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from mirec.atomic import atomic_path, write_json_atomic, write_text_atomic
from mirec.core.config import INFERENCE_SETTINGS, Config, changed_setting, config_from_dict
from mirec.core.device import resolve_device
from mirec.core.layout import (  # noqa: F401 - the folder's file names, imported from here
    CONFIG_FILE,
    EVALUATION_DIR,
    FOLDER_FILES,
    ITEMS_FILE,
    METRICS_FILE,
    MODEL_FILE,
    OPTIMIZER_FILE,
    USERS_FILE,
    WEIGHTS_FILE,
)
from mirec.data.sequences import Sequences
from mirec.errors import ConfigError
from mirec.models.build import build_ctr_model, build_model
from mirec.version import __version__

FORMAT, FORMAT_VERSION = "mirec-model", 1
IDENTITY = ("task", "model", "dataset", "split_seed")
"""The settings every ``model.json`` records; newer ones record all settings (``config``)."""
META_KEYS = (*IDENTITY, "maxlen", "n_items", "n_users", "item_id_type", "user_id_type")
"""What ``model.json`` must hold."""
DIGEST_KEY = "mirec.sha256"
"""The safetensors metadata entry with the digest of the weights (:func:`weights_digest`)."""


@dataclass(frozen=True)
class FolderData:
    """What a model folder says about its data: the run's sequences, the training
    popularity of each item, and the identity recorded in ``model.json``."""

    sequences: Sequences
    item_counts: np.ndarray
    """(N + 1,) training interactions per item index; index 0 (padding) is 0."""
    meta: dict[str, Any]
    folder: Path | None = None

    @property
    def maxlen(self) -> int:
        return int(self.meta["maxlen"])

    @property
    def stored_users(self) -> str:
        """What ``users.parquet`` keeps (``Config.stored_users``); folders written before
        the setting keep histories."""
        return str(self.meta.get("stored_users", "histories"))

    def require_histories(self, purpose: str, instead: str = "") -> None:
        """A ConfigError unless the folder stores its users' histories, which ``purpose``
        (what the caller is about to do) reads; ``instead`` says what else to do."""
        if self.stored_users == "histories":
            return
        keeps = "only user ids" if self.stored_users == "ids" else "no users"
        raise ConfigError(
            f"{self.folder or 'the model folder'}: {purpose} reads the users' stored histories, "
            f"and this folder keeps {keeps} (stored_users={self.stored_users}); "
            + (f"{instead}, or " if instead else "")
            + "train with --set stored_users=histories to keep them"
        )


def write_folder_data(
    folder: Path, config: Config, sequences: Sequences, item_counts: np.ndarray, maxlen: int
) -> None:
    """Write what a model folder holds beside its weights and metrics into ``folder``:
    ``config.yaml`` (every resolved setting: training again from it repeats the run),
    ``model.json``, ``items.parquet`` and ``users.parquet``. A run writes them before it
    trains (:meth:`mirec.run_folder.RunFolder.write_inputs`), ``Recommender.save`` when it
    copies a model."""
    write_text_atomic(folder / CONFIG_FILE, yaml.safe_dump(config.to_dict(), sort_keys=False))
    seqs = sequences
    items: dict[str, Any] = {
        "item": pa.array(seqs.item_ids),
        "count": pa.array(np.asarray(item_counts[1:], dtype=np.int64)),
    }
    if seqs.item_titles is not None:
        items["title"] = pa.array(seqs.item_titles.astype(str))
    if seqs.item_category_offsets is not None and seqs.item_category_codes is not None:
        items["categories"] = _lists(seqs.item_category_offsets, seqs.item_category_codes)
    features = None
    if seqs.user_feature_codes is not None:
        features = {
            "names": _strings(seqs.user_feature_names),
            "cardinalities": [int(c) for c in seqs.user_feature_cardinalities],
            "values": _strings(seqs.user_feature_values),
        }
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "mirec_version": __version__,
        "task": config.task,
        "model": config.model,
        "dataset": config.dataset,
        "maxlen": maxlen,
        "split_seed": config.split_seed,
        "config": config.to_dict(),
        "n_items": seqs.n_items,
        "n_users": seqs.n_users,
        "n_interactions": seqs.n_interactions,
        "item_id_type": _id_type(seqs.item_ids),
        "user_id_type": _id_type(seqs.user_ids),
        "category_names": _strings(seqs.category_names),
        "behavior_names": _strings(seqs.behavior_names),
        "user_features": features,
    }
    meta["stored_users"] = config.stored_users
    _write_parquet(folder / ITEMS_FILE, pa.table(items))
    batches = _user_tables(seqs, config.stored_users)
    first = next(batches)  # a run's sequences hold at least one user
    with (
        atomic_path(folder / USERS_FILE) as tmp,
        pq.ParquetWriter(tmp, first.schema, write_page_checksum=True) as writer,
    ):
        writer.write_table(first)
        for batch in batches:
            writer.write_table(batch)
    write_json_atomic(folder / MODEL_FILE, meta)


def _user_tables(
    seqs: Sequences, stored: str = "histories", interactions: int = 1 << 24
) -> Iterator[pa.Table]:
    """The rows of ``users.parquet``, about ``interactions`` interactions at a time: a log
    larger than memory is written from its memory-mapped arrays without a copy of them
    (and each batch's list offsets fit the int32 of a Parquet list). ``stored``: what to
    keep (``Config.stored_users``); ``ids`` and ``none`` write the same columns, so a
    folder reads the same way whatever it keeps."""
    if stored != "histories":
        users = seqs.user_ids if stored == "ids" else seqs.user_ids[:0]
        no_items = np.zeros(len(users) + 1, dtype=np.int64)
        yield pa.table({"user": pa.array(users), "items": _lists(no_items, seqs.items[:0])})
        return
    offsets = seqs.offsets
    cuts = np.searchsorted(offsets, np.arange(interactions, offsets[-1], interactions))
    bounds = np.unique(np.concatenate([[0], cuts, [seqs.n_users]]))
    for lo, hi in itertools.pairwise(bounds):
        columns = {
            "user": pa.array(seqs.user_ids[lo:hi]),
            "items": _lists(
                offsets[lo : hi + 1] - offsets[lo], seqs.items[offsets[lo] : offsets[hi]]
            ),
        }
        if seqs.user_feature_codes is not None:
            codes = seqs.user_feature_codes[lo:hi]
            width = codes.shape[1]
            columns["profile"] = _lists(
                np.arange(0, width * len(codes) + 1, width), codes.reshape(-1)
            )
        yield pa.table(columns)


def read_folder_data(folder: Path) -> FolderData:
    """The sequences, item popularity and ``model.json`` of a model folder."""
    meta = read_meta(folder)
    items = _read_parquet(folder / ITEMS_FILE)
    users = _read_parquet(folder / USERS_FILE)
    try:
        offsets, flat = _flat(users.column("items"), np.int32)
        item_ids = _ids(items.column("item"), meta["item_id_type"])
        fields: dict[str, Any] = {
            "user_ids": _ids(users.column("user"), meta["user_id_type"]),
            "offsets": offsets,
            "items": flat,
            "item_ids": item_ids,
        }
        if "title" in items.column_names:
            fields["item_titles"] = np.asarray(items.column("title").to_pylist(), dtype=str)
        if "categories" in items.column_names:
            offsets, codes = _flat(items.column("categories"))
            fields["item_category_offsets"], fields["item_category_codes"] = offsets, codes
            fields["category_names"] = np.asarray(meta["category_names"], dtype=str)
        if meta.get("behavior_names") is not None:
            fields["behavior_names"] = np.asarray(meta["behavior_names"], dtype=str)
        features = meta.get("user_features")
        if features is not None:
            _, codes = _flat(users.column("profile"))
            fields["user_feature_codes"] = codes.reshape(len(fields["user_ids"]), -1)
            fields["user_feature_names"] = np.asarray(features["names"], dtype=str)
            fields["user_feature_cardinalities"] = np.asarray(
                features["cardinalities"], dtype=np.int64
            )
            fields["user_feature_values"] = np.asarray(features["values"], dtype=str)
        counts = np.concatenate([[0], items.column("count").to_numpy()]).astype(np.int64)
    except (KeyError, ValueError, TypeError, pa.ArrowException) as err:
        raise ConfigError(
            f"{folder}: the model folder's tables do not fit together: {err}"
        ) from err
    seqs = Sequences(**fields)
    data = FolderData(seqs, counts, meta, folder)
    users_held = 0 if data.stored_users == "none" else meta["n_users"]
    if seqs.n_items != meta["n_items"] or seqs.n_users != users_held:
        raise ConfigError(
            f"{folder / MODEL_FILE}: says {meta['n_items']} items and {users_held} stored users, "
            f"but the tables hold {seqs.n_items} and {seqs.n_users}"
        )
    if data.stored_users != "histories" and len(seqs.items):
        raise ConfigError(
            f"{folder / USERS_FILE}: holds histories, but {MODEL_FILE} says stored_users="
            f"{data.stored_users}; the files come from different runs"
        )
    if len(seqs.items) and (seqs.items.min() < 1 or seqs.items.max() > seqs.n_items):
        raise ConfigError(f"{folder / USERS_FILE}: item indices outside 1..{seqs.n_items}")
    return data


def read_meta(folder: Path) -> dict[str, Any]:
    """``model.json`` of ``folder``, checked; a folder written before model folders stood
    alone gets an error that says how to re-create it."""
    if not folder.is_dir():
        raise ConfigError(f"{folder}: no such model folder")
    path = folder / MODEL_FILE
    if not path.is_file():
        if (folder / CONFIG_FILE).is_file():
            raise ConfigError(
                f"{folder}: no {MODEL_FILE}: this run was written before mirec 0.2, whose model "
                "folders load without their dataset; re-create it with `mirec train --config "
                f"{folder / CONFIG_FILE} --output-dir {folder} --data-dir DATA`"
            )
        raise ConfigError(f"{folder}: not a model folder (no {MODEL_FILE}); is it the output "
                          "of `mirec train`?")  # fmt: skip
    try:
        meta = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ConfigError(f"{path}: not a mirec model description")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ConfigError(
            f"{path}: model folder format {meta.get('format_version')!r}; this mirec reads "
            f"format {FORMAT_VERSION} (re-create the folder with this version's `mirec train`)"
        )
    missing = [key for key in META_KEYS if key not in meta]
    if missing:
        raise ConfigError(f"{path}: lacks {missing[0]!r}; the file is damaged")
    return meta


def read_config(folder: Path) -> Config:
    """The run's resolved config, ``config.yaml``; a missing or unreadable file, or settings
    that are not valid, are a ConfigError naming it."""
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(f"{path}: missing; is {folder} the output of `mirec train`?")
    try:
        stored = yaml.safe_load(path.read_text()) or {}
    except (UnicodeDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: not a valid YAML file of settings") from err
    if not isinstance(stored, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, got {type(stored).__name__}")
    try:
        return config_from_dict(stored, source=str(path))
    except ConfigError as err:
        message = str(err)  # an unknown setting names the file already, a bad value does not
        raise ConfigError(
            message if message.startswith(str(path)) else f"{path}: {message}"
        ) from None


def host_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s state dict as contiguous CPU tensors (copies), ready for safetensors."""
    return {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}


def weights_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of the tensors' names, dtypes, shapes and bytes: safetensors checks its
    header, not its data, so a flipped bit in the weights would load without a word."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].contiguous()
        digest.update(f"{name} {tensor.dtype} {list(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_weights(state: torch.nn.Module | dict[str, torch.Tensor], path: Path) -> None:
    """Write a model's state dict (or ``state`` itself) as safetensors with the digest of
    its tensors in the metadata, whole or not at all."""
    tensors = host_state(state) if isinstance(state, torch.nn.Module) else state
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata={DIGEST_KEY: weights_digest(tensors)})


def load_weights(model: torch.nn.Module, path: Path) -> None:
    """Load safetensors weights into ``model``; a missing, corrupt or mismatched file (other
    names, shapes or dtypes than the model's, or values that are not finite) is a
    ConfigError naming it."""
    if not path.is_file():
        raise ConfigError(f"{path}: missing; is {path.parent} the output of `mirec train`?")
    try:
        with safe_open(path, framework="pt") as f:
            recorded = (f.metadata() or {}).get(DIGEST_KEY)
            state = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as err:
        raise ConfigError(f"{path}: not a readable safetensors file ({err})") from err
    # weights written before mirec recorded a digest are taken as they are
    if recorded is not None and recorded != weights_digest(state):
        raise ConfigError(f"{path}: the weights do not match their checksum; the file is damaged")
    load_state(model, state, path)


def load_state(model: torch.nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """Put ``state`` (read from ``source``) into ``model``, first checking that it is this
    model's: the same names, shapes and dtypes, and finite values (``load_state_dict``
    alone would cast other dtypes silently)."""
    own = model.state_dict()
    for name, tensor in state.items():
        if name in own and tensor.dtype != own[name].dtype:
            raise ConfigError(
                f"{source}: {name} is {tensor.dtype}, but the model of {CONFIG_FILE} has "
                f"{own[name].dtype}"
            )
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ConfigError(f"{source}: {name} holds NaN or infinite values")
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        # torch lists the problems one a line, under a heading: the first one says enough
        problems = str(err).strip().splitlines()
        raise ConfigError(
            f"{source}: the weights do not fit the model of {CONFIG_FILE}: "
            f"{problems[min(1, len(problems) - 1)].strip()}"
        ) from err


def _lists(offsets: np.ndarray, values: np.ndarray) -> pa.ListArray:
    return pa.ListArray.from_arrays(
        pa.array(np.asarray(offsets, dtype=np.int32)), pa.array(np.asarray(values, dtype=np.int32))
    )


def _flat(column: pa.ChunkedArray, dtype: type = np.int64) -> tuple[np.ndarray, np.ndarray]:
    """A list column -> (int64 CSR offsets, values as ``dtype``)."""
    lists = column.combine_chunks()
    offsets = lists.offsets.to_numpy().astype(np.int64)
    values = lists.values.to_numpy().astype(dtype)
    return offsets - offsets[0], values[offsets[0] : offsets[-1]]


def _ids(column: pa.ChunkedArray, kind: str) -> np.ndarray:
    if kind == "int":
        return column.to_numpy().astype(np.int64)
    return np.asarray(column.to_pylist(), dtype=str)


def _id_type(ids: np.ndarray) -> str:
    return "int" if np.issubdtype(ids.dtype, np.integer) else "str"


def _strings(values: np.ndarray | None) -> list[str] | None:
    return None if values is None else [str(v) for v in values]


def _write_parquet(path: Path, table: pa.Table) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, write_page_checksum=True)


def _read_parquet(path: Path) -> pa.Table:
    if not path.is_file():
        raise ConfigError(f"{path}: missing; the model folder is incomplete")
    try:
        return pq.read_table(path, page_checksum_verification=True)
    except (pa.ArrowException, OSError) as err:
        raise ConfigError(f"{path}: not a readable Parquet file ({err})") from err


def read_metrics(folder: Path) -> dict[str, Any] | None:
    """``metrics.json`` of ``folder`` (None when it has none); a file that is not a JSON
    object is a ConfigError naming it."""
    path = folder / METRICS_FILE
    if not path.is_file():
        return None
    try:
        metrics = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(metrics, dict):
        raise ConfigError(f"{path}: expected a JSON object, got {type(metrics).__name__}")
    return metrics


def check_recorded_settings(config: Config, recorded: Any, path: Path, what: str) -> None:
    """``recorded`` (the settings ``path`` holds) must be ``config``'s, inference-time
    settings aside: else the files of a folder come from different runs."""
    if not isinstance(recorded, dict):
        raise ConfigError(f"{path}: its settings are not a mapping; {what}")
    name = changed_setting(config, recorded, ignore=INFERENCE_SETTINGS)
    if name is not None:
        raise ConfigError(
            f"{path}: records {name}={recorded[name]!r}, but {CONFIG_FILE} says "
            f"{getattr(config, name)!r}; {what}"
        )


@dataclass
class LoadedModel:
    """A model folder in memory: its config, data and the model with its best weights."""

    config: Config
    data: FolderData
    model: torch.nn.Module
    metrics: dict[str, Any] | None = None
    """The run's ``metrics.json``, when the folder has one."""


def load_model(
    folder: Path, overrides: dict[str, Any] | None = None, device: torch.device | None = None
) -> LoadedModel:
    """Build the model of ``folder`` (retrieval or CTR) and load its weights, in eval mode
    on ``device`` (the config's by default); ``overrides`` change settings before the
    model is built. Every file is checked against the others first (module docstring)."""
    data = read_folder_data(folder)
    stored = read_config(folder)
    mixed = "the folder's files come from different runs; train it again"
    # folders from before model.json recorded every setting: their identity only
    recorded = data.meta.get("config") or {key: data.meta[key] for key in IDENTITY}
    check_recorded_settings(stored, recorded, folder / MODEL_FILE, mixed)
    metrics = read_metrics(folder)
    if metrics is not None and "config" in metrics:
        check_recorded_settings(stored, metrics["config"], folder / METRICS_FILE, mixed)
    config = stored
    if overrides:
        config = config_from_dict({**stored.to_dict(), **overrides}, source="settings")
    seqs = data.sequences
    if config.task == "ctr":
        model = build_ctr_model(config, seqs, data.maxlen)
    else:
        model = build_model(config, seqs.n_items, data.maxlen, seqs.user_profiles())
    load_weights(model, folder / WEIGHTS_FILE)
    model.to(device or resolve_device(config.device)).eval()
    return LoadedModel(config, data, model, metrics)
