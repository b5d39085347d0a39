"""Train a retrieval model with early stopping on validation Recall@50 (docs/protocol.md section 6),
through the epoch loop that the CTR trainer shares (:func:`train_epochs`).

Each epoch visits every training position of every training user once, in a random order
(docs/protocol.md section 3): one position per example, or with ``sequence_training`` a window
of positions per example, each scored from its own prefix. After each epoch (every
``valid_every``-th with that setting) the model is evaluated on the validation users (a
fixed sample of ``valid_users`` of them where the split has more); the best state is
written to ``model.safetensors`` and restored at the end.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from mirec.core.config import Config
from mirec.core.device import forward_precision, resolve_device
from mirec.data.examples import (
    MIN_TARGET_POSITION,
    gather_histories,
    host_tensor,
    training_item_counts,
    training_positions,
    training_windows,
)
from mirec.data.prepare import PreparedData
from mirec.errors import ConfigError, MirecError
from mirec.evaluation.evaluator import evaluate
from mirec.models.folder import OPTIMIZER_FILE, WEIGHTS_FILE, save_weights
from mirec.models.interest_model import InterestModel
from mirec.models.most_popular import MostPopular
from mirec.training.checkpoint import (
    CHECKPOINT_FILE,
    OptimizerState,
    Randomness,
    load_optimizer_state,
    restore_checkpoint,
    save_checkpoint,
    save_optimizer_state,
)
from mirec.training.distributed import World
from mirec.training.optimizer import Optimizer, build_optimizer, sparse_item_gradients
from mirec.training.progress import BestCheckpoint, EpochHook, FitResult
from mirec.training.sampled_softmax import SampledSoftmax, resolve_negatives

SELECTION_METRIC = "recall@50"


@dataclass(frozen=True)
class TrainingExamples:
    """Every training position of docs/protocol.md section 3, as tensors on the training device.

    Example j has the target ``items[ends[j]]`` and the history ``items[starts[j]:ends[j]]``
    (its last ``maxlen`` items); batches are gathered on the device, with no Python loop.
    ``users[j]`` is the example's user row, for models with user profiles (MIND's).
    ``items`` may be int32 and, on the CPU, a view of a memory-mapped array (it is not
    copied: a batch reads the pages it needs); batches come out int64.

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
        cls,
        data: PreparedData,
        device: torch.device,
        windows: bool = False,
        known_positions: np.ndarray | None = None,
    ) -> TrainingExamples:
        """The training users' examples; with ``known_positions`` (fine-tuning on what is
        new, :class:`~mirec.training.warm_start.WarmStart`), only those whose target lies
        past the user's first ``known_positions[user]`` interactions (with ``windows``: the
        windows that hold such a target), each still read from its whole history."""
        seqs, maxlen = data.sequences, data.maxlen
        if windows:
            rows, ends = training_windows(seqs, data.split.train, maxlen)
            targets = ends - np.maximum(ends - maxlen, MIN_TARGET_POSITION)
        else:
            rows, ends = training_positions(seqs, data.split.train)
            targets = np.ones_like(ends)
        if known_positions is not None:
            new = ends > known_positions[rows] if windows else ends >= known_positions[rows]
            rows, ends, targets = rows[new], ends[new], targets[new]
        starts = torch.from_numpy(seqs.offsets[rows]).to(device)
        return cls(
            items=host_tensor(seqs.items).to(device),
            starts=starts,
            ends=starts + torch.from_numpy(ends).to(device),
            maxlen=maxlen,
            users=torch.from_numpy(rows).to(device),
            windows=windows,
            n_targets=int(targets.sum()),
        )

    def __len__(self) -> int:
        return len(self.starts)

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(histories (B, maxlen), targets): (B,) next items, or with ``windows`` (B,
        maxlen) next items aligned with the history columns, 0 where there is none."""
        starts, ends = self.starts[index], self.ends[index]
        if not self.windows:
            targets = self.items[ends].to(torch.int64)
            return gather_histories(self.items, starts, ends, self.maxlen), targets
        histories = gather_histories(self.items, starts, ends - 1, self.maxlen)
        starts = starts + MIN_TARGET_POSITION
        return histories, gather_histories(self.items, starts, ends, self.maxlen)

    def users_of(self, index: torch.Tensor) -> torch.Tensor:
        """(B,) user rows of the examples ``index`` (MIND's user-profile lookup)."""
        if self.users is None:
            raise ValueError("these training examples were built without their user rows")
        return self.users[index]


class Epoch(NamedTuple):
    """One epoch's training, as :func:`train_epochs` runs it."""

    n_batches: int
    examples: int
    """What the epoch counts as trained examples (``FitResult.train_examples``)."""
    loss: Callable[[int], torch.Tensor]
    """Batch b -> its training loss."""


def optimizer_step(optimizer: Optimizer, loss: torch.Tensor) -> torch.Tensor:
    """One optimisation step on ``loss``; returns it detached."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def train_epochs(
    model: torch.nn.Module,
    optimizer: Optimizer,
    config: Config,
    randomness: Randomness,
    folder: Path,
    result: FitResult,
    *,
    epoch: Callable[[int], Epoch],
    validate: Callable[[], dict[str, float]],
    metric: str,
    shown: tuple[str, ...],
    progress: bool,
    resume: bool = False,
    world: World | None = None,
    on_epoch: EpochHook | None = None,
    optimizer_start: OptimizerState | None = None,
) -> FitResult:
    """The epoch loop of every trained model: up to ``config.max_epochs`` epochs of
    ``epoch(number)``'s batches (drawing them is where an epoch uses the run's
    ``randomness``), every ``config.valid_every``-th followed by ``validate()`` (and the
    last, whether the epochs or the time run out); the weights best on ``metric`` (early
    stopping by :class:`BestCheckpoint`) are back in ``model`` at the end and written to
    ``folder/model.safetensors``. After each epoch the whole state of the loop goes to
    ``folder/checkpoint.safetensors`` (:mod:`mirec.training.checkpoint`); with ``resume``
    the loop continues from there when it exists. With ``progress``, a bar per epoch and
    a line of the ``shown`` validation figures. ``on_epoch`` sees each finished epoch's
    record and may stop training (:data:`~mirec.training.progress.EpochHook`). The
    optimizer starts from ``optimizer_start`` when given (``init_optimizer=carry``), and
    with ``config.keep_optimizer_state`` its final state goes to
    ``folder/optimizer.safetensors``.

    In a torchrun job (``world``), every rank trains and rank 0 alone validates, writes
    and decides when to stop (:mod:`mirec.training.distributed`); the others return
    ``result`` as it came once training ends."""
    best = BestCheckpoint(model, metric, config.patience, config.max_train_minutes)
    checkpoint = folder / CHECKPOINT_FILE
    main = world is None or world.is_main
    first = 1
    if optimizer_start is not None:  # a resumed run's checkpoint then replaces it
        load_optimizer_state(optimizer, model, optimizer_start, result.sparse_items)
    if resume and main and checkpoint.is_file():
        done, stopped = restore_checkpoint(checkpoint, model, optimizer, randomness, best, result)
        first = config.max_epochs + 1 if stopped else done + 1
        if progress:
            tqdm.write(f"resuming after epoch {done} ({checkpoint})")
    if resume and world is not None:
        first = world.follow_main(first, model, optimizer, randomness)
    device = randomness.device
    for number in range(first, config.max_epochs + 1):
        model.train()
        epoch_start = time.perf_counter()
        plan = epoch(number)
        total_loss = torch.zeros((), device=device)
        bar = tqdm(
            range(plan.n_batches),
            desc=f"epoch {number}",
            unit="batch",
            disable=not progress,
            leave=False,
        )
        for b in bar:
            with forward_precision(device, config.precision):
                batch_loss = plan.loss(b)
            total_loss += optimizer_step(optimizer, batch_loss)
        bar.close()
        seconds = time.perf_counter() - epoch_start
        if world is not None:  # the mean loss of the whole batches, as one process has it
            total_loss = world.average(total_loss)
        stop = False
        if main:
            last = number == config.max_epochs or best.out_of_time()
            valid = validate() if number % config.valid_every == 0 or last else None
            line = "  ".join(f"{name} {valid[name]:.4f}" for name in shown) if valid else ""
            loss = float(total_loss) / plan.n_batches
            stop = best.finish_epoch(
                result, number, seconds, plan.examples, loss, valid, line if progress else None
            )
            if on_epoch is not None and on_epoch(
                {
                    "epoch": number,
                    "loss": loss,
                    "seconds": seconds,
                    "examples_per_second": plan.examples / seconds if seconds else 0.0,
                    **(valid or {}),
                }
            ):
                stop, result.stopped_by = True, "hook"
            save_checkpoint(checkpoint, number, stop, model, optimizer, randomness, best, result)
        if world is not None:
            stop = world.from_main(stop)
        if stop:
            break
    if not main:
        return result
    if best.state is None:
        raise MirecError(
            f"training gave no usable model: validation {metric} was NaN after every epoch "
            f"(the loss diverged; try a lower lr than {config.lr})"
        )
    model.load_state_dict(best.state)
    save_weights(best.state, folder / WEIGHTS_FILE)
    if config.keep_optimizer_state:
        save_optimizer_state(
            folder / OPTIMIZER_FILE, model, optimizer, result.sparse_items, best.state
        )
    return result


def train_step(
    model: InterestModel,
    optimizer: Optimizer,
    histories: torch.Tensor,
    targets: torch.Tensor,
    objective: SampledSoftmax,
    generator: torch.Generator | None = None,
    users: torch.Tensor | None = None,
) -> torch.Tensor:
    """One optimisation step on a batch; returns the (detached) loss. ``users``: the batch's
    user rows, for a model with user profiles."""
    return optimizer_step(optimizer, model.loss(histories, targets, objective, generator, users))


def build_objective(
    config: Config, data: PreparedData, device: torch.device, sparse: bool = False
) -> SampledSoftmax:
    """The training softmax of ``config`` on ``data``: item popularity (for popularity and
    in-batch negatives) comes from the training users only. ``sparse``: the item table
    trains with sparse gradients (:func:`objective_of`)."""
    counts = None
    if config.negative_sampling != "uniform":
        counts = training_item_counts(data.sequences, data.split.train)
    return objective_of(config, data.sequences.n_items, counts, device, sparse)


def objective_of(
    config: Config,
    n_items: int,
    item_counts: np.ndarray | None,
    device: torch.device,
    sparse: bool = False,
) -> SampledSoftmax:
    """The training softmax of ``config`` over ``n_items`` items: its negatives, their count
    and REMI's beta; ``item_counts`` (N + 1,) training interactions per item, needed unless
    the sampling is uniform. ``sparse`` reads the item table as sparse gradients need
    (:mod:`mirec.training.optimizer`)."""
    counts = None if item_counts is None else torch.from_numpy(item_counts)
    try:
        return SampledSoftmax(
            n_items,
            resolve_negatives(config.num_negatives, n_items, config.negative_sampling),
            config.negative_sampling,
            item_counts=counts,
            hard_negative_beta=config.hard_negative_beta,
            temperature=config.temperature,
            device=device,
            sparse=sparse,
        )
    except ValueError as err:
        raise ConfigError(f"training objective: {err}") from err


def fit(
    model: InterestModel | MostPopular,
    data: PreparedData,
    config: Config,
    output_dir: Path,
    *,
    progress: bool = True,
    resume: bool = False,
    world: World | None = None,
    on_epoch: EpochHook | None = None,
    known_positions: np.ndarray | None = None,
    optimizer_start: OptimizerState | None = None,
) -> FitResult:
    """Train ``model`` on ``data``'s training users (with ``known_positions``, on their
    positions past those: fine-tuning on what is new, :meth:`TrainingExamples.of`),
    validating on ``config.valid_users`` of the validation users
    (:meth:`~mirec.data.examples.EvaluationSet.sample`, seeded by the split's seed); leaves
    the best weights in ``model`` and in ``output_dir`` (with ``resume``, from the
    checkpoint there; the optimizer from ``optimizer_start`` when given: :func:`train_epochs`).
    In a torchrun job
    (``world``), this rank trains its slice of every batch and rank 0 keeps the best
    weights (:mod:`mirec.training.distributed`)."""
    device = resolve_device(config.device) if world is None else world.device
    model.to(device)
    valid_set = data.valid.sample(config.valid_users, config.split_seed)
    result = FitResult(valid_users=len(valid_set))
    if isinstance(model, MostPopular):
        if world is not None and not world.is_main:
            return result  # nothing to train: rank 0 counts the items
        start = time.perf_counter()
        model.fit(training_item_counts(data.sequences, data.split.train))
        result.train_seconds = time.perf_counter() - start
        result.best_valid = evaluate(model, valid_set, device=device).metrics
        result.history.append({"epoch": 0, **result.best_valid})
        save_weights(model, output_dir / WEIGHTS_FILE)
        return result

    generator = torch.Generator(device=device).manual_seed(config.seed)
    nccl = world is not None and device.type == "cuda"
    sparse = sparse_item_gradients(config, data.sequences.n_items, nccl=nccl)
    optimizer = build_optimizer(model, config, sparse)
    examples = TrainingExamples.of(data, device, config.sequence_training, known_positions)
    if len(examples) == 0 and known_positions is not None:
        # an epoch of no batch has no loss to report (it divided by zero)
        raise ConfigError(
            f"setting fine_tune_on=new: the log holds no training position that "
            f"{config.init_from} lacks (the log it was trained on?); fine_tune_on=all trains "
            "every position"
        )
    objective = build_objective(config, data, device, sparse)
    result.sparse_items = sparse
    in_batch = config.negative_sampling == "in_batch"
    with_users = model.uses_user_rows
    result.negatives = objective.num_negatives
    if in_batch:
        result.negatives = None if config.sequence_training else config.batch_size - 1
    n_examples = len(examples)
    n_batches = math.ceil(n_examples / config.batch_size)
    forward = model.loss
    if world is not None:
        n_batches = world.batches(n_examples, config.batch_size)
        forward = world.synchronised(model)
        if in_batch and not config.sequence_training:
            result.negatives = math.ceil(config.batch_size / world.size) - 1

    def batch_loss(index: torch.Tensor) -> torch.Tensor:
        histories, targets = examples.batch(index)
        users = examples.users_of(index) if with_users else None
        return forward(histories, targets, objective, generator, users)

    def epoch(number: int) -> Epoch:
        if world is not None:
            world.check_in_step(generator)
        order = torch.randperm(n_examples, device=device, generator=generator)

        def loss(b: int) -> torch.Tensor:
            index = order[b * config.batch_size : (b + 1) * config.batch_size]
            if world is None:
                return batch_loss(index)
            index, share = world.shard(index)
            return batch_loss(index) * share

        return Epoch(n_batches, examples.n_targets, loss)

    def validate() -> dict[str, float]:
        model.eval()
        return evaluate(model, valid_set, device=device).metrics

    return train_epochs(
        model,
        optimizer,
        config,
        Randomness(device, generator),
        output_dir,
        result,
        epoch=epoch,
        validate=validate,
        metric=SELECTION_METRIC,
        shown=(SELECTION_METRIC, "ndcg@50"),
        progress=progress,
        resume=resume,
        world=world,
        on_epoch=on_epoch,
        optimizer_start=optimizer_start,
    )
