"""Resumable training: everything the epoch loop carries from one epoch to the next, in one
file written at the end of every epoch, so that a killed run continues from its last
finished epoch and ends exactly as if it had never stopped.

The file, ``checkpoint.safetensors``, holds as tensors the current weights
(``model.*``), the best weights so far (``best.*``), the optimizer's state tensors
(``optimizer.<parameter>.<name>``: Adam's moments and step counts; with a sparse item
table, RowAdam's moments of the table after Adam's of the other weights, its integer step
count in the metadata: :class:`~mirec.training.optimizer.JointOptimizer`) and the states of the
random generators (``rng.*``: torch's global one, CUDA's, the run's ``torch.Generator``);
its safetensors metadata holds, as JSON, the rest: the epoch, whether training stopped,
the early-stopping state, the elapsed time (for ``max_train_minutes``), the loss and
metric history (:class:`~mirec.training.progress.FitResult`), and the states of the
numpy and Python generators (global ones, and a CTR run's ``numpy`` generator).

One file, so one atomic rename writes all of it: a reader finds the previous epoch's state
or this one's, never parts of both. Nothing is pickled (``torch.save`` would pickle the
optimizer's state dict); the optimizer's hyperparameters are not stored at all, since the
resumed run's config, checked equal to the killed run's, rebuilds them.

A finished run trained with ``keep_optimizer_state`` also keeps its optimizer's final
state in its model folder, ``optimizer.safetensors`` (:func:`save_optimizer_state`): by
parameter name rather than index, so that a fine-tune's model, built for another log, can
start from it (``init_optimizer=carry``: :func:`read_optimizer_state`, remapped by
:func:`mirec.training.warm_start.carried_optimizer_state`, then
:func:`load_optimizer_state`).

Only epoch ends are checkpointed: resuming within an epoch would need its example order,
its negatives and every random draw of its steps so far, and an epoch end is where the
loop's state is small and whole.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from mirec.atomic import atomic_path
from mirec.config import require_optimizer_state
from mirec.errors import ConfigError, MirecError
from mirec.models.folder import (
    DIGEST_KEY,
    OPTIMIZER_FILE,
    WEIGHTS_FILE,
    host_state,
    load_state,
    weights_digest,
)
from mirec.training.optimizer import Optimizer, optimizer_parameters
from mirec.training.progress import BestCheckpoint, FitResult

CHECKPOINT_FILE = "checkpoint.safetensors"
FORMAT, FORMAT_VERSION = "mirec-checkpoint", 1


@dataclass
class Randomness:
    """The random generators a run draws from beyond the global ones: the trainer's
    ``torch.Generator`` (example order, negatives) and a CTR run's numpy generator (its
    sampled negatives)."""

    device: torch.device
    generator: torch.Generator
    numpy_generator: np.random.Generator | None = None

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(tensors, JSON) of every generator's state, the global ones included."""
        tensors = {"torch": torch.get_rng_state(), "generator": self.generator.get_state()}
        if self.device.type == "cuda":
            tensors["cuda"] = torch.cuda.get_rng_state(self.device)
        numpy_global = np.random.get_state(legacy=False)
        numpy_global["state"]["key"] = numpy_global["state"]["key"].tolist()
        version, python_state, gauss = random.getstate()
        info = {
            "numpy": numpy_global,
            "python": [version, list(python_state), gauss],
            "numpy_generator": None
            if self.numpy_generator is None
            else self.numpy_generator.bit_generator.state,
        }
        return tensors, info

    def restore(self, tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
        torch.set_rng_state(tensors["torch"])
        self.generator.set_state(tensors["generator"])
        if self.device.type == "cuda":
            torch.cuda.set_rng_state(tensors["cuda"], self.device)
        numpy_global = info["numpy"]
        numpy_global["state"]["key"] = np.asarray(numpy_global["state"]["key"], dtype=np.uint32)
        np.random.set_state(numpy_global)
        version, python_state, gauss = info["python"]
        random.setstate((version, tuple(python_state), gauss))
        if self.numpy_generator is not None:
            self.numpy_generator.bit_generator.state = info["numpy_generator"]


def save_checkpoint(
    path: Path,
    epoch: int,
    stopped: bool,
    model: torch.nn.Module,
    optimizer: Optimizer,
    randomness: Randomness,
    best: BestCheckpoint,
    result: FitResult,
) -> None:
    """Write the state after ``epoch`` (``stopped``: training ends there) to ``path``."""
    tensors = {f"model.{k}": v for k, v in host_state(model).items()}
    if best.state is not None:
        tensors.update({f"best.{k}": v for k, v in best.state.items()})
    optimizer_tensors, optimizer_info = _state_tensors(optimizer.state_dict()["state"])
    tensors.update({f"optimizer.{k}": v for k, v in optimizer_tensors.items()})
    rng_tensors, rng_info = randomness.state()
    tensors.update({f"rng.{k}": v for k, v in rng_tensors.items()})
    info = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "epoch": epoch,
        "stopped": stopped,
        "device": randomness.device.type,
        "early_stopping": best.progress(),
        "result": asdict(result),
        "optimizer": optimizer_info,
        "random": rng_info,
    }
    with atomic_path(path) as tmp:
        save_file(
            tensors, tmp, metadata={FORMAT: json.dumps(info), DIGEST_KEY: weights_digest(tensors)}
        )


