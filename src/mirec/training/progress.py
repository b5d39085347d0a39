"""What a fit has done so far, and when it stops: :class:`FitResult`, the record of its
epochs that ``metrics.json`` reports, and :class:`BestCheckpoint`, which keeps the weights
best on validation and applies early stopping and the time limit. The trainer fills both;
an epoch checkpoint (:mod:`mirec.training.checkpoint`) saves and restores them."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from mirec.models.folder import host_state

EpochHook = Callable[[dict[str, float]], bool]
"""Called after every finished epoch (on rank 0 of a torchrun job) with that epoch's record:
``epoch``, ``loss``, ``seconds``, ``examples_per_second`` and the validation figures when
the epoch was validated. True stops training there (``stopped_by`` "hook"): what tracking
(which only logs, and returns False) and a search's pruning hook into."""


@dataclass
class FitResult:
    epochs: int = 0
    best_epoch: int = 0
    best_valid: dict[str, float] = field(default_factory=dict)
    train_seconds: float = 0.0
    train_examples: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    stopped_by: str = "max_epochs"
    negatives: int | None = None
    """Negatives per example actually used (0: the whole catalogue; in-batch: B - 1, or
    None with sequence training, where a batch's target count varies)."""
    sparse_items: bool = False
    """Whether the item table trained with sparse gradients (``Config.sparse_items``)."""
    valid_users: int | None = None
    """Validation users scored at each validation (retrieval; None: not recorded)."""

    @property
    def examples_per_second(self) -> float:
        return self.train_examples / self.train_seconds if self.train_seconds else 0.0


class BestCheckpoint:
    """Keeps the weights that are best on one validation metric (in memory; they reach
    ``model.safetensors`` when training ends) and says when to stop: after ``patience``
    validations without improvement, or once ``max_minutes`` of training have passed
    (counted across the starts of a resumed run)."""

    def __init__(
        self, model: torch.nn.Module, metric: str, patience: int, max_minutes: float | None
    ) -> None:
        self.model, self.metric, self.patience = model, metric, patience
        self.max_seconds = None if max_minutes is None else 60 * max_minutes
        self.started = time.perf_counter()
        self.best, self.waited = -math.inf, 0
        self.state: dict[str, torch.Tensor] | None = None
        """The best weights so far (CPU copies); None before a finite validation figure."""

    def finish_epoch(
        self,
        result: FitResult,
        epoch: int,
        seconds: float,
        examples: int,
        loss: float,
        valid: dict[str, float] | None,
        line: str | None,
    ) -> bool:
        """Record a finished epoch (its time, examples, mean loss and validation figures,
        None when it was not validated) in ``result``, print ``line`` if given, keep the
        weights if best; True to stop. Only a validation counts towards the patience."""
        result.train_seconds += seconds
        result.train_examples += examples
        result.epochs = epoch
        result.history.append({"epoch": epoch, "loss": loss, **(valid or {})})
        if line is not None:
            tqdm.write(f"epoch {epoch}: loss {loss:.4f}" + (f"  valid {line}" if valid else ""))
        if valid is not None:
            if valid[self.metric] > self.best:
                self.best, self.waited = valid[self.metric], 0
                result.best_epoch, result.best_valid = epoch, valid
                self.state = host_state(self.model)
            else:
                self.waited += 1
                if self.waited >= self.patience:
                    result.stopped_by = "early_stopping"
                    return True
        if self.out_of_time():
            result.stopped_by = "time_limit"
            return True
        return False

    def out_of_time(self) -> bool:
        """Whether the training time limit has passed."""
        elapsed = time.perf_counter() - self.started
        return self.max_seconds is not None and elapsed > self.max_seconds

    def progress(self) -> dict[str, float]:
        """What a checkpoint needs to carry on: the best figure, the epochs waited, and the
        seconds spent so far."""
        elapsed = time.perf_counter() - self.started
        return {"best": self.best, "waited": self.waited, "elapsed": elapsed}

    def restore(self, progress: dict[str, float], state: dict[str, torch.Tensor] | None) -> None:
        """Continue from a checkpoint's :meth:`progress` and best weights."""
        self.best, self.waited = progress["best"], int(progress["waited"])
        self.started = time.perf_counter() - progress["elapsed"]
        self.state = state
