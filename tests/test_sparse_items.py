"""Sparse item gradients (``sparse_items``): the same loss and gradients as the dense path,
Adam's update on the rows a step touches, auto's choice, a real training, and batches
gathered from memory-mapped int32 sequences."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch

from mirec.config import load_config
from mirec.data.examples import evaluation_set
from mirec.data.prepare import prepare, split_sequences
from mirec.data.sequences import Sequences
from mirec.errors import ConfigError, MirecError
from mirec.evaluation.evaluator import evaluate
from mirec.models.build import build_ctr_model, build_model
from mirec.training.checkpoint import Randomness, restore_checkpoint, save_checkpoint
from mirec.training.optimizer import (
    SPARSE_ITEMS_MIN_CATALOGUE,
    JointOptimizer,
    RowAdam,
    build_optimizer,
    sparse_item_gradients,
)
from mirec.training.trainer import (
    BestCheckpoint,
    FitResult,
    TrainingExamples,
    fit,
    objective_of,
)

CPU = torch.device("cpu")
N_ITEMS = 2000


def _batch(seed: int, n: int = 64, maxlen: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    histories = torch.randint(0, N_ITEMS + 1, (n, maxlen), generator=gen)
    histories[:, -1] = torch.randint(1, N_ITEMS + 1, (n,), generator=gen)
    return histories, torch.randint(1, N_ITEMS + 1, (n,), generator=gen)


def _counts() -> np.ndarray:
    counts = np.random.default_rng(0).integers(0, 50, N_ITEMS + 1)
    counts[0] = 0
    return counts


@pytest.mark.parametrize(
    ("name", "settings"),
    [
        ("comirec-sa", ["num_negatives=0"]),  # the exact softmax
        ("comirec-sa", ["num_negatives=50"]),
        ("mind", ["num_negatives=50"]),
        ("sine", ["num_negatives=50"]),
        ("remi", ["num_negatives=50", "negative_sampling=popularity"]),
        ("comirec-sa", ["negative_sampling=in_batch"]),
    ],
)
def test_sparse_and_dense_paths_give_one_loss_gradient_and_first_step(name, settings):
    config = load_config(name, overrides=settings)
    torch.manual_seed(0)
    dense = build_model(config, N_ITEMS, 20)
    sparse = copy.deepcopy(dense)
    optimizers = {False: build_optimizer(dense, config, False)}
    optimizers[True] = build_optimizer(sparse, config, True)
    assert isinstance(optimizers[True], JointOptimizer)
    counts = _counts() if config.negative_sampling != "uniform" else None
    histories, targets = _batch(1)
    losses = {}
    for is_sparse, model in ((False, dense), (True, sparse)):
        objective = objective_of(config, N_ITEMS, counts, CPU, is_sparse)
        assert objective.sparse == is_sparse
        # the sparse path runs autograd's form of the loss; the dense one must too, or the
        # fused form's float rounding flips the sign of near-zero gradients, and with it
        # Adam's first step (lr * sign)
        objective.fused = False
        torch.manual_seed(5)  # MIND's routing logits draw from the global generator
        generator = torch.Generator().manual_seed(7)
        losses[is_sparse] = model.loss(histories, targets, objective, generator)
        losses[is_sparse].backward()
    torch.testing.assert_close(losses[True], losses[False])
    table_grad = sparse.item_embedding.weight.grad
    assert table_grad.is_sparse
    torch.testing.assert_close(table_grad.to_dense(), dense.item_embedding.weight.grad)
    for (key, a), b in zip(dense.named_parameters(), sparse.parameters(), strict=True):
        if key != "item_embedding.weight":
            torch.testing.assert_close(b.grad, a.grad, msg=key)
    before = sparse.item_embedding.weight.detach().clone()
    optimizers[False].step()
    optimizers[True].step()
    # Adam's first step: every weight moves the same; rows without a gradient not at all
    for (key, a), b in zip(dense.named_parameters(), sparse.parameters(), strict=True):
        torch.testing.assert_close(b, a, msg=key)
    after = sparse.item_embedding.weight.detach()
    untouched = torch.ones(N_ITEMS + 1, dtype=torch.bool)
    untouched[table_grad.coalesce().indices()[0]] = False
    assert untouched[0]  # the padding row
    assert untouched[1:].any() != objective.exact
    assert torch.equal(after[untouched], before[untouched])
    assert not torch.equal(after[~untouched], before[~untouched])


def test_row_adam_is_adam_on_rows_every_step_touches_and_leaves_the_others():
    torch.manual_seed(0)
    start = torch.randn(40, 8)
    lazy, dense = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    row_adam, adam = RowAdam([lazy], lr=0.01), torch.optim.Adam([dense], lr=0.01)
    rows = torch.arange(0, 30)  # rows 30..39 are never touched
    for step in range(25):
        values = torch.randn(len(rows), 8) * 10.0 ** (-step % 8)  # down to 1e-7, near eps
        # a gradient with repeated rows: RowAdam sums them, as the dense gradient does
        index = torch.cat([rows, rows[:5]])
        lazy.grad = torch.sparse_coo_tensor(
            index.unsqueeze(0), torch.cat([values, values[:5]]), (40, 8), check_invariants=True
        )
        dense.grad = lazy.grad.to_dense()
        row_adam.step()
        adam.step()
    torch.testing.assert_close(lazy, dense)
    assert torch.equal(lazy[30:], start[30:])
    assert torch.equal(row_adam.state[lazy]["exp_avg"][30:], torch.zeros(10, 8))
    lazy.grad = torch.ones_like(lazy)
    with pytest.raises(RuntimeError, match="RowAdam takes sparse gradients"):
        row_adam.step()


def test_auto_is_dense_on_the_published_datasets_and_sparse_above_the_threshold(shared_data):
    config = load_config("comirec-sa")
    assert config.sparse_items == "auto"
    n_items = prepare("ml-100k", data_dir=shared_data).sequences.n_items
    assert not sparse_item_gradients(config, n_items)
    assert not sparse_item_gradients(config, 12101)  # amazon-beauty, the largest
    assert not sparse_item_gradients(config, SPARSE_ITEMS_MIN_CATALOGUE - 1)
    assert sparse_item_gradients(config, SPARSE_ITEMS_MIN_CATALOGUE)
    assert sparse_item_gradients(load_config("mind"), 2_000_000)
    # every row has a gradient at every step, or SparseAdam's missing weight decay: dense
    assert not sparse_item_gradients(load_config("comirec-sa", num_negatives=0), 2_000_000)
    assert not sparse_item_gradients(load_config("comirec-sa", weight_decay=1e-4), 2_000_000)
    assert sparse_item_gradients(load_config("din", task="ctr"), 2_000_000)
    # forced either way
    assert sparse_item_gradients(load_config("comirec-sa", sparse_items=True), 50)
    assert not sparse_item_gradients(load_config("comirec-sa", sparse_items=False), 2_000_000)


def test_sparse_items_settings_are_checked():
    with pytest.raises(ConfigError, match=r"setting sparse_items='sometimes': must be true"):
        load_config("comirec-sa", overrides=["sparse_items=sometimes"])
    with pytest.raises(ConfigError, match=r"sparse_items=True: .* has no weight decay"):
        load_config("comirec-sa", overrides=["sparse_items=true", "weight_decay=0.01"])
    assert load_config("comirec-sa", overrides=["sparse_items=true"]).sparse_items is True


def test_short_sparse_training_beats_popularity_on_synthetic(tmp_path):
    data = prepare("synthetic:n_users=1500,n_items=600,n_clusters=12")
    popular = build_model(load_config("most-popular"), data.sequences.n_items, data.maxlen)
    fit(popular, data, load_config("most-popular"), tmp_path, progress=False)
    baseline = evaluate(popular, data.test).metrics["recall@50"]
    settings = ["max_epochs=3", "sparse_items=true", "num_negatives=100"]
    config = load_config("comirec-sa", overrides=settings)
    torch.manual_seed(0)
    model = build_model(config, data.sequences.n_items, data.maxlen)
    result = fit(model, data, config, tmp_path, progress=False)
    assert result.sparse_items
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < losses[0]
    # as the dense test of test_models.py asks: measured about 0.35 against 0.14
    assert evaluate(model, data.test).metrics["recall@50"] > 1.5 * baseline


def test_ctr_model_trains_its_item_table_sparse():
    data = prepare("synthetic:n_users=150,n_items=70,n_clusters=4")
    config = load_config("din", task="ctr", sparse_items=True)
    model = build_ctr_model(config, data.sequences, data.maxlen)
    optimizer = build_optimizer(model, config, True)
    histories, candidates = _batch(2, n=16, maxlen=data.maxlen)
    histories, candidates = histories % 71, candidates % 71 + (candidates % 71 == 0)
    before = model.item_table.weight.detach().clone()
    model.loss(histories, candidates, torch.ones(16)).backward()
    assert model.item_table.weight.grad.is_sparse
    optimizer.step()
    moved = (model.item_table.weight != before).any(1)
    seen = torch.zeros(71, dtype=torch.bool)
    seen[histories.flatten()] = True
    seen[candidates] = True
    seen[0] = False  # padding
    assert torch.equal(moved, seen)


def _step_state(tmp_path, sparse: bool):
    config = load_config("comirec-sa", sparse_items=sparse, num_negatives=20)
    torch.manual_seed(0)
    model = build_model(config, N_ITEMS, 20)
    optimizer = build_optimizer(model, config, sparse)
    objective = objective_of(config, N_ITEMS, None, CPU, sparse)
    generator = torch.Generator().manual_seed(3)
    for seed in range(3):
        optimizer.zero_grad()
        model.loss(*_batch(seed), objective, generator).backward()
        optimizer.step()
    result = FitResult(sparse_items=sparse)
    best = BestCheckpoint(model, "recall@50", 3, None)
    return config, model, optimizer, Randomness(CPU, generator), best, result


def test_a_sparse_checkpoint_restores_every_moment_and_refuses_a_dense_run(tmp_path):
    path = tmp_path / "checkpoint.safetensors"
    config, model, optimizer, randomness, best, result = _step_state(tmp_path, True)
    save_checkpoint(path, 3, False, model, optimizer, randomness, best, result)
    _, fresh, fresh_optimizer, fresh_randomness, fresh_best, fresh_result = _step_state(
        tmp_path, True
    )
    for parameter in fresh.parameters():  # the state must come from the file
        parameter.data.zero_()
    fresh_optimizer = build_optimizer(fresh, config, True)
    assert restore_checkpoint(
        path, fresh, fresh_optimizer, fresh_randomness, fresh_best, fresh_result
    ) == (3, False)
    for a, b in zip(model.parameters(), fresh.parameters(), strict=True):
        assert torch.equal(a, b)
    want, got = optimizer.state_dict(), fresh_optimizer.state_dict()
    assert want["state"].keys() == got["state"].keys()
    for index, state in want["state"].items():
        for key, value in state.items():
            assert torch.equal(torch.as_tensor(got["state"][index][key]), torch.as_tensor(value))
    # a run that resolves its table to dense cannot take this state
    _, dense, dense_optimizer, dense_randomness, dense_best, dense_result = _step_state(
        tmp_path, False
    )
    with pytest.raises(MirecError, match="sparse gradients, and this run's are dense"):
        restore_checkpoint(path, dense, dense_optimizer, dense_randomness, dense_best, dense_result)


def _memmap(tmp_path, name: str, array: np.ndarray) -> np.memmap:
    out = np.memmap(tmp_path / name, dtype=array.dtype, mode="w+", shape=array.shape)
    out[:] = array
    out.flush()
    return np.memmap(tmp_path / name, dtype=array.dtype, mode="r", shape=array.shape)


def test_batches_gather_from_memory_mapped_int32_sequences_without_copying(tmp_path):
    data = prepare("synthetic:n_users=300,n_items=120,n_clusters=4")
    seqs = data.sequences
    mapped = Sequences(
        user_ids=seqs.user_ids,
        offsets=_memmap(tmp_path, "offsets", seqs.offsets.astype(np.int64)),
        items=_memmap(tmp_path, "items", seqs.items.astype(np.int32)),
        item_ids=seqs.item_ids,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "not writable" warning either
        on_disk = split_sequences(data.name, mapped, data.split.seed, data.maxlen)
        examples = TrainingExamples.of(on_disk, CPU)
        windows = TrainingExamples.of(on_disk, CPU, windows=True)
    # the items are the memory map itself, not a copy of it
    assert examples.items.dtype == torch.int32
    assert examples.items.data_ptr() == mapped.items.ctypes.data
    reference = TrainingExamples.of(data, CPU)
    index = torch.randperm(len(reference), generator=torch.Generator().manual_seed(0))[:200]
    for got, want in zip(examples.batch(index), reference.batch(index), strict=True):
        assert got.dtype == torch.int64
        assert torch.equal(got, want)
    reference_windows = TrainingExamples.of(data, CPU, windows=True)
    for got, want in zip(
        windows.batch(index % len(windows)),
        reference_windows.batch(index % len(windows)),
        strict=True,
    ):
        assert got.dtype == torch.int64 and torch.equal(got, want)
    test = evaluation_set(mapped, data.split.test, data.maxlen)
    assert test.histories.dtype == torch.int64
    assert torch.equal(test.histories, data.test.histories)