def restore_checkpoint(
    path: Path,
    model: torch.nn.Module,
    optimizer: Optimizer,
    randomness: Randomness,
    best: BestCheckpoint,
    result: FitResult,
) -> tuple[int, bool]:
    """Put the state of ``path`` back into the run's objects; returns the epoch it was
    written after and whether training stopped there."""
    try:
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
            info = json.loads(metadata[FORMAT])
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, KeyError, ValueError) as err:
        raise MirecError(
            f"{path}: not a readable checkpoint ({err}); --overwrite starts the run again"
        ) from err
    if metadata.get(DIGEST_KEY) != weights_digest(tensors):
        raise MirecError(
            f"{path}: does not match its checksum; the file is damaged, --overwrite starts "
            "the run again"
        )
    if info.get("format_version") != FORMAT_VERSION:
        raise MirecError(
            f"{path}: checkpoint format {info.get('format_version')!r}, this mirec writes "
            f"{FORMAT_VERSION}; --overwrite starts the run again"
        )
    if info["device"] != randomness.device.type:
        raise MirecError(
            f"{path}: written on {info['device']}, and this run is on "
            f"{randomness.device.type}; resume it with --set device={info['device']}"
        )

    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}

    # the optimizer's state is laid out by parameter index, which differs between a dense
    # and a sparse item table: a checkpoint of one cannot continue as the other
    was_sparse = info["result"].get("sparse_items", False)
    if was_sparse != result.sparse_items:
        kinds = {True: "sparse", False: "dense"}
        raise MirecError(
            f"{path}: written by a run whose item table trained with {kinds[was_sparse]} "
            f"gradients, and this run's are {kinds[result.sparse_items]}; resume it with "
            f"--set sparse_items={str(was_sparse).lower()}"
        )
    load_state(model, part("model."), path)
    optimizer_state = {
        int(index): values
        for index, values in _state_of(part("optimizer."), info["optimizer"]).items()
    }
    # the hyperparameters are the resumed run's own (its config is the killed run's)
    groups = optimizer.state_dict()["param_groups"]
    optimizer.load_state_dict({"state": optimizer_state, "param_groups": groups})
    randomness.restore(part("rng."), info["random"])
    best.restore(info["early_stopping"], part("best.") or None)
    for name, value in info["result"].items():
        setattr(result, name, value)
    return info["epoch"], info["stopped"]


def _state_tensors(
    state: dict[Any, dict[str, Any]],
) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, Any]]]:
    """An optimizer's per-parameter ``state`` (by index or name) as tensors named
    ``<key>.<name>`` and, for JSON, its other values by key (RowAdam's integer step count):
    safetensors holds tensors only."""
    tensors: dict[str, torch.Tensor] = {}
    info: dict[str, dict[str, Any]] = {}
    for key, values in state.items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{key}.{name}"] = value.detach().cpu().contiguous()
            else:
                info.setdefault(str(key), {})[name] = value
    return tensors, info


