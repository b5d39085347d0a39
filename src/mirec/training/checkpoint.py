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
from mirec.errors import MirecError
from mirec.models.folder import DIGEST_KEY, host_state, load_state, weights_digest
from mirec.training.optimizer import Optimizer
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
    optimizer_info: dict[str, dict[str, Any]] = {}
    for index, values in optimizer.state_dict()["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                optimizer_info.setdefault(str(index), {})[name] = value
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
    optimizer_state: dict[int, dict[str, Any]] = {}
    for key, value in part("optimizer.").items():
        index, name = key.split(".", 1)
        optimizer_state.setdefault(int(index), {})[name] = value
    for index, values in info["optimizer"].items():
        optimizer_state.setdefault(int(index), {}).update(values)
    # the hyperparameters are the resumed run's own (its config is the killed run's)
    groups = optimizer.state_dict()["param_groups"]
    optimizer.load_state_dict({"state": optimizer_state, "param_groups": groups})
    randomness.restore(part("rng."), info["random"])
    best.restore(info["early_stopping"], part("best.") or None)
    for name, value in info["result"].items():
        setattr(result, name, value)
    return info["epoch"], info["stopped"]
