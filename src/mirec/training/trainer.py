"""Train a retrieval model with early stopping on validation Recall@50 (PROTOCOL.md section 6).

Each epoch visits every training position of every training user once, in a random order
(PROTOCOL.md section 3): one position per example, or with ``sequence_training`` a window
of positions per example, each scored from its own prefix. After each epoch the model is
evaluated on the validation users; the best state is written to ``model.safetensors`` and
restored at the end.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from mirec.config import Config
from mirec.data.examples import (
    MIN_TARGET_POSITION,
    gather_histories,
    targets_per_user,
    training_item_counts,
    training_positions,
    training_windows,
)
from mirec.data.prepare import PreparedData
from mirec.errors import ConfigError
from mirec.evaluation.evaluator import evaluate
from mirec.models.interest_model import InterestModel
from mirec.models.most_popular import MostPopular
from mirec.training.sampled_softmax import SampledSoftmax, resolve_negatives

SELECTION_METRIC = "recall@50"
WEIGHTS_FILE = "model.safetensors"


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

    @property
    def examples_per_second(self) -> float:
        return self.train_examples / self.train_seconds if self.train_seconds else 0.0


@dataclass(frozen=True)
class TrainingExamples:
    """Every training position of PROTOCOL.md section 3, as tensors on the training device.

    Example j has the target ``items[ends[j]]`` and the history ``items[starts[j]:ends[j]]``
    (its last ``maxlen`` items); batches are gathered on the device, with no Python loop.
    ``users[j]`` is the example's user row, for models with user profiles (MIND's).

    With ``windows`` (sequence training) example j is instead the window of targets
    ``items[ends[j] - maxlen:ends[j]]`` (positions below 4 left out), each predicted from
    the items before it in ``items[ends[j] - maxlen - 1:ends[j] - 1]``.
    """

    items: torch.Tensor
    starts: torch.Tensor
    ends: torch.Tensor
    maxlen: int
    users: torch.Tensor | None = None
    windows: bool = False
    n_targets: int = 0
    """Training positions in all examples: one per example, or a window's targets."""

    @classmethod
    def of(
        cls, data: PreparedData, device: torch.device, windows: bool = False
    ) -> TrainingExamples:
        seqs, maxlen = data.sequences, data.maxlen
        if windows:
            rows, ends = training_windows(seqs, data.split.train, maxlen)
        else:
            rows, ends = training_positions(seqs, data.split.train)
        starts = torch.from_numpy(seqs.offsets[rows]).to(device)
        return cls(
            items=torch.from_numpy(seqs.items).to(device),
            starts=starts,
            ends=starts + torch.from_numpy(ends).to(device),
            maxlen=maxlen,
            users=torch.from_numpy(rows).to(device),
            windows=windows,
            n_targets=int(targets_per_user(seqs, data.split.train).sum()),
        )

    def __len__(self) -> int:
        return len(self.starts)

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(histories (B, maxlen), targets): (B,) next items, or with ``windows`` (B,
        maxlen) next items aligned with the history columns, 0 where there is none."""
        starts, ends = self.starts[index], self.ends[index]
        if not self.windows:
            return gather_histories(self.items, starts, ends, self.maxlen), self.items[ends]
        histories = gather_histories(self.items, starts, ends - 1, self.maxlen)
        starts = starts + MIN_TARGET_POSITION
        return histories, gather_histories(self.items, starts, ends, self.maxlen)

    def users_of(self, index: torch.Tensor) -> torch.Tensor:
        """(B,) user rows of the examples ``index`` (MIND's user-profile lookup)."""
        if self.users is None:
            raise ValueError("these training examples were built without their user rows")
        return self.users[index]


class BestCheckpoint:
    """Keeps the weights that are best on one validation metric and says when to stop:
    after ``patience`` epochs without improvement, or once ``max_minutes`` have passed."""

    def __init__(
        self,
        model: torch.nn.Module,
        path: Path,
        metric: str,
        patience: int,
        max_minutes: float | None,
    ) -> None:
        self.model, self.path, self.metric, self.patience = model, path, metric, patience
        self.deadline = None if max_minutes is None else time.perf_counter() + 60 * max_minutes
        self.best, self.waited = -math.inf, 0

    def finish_epoch(
        self,
        result: FitResult,
        epoch: int,
        seconds: float,
        examples: int,
        loss: float,
        valid: dict[str, float],
        line: str | None,
    ) -> bool:
        """Record a finished epoch (its time, examples, mean loss and validation figures) in
        ``result``, print ``line`` if given, keep the weights if best; True to stop."""
        result.train_seconds += seconds
        result.train_examples += examples
        result.epochs = epoch
        result.history.append({"epoch": epoch, "loss": loss, **valid})
        if line is not None:
            tqdm.write(f"epoch {epoch}: loss {loss:.4f}  valid {line}")
        if valid[self.metric] > self.best:
            self.best, self.waited = valid[self.metric], 0
            result.best_epoch, result.best_valid = epoch, valid
            save_weights(self.model, self.path)
        else:
            self.waited += 1
            if self.waited >= self.patience:
                result.stopped_by = "early_stopping"
                return True
        if self.deadline is not None and time.perf_counter() > self.deadline:
            result.stopped_by = "time_limit"
            return True
        return False


def train_step(
    model: InterestModel,
    optimizer: torch.optim.Optimizer,
    histories: torch.Tensor,
    targets: torch.Tensor,
    objective: SampledSoftmax,
    generator: torch.Generator | None = None,
    users: torch.Tensor | None = None,
) -> torch.Tensor:
    """One optimisation step on a batch; returns the (detached) loss. ``users``: the batch's
    user rows, for a model with user profiles."""
    if users is None:
        loss = model.loss(histories, targets, objective, generator)
    else:
        loss = model.loss(histories, targets, objective, generator, users=users)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def build_objective(config: Config, data: PreparedData, device: torch.device) -> SampledSoftmax:
    """The training softmax of ``config``: its negatives, their count and REMI's beta; item
    popularity comes from the training users only."""
    n_items = data.sequences.n_items
    counts = None
    if config.negative_sampling != "uniform":
        counts = torch.from_numpy(training_item_counts(data.sequences, data.split.train))
    try:
        return SampledSoftmax(
            n_items,
            resolve_negatives(config.num_negatives, n_items, config.negative_sampling),
            config.negative_sampling,
            item_counts=counts,
            hard_negative_beta=config.hard_negative_beta,
            temperature=config.temperature,
            device=device,
        )
    except ValueError as err:
        raise ConfigError(f"training objective: {err}") from err


def resolve_device(name: str) -> torch.device:
    """The torch device of ``config.device``; a ConfigError when this machine has none such
    (``cuda`` without CUDA, ``cuda:N`` beyond the GPUs present, ``mps`` off Apple silicon)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"setting device={name!r}: must be auto, cpu, cuda, cuda:N or mps"
        ) from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            why = "this build of torch has none" if torch.version.cuda is None else "no GPU seen"
            raise ConfigError(
                f"setting device={name!r}: CUDA is not available ({why}); "
                "use device=cpu or device=auto"
            )
        if device.index is not None and device.index >= count:
            raise ConfigError(
                f"setting device={name!r}: this machine has {count} CUDA device(s), "
                f"cuda:0 to cuda:{count - 1}"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(
            f"setting device={name!r}: MPS (Apple silicon) is not available here; "
            "use device=cpu or device=auto"
        )
    elif device.type != "cpu":
        raise ConfigError(f"setting device={name!r}: must be auto, cpu, cuda, cuda:N or mps")
    return device


def save_weights(model: torch.nn.Module, path: Path) -> None:
    """Write the state dict as safetensors, atomically (temp file, then rename)."""
    tmp = path.with_suffix(".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, tmp)
    os.replace(tmp, path)


def load_weights(model: torch.nn.Module, path: Path) -> None:
    model.load_state_dict(load_file(path))


def fit(
    model: InterestModel | MostPopular,
    data: PreparedData,
    config: Config,
    output_dir: Path,
    *,
    progress: bool = True,
) -> FitResult:
    """Train ``model`` on ``data``'s training users; leaves the best weights in ``model``."""
    device = resolve_device(config.device)
    model.to(device)
    weights = output_dir / WEIGHTS_FILE
    result = FitResult()
    if isinstance(model, MostPopular):
        start = time.perf_counter()
        model.fit(training_item_counts(data.sequences, data.split.train))
        result.train_seconds = time.perf_counter() - start
        result.best_valid = evaluate(model, data.valid, device=device).metrics
        result.history.append({"epoch": 0, **result.best_valid})
        save_weights(model, weights)
        return result

    generator = torch.Generator(device=device).manual_seed(config.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    examples = TrainingExamples.of(data, device, windows=config.sequence_training)
    objective = build_objective(config, data, device)
    in_batch = config.negative_sampling == "in_batch"
    with_users = model.uses_user_rows
    result.negatives = objective.num_negatives
    if in_batch:
        result.negatives = None if config.sequence_training else config.batch_size - 1
    n_examples = len(examples)
    n_batches = math.ceil(n_examples / config.batch_size)
    best = BestCheckpoint(
        model, weights, SELECTION_METRIC, config.patience, config.max_train_minutes
    )
    for epoch in range(1, config.max_epochs + 1):
        model.train()
        epoch_start = time.perf_counter()
        order = torch.randperm(n_examples, device=device, generator=generator)
        total_loss = torch.zeros((), device=device)
        bar = tqdm(
            range(n_batches),
            desc=f"epoch {epoch}",
            unit="batch",
            disable=not progress,
            leave=False,
        )
        for b in bar:
            index = order[b * config.batch_size : (b + 1) * config.batch_size]
            histories, targets = examples.batch(index)
            users = examples.users_of(index) if with_users else None
            total_loss += train_step(
                model, optimizer, histories, targets, objective, generator, users
            )
        bar.close()
        seconds = time.perf_counter() - epoch_start
        model.eval()
        valid = evaluate(model, data.valid, device=device).metrics
        line = f"recall@50 {valid['recall@50']:.4f}  ndcg@50 {valid['ndcg@50']:.4f}"
        loss = float(total_loss) / n_batches
        if best.finish_epoch(
            result, epoch, seconds, examples.n_targets, loss, valid, line if progress else None
        ):
            break
    load_weights(model, weights)
    return result