def _state_of(
    tensors: dict[str, torch.Tensor], info: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """:func:`_state_tensors` undone: the state by key (as text). A state's own names hold
    no dot, a parameter's name may (``item_table.weight``): the key is up to the last one."""
    state: dict[str, dict[str, Any]] = {}
    for key, value in tensors.items():
        owner, name = key.rsplit(".", 1)
        state.setdefault(owner, {})[name] = value
    for owner, values in info.items():
        state.setdefault(owner, {}).update(values)
    return state


OPTIMIZER_FORMAT = "mirec-optimizer"


@dataclass(frozen=True)
class OptimizerState:
    """A finished run's final optimizer state, as its model folder keeps it
    (``optimizer.safetensors``, ``keep_optimizer_state``): per parameter, by name, so that
    a model built for another log can take it (``init_optimizer=carry``)."""

    folder: Path
    sparse_items: bool
    """Whether the item table trained with sparse gradients (RowAdam's state, not Adam's)."""
    state: dict[str, dict[str, Any]]
    """Parameter name -> its state (``exp_avg``, ``exp_avg_sq``, ``step``)."""


def _parameter_names(model: torch.nn.Module, optimizer: Optimizer) -> list[str]:
    """The names of the optimizer's parameters, in the order of its state dict's indices."""
    names = {id(p): name for name, p in model.named_parameters()}
    return [names[id(p)] for p in optimizer_parameters(optimizer)]


def save_optimizer_state(
    path: Path,
    model: torch.nn.Module,
    optimizer: Optimizer,
    sparse_items: bool,
    weights: dict[str, torch.Tensor],
) -> None:
    """Write ``optimizer``'s state by parameter name to ``path``, whole or not at all; it
    records the digest of ``weights`` (the folder's ``model.safetensors``), which a carry
    checks, so a state is never carried with another run's weights."""
    names = _parameter_names(model, optimizer)
    state = optimizer.state_dict()["state"]
    tensors, info = _state_tensors({names[index]: values for index, values in state.items()})
    meta = {
        "format_version": FORMAT_VERSION,
        "sparse_items": sparse_items,
        "weights": weights_digest(weights),
        "state": info,
    }
    with atomic_path(path) as tmp:
        save_file(
            tensors,
            tmp,
            metadata={OPTIMIZER_FORMAT: json.dumps(meta), DIGEST_KEY: weights_digest(tensors)},
        )


def read_optimizer_state(folder: Path) -> OptimizerState:
    """The optimizer state kept in model folder ``folder``; a ConfigError naming the
    folder when it keeps none, or one that is damaged or not of its weights."""
    path = folder / OPTIMIZER_FILE
    require_optimizer_state(folder)
    try:
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
            meta = json.loads(metadata[OPTIMIZER_FORMAT])
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118
        with safe_open(folder / WEIGHTS_FILE, framework="pt") as f:
            weights = (f.metadata() or {}).get(DIGEST_KEY)
    except (SafetensorError, OSError, KeyError, ValueError) as err:
        raise ConfigError(f"{path}: not a readable optimizer state ({err})") from err
    if metadata.get(DIGEST_KEY) != weights_digest(tensors):
        raise ConfigError(f"{path}: does not match its checksum; the file is damaged")
    if meta.get("weights") != weights:
        raise ConfigError(
            f"{path}: belongs to other weights than {folder / WEIGHTS_FILE} (another run's); "
            "fine-tune with init_optimizer=fresh"
        )
    return OptimizerState(folder, bool(meta["sparse_items"]), _state_of(tensors, meta["state"]))


def load_optimizer_state(
    optimizer: Optimizer, model: torch.nn.Module, start: OptimizerState, sparse_items: bool
) -> None:
    """Start ``optimizer`` (of ``model``, ``sparse_items`` saying how its item table
    trains) from ``start``, whose tensors already fit the model's
    (:func:`mirec.training.warm_start.carried_optimizer_state`); its hyperparameters are
    the optimizer's own, this run's settings. The state of Adam and of RowAdam differ in
    layout, so one of them cannot start the other."""
    if start.sparse_items != sparse_items:
        kinds = {True: "sparse", False: "dense"}
        raise ConfigError(
            f"setting init_optimizer=carry: {start.folder} kept the optimizer of an item table "
            f"with {kinds[start.sparse_items]} gradients, and this run's are "
            f"{kinds[sparse_items]}; --set sparse_items={str(start.sparse_items).lower()} to "
            "carry it, or init_optimizer=fresh"
        )
    index = {name: i for i, name in enumerate(_parameter_names(model, optimizer))}
    unknown = sorted(set(start.state) - set(index))
    if unknown:
        raise ConfigError(
            f"setting init_optimizer=carry: {start.folder / OPTIMIZER_FILE} holds the state of "
            f"{unknown[0]}, which this model has not; fine-tune with init_optimizer=fresh"
        )
    groups = optimizer.state_dict()["param_groups"]
    state = {index[name]: values for name, values in start.state.items()}
    optimizer.load_state_dict({"state": state, "param_groups": groups})
