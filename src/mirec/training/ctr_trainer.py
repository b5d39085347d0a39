"""Train a CTR model with binary cross-entropy and early stopping on validation AUC, through
the retrieval trainer's epoch loop (:func:`~mirec.training.trainer.train_epochs`).

Each epoch draws fresh negatives for every training position (the run's seeded generator,
so a run repeats exactly); validation and test rows are the stored ones of
:mod:`mirec.data.ctr_samples`. The best state on validation AUC is written to
``model.safetensors`` and restored at the end.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from mirec.core.config import Config
from mirec.core.device import resolve_device
from mirec.data.ctr_samples import CTRData, CTRRows, training_rows
from mirec.data.examples import gather_histories, host_tensor, training_item_counts
from mirec.evaluation.ctr_metrics import ctr_metrics
from mirec.models.ctr_model import PopularityCTR
from mirec.models.folder import WEIGHTS_FILE, save_weights
from mirec.training.checkpoint import OptimizerState, Randomness
from mirec.training.optimizer import build_optimizer, sparse_item_gradients
from mirec.training.progress import EpochHook, FitResult
from mirec.training.trainer import Epoch, train_epochs

SELECTION_METRIC = "auc"
PREDICT_BATCH = 4096
SHORT_PATIENCE_STEPS = 100
"""Below this many training steps of patience, early stopping is likely premature (a
small log such as taobao-sample has about 20 steps per epoch): say so."""


class RowBatches:
    """Gathers (histories, behaviours, candidates, labels) of CTR rows on the device."""

    def __init__(self, data: CTRData, device: torch.device) -> None:
        seqs = data.sequences
        self.items = host_tensor(seqs.items).to(device)
        self.behaviors = (
            None if seqs.behaviors is None else torch.from_numpy(seqs.behaviors).to(device)
        )
        self.maxlen = data.maxlen
        self.device = device

    def __call__(
        self, rows: CTRRows, index: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
        starts = torch.from_numpy(rows.starts[index]).to(self.device)
        ends = torch.from_numpy(rows.ends[index]).to(self.device)
        histories = gather_histories(self.items, starts, ends, self.maxlen)
        behaviors = None
        if self.behaviors is not None:
            behaviors = gather_histories(self.behaviors, starts, ends, self.maxlen)
        candidates = torch.from_numpy(rows.items[index]).to(self.device)
        labels = torch.from_numpy(rows.labels[index]).to(self.device)
        return histories, behaviors, candidates, labels


@torch.no_grad()
def predict_logits(model: torch.nn.Module, rows: CTRRows, batches: RowBatches) -> np.ndarray:
    was_training = model.training
    model.eval()
    out = []
    for lo in range(0, len(rows), PREDICT_BATCH):
        index = np.arange(lo, min(lo + PREDICT_BATCH, len(rows)))
        histories, behaviors, candidates, _ = batches(rows, index)
        out.append(model(histories, candidates, behaviors).double().cpu().numpy())
    model.train(was_training)
    return np.concatenate(out) if out else np.empty(0)


def evaluate_ctr(model: torch.nn.Module, rows: CTRRows, batches: RowBatches) -> dict[str, float]:
    """AUC, GAUC and LogLoss of ``model`` on ``rows``."""
    return ctr_metrics(rows.labels, predict_logits(model, rows, batches), rows.users)


def fit_ctr(
    model: torch.nn.Module,
    data: CTRData,
    config: Config,
    output_dir: Path,
    *,
    progress: bool = True,
    resume: bool = False,
    on_epoch: EpochHook | None = None,
    optimizer_start: OptimizerState | None = None,
) -> FitResult:
    """Train ``model`` on the training users' rows; leaves the best weights in ``model``
    and in ``output_dir`` (with ``resume``, from the checkpoint there; the optimizer from
    ``optimizer_start`` when given)."""
    device = resolve_device(config.device)
    model.to(device)
    batches = RowBatches(data, device)
    result = FitResult(negatives=data.negatives)
    seqs, split = data.sequences, data.prepared.split
    if isinstance(model, PopularityCTR):
        start = time.perf_counter()
        model.fit(training_item_counts(seqs, split.train))
        result.train_seconds = time.perf_counter() - start
        result.best_valid = evaluate_ctr(model, data.valid, batches)
        result.history.append({"epoch": 0, **result.best_valid})
        save_weights(model, output_dir / WEIGHTS_FILE)
        return result

    rng = np.random.default_rng(config.seed)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    result.sparse_items = sparse_item_gradients(config, seqs.n_items)
    optimizer = build_optimizer(model, config, result.sparse_items)

    def epoch(number: int) -> Epoch:
        # fresh negatives, then the order: the rng's draws come in this order every epoch
        rows = training_rows(seqs, split.train, data.negatives, data.interacted, rng)
        order = rng.permutation(len(rows))
        n_batches = math.ceil(len(rows) / config.batch_size)
        if number == 1 and n_batches * config.patience < SHORT_PATIENCE_STEPS:
            tqdm.write(
                f"note: {n_batches} training steps per epoch, so patience {config.patience} "
                f"may stop training within {n_batches * config.patience} steps of the best "
                "epoch, before a model has learned much; on logs this small raise it "
                "(--set patience=10)"
            )

        def loss(b: int) -> torch.Tensor:
            histories, behaviors, candidates, labels = batches(
                rows, order[b * config.batch_size : (b + 1) * config.batch_size]
            )
            return model.loss(histories, candidates, labels, behaviors, generator)

        return Epoch(n_batches, len(rows), loss)

    return train_epochs(
        model,
        optimizer,
        config,
        Randomness(device, generator, rng),
        output_dir,
        result,
        epoch=epoch,
        validate=lambda: evaluate_ctr(model, data.valid, batches),
        metric=SELECTION_METRIC,
        shown=(SELECTION_METRIC, "gauc", "logloss"),
        progress=progress,
        resume=resume,
        on_epoch=on_epoch,
        optimizer_start=optimizer_start,
    )
