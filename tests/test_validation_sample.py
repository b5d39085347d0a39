"""Validation that fits: a fixed, seeded sample of ``valid_users`` validation users, every
``valid_every`` epochs, with patience counted in validations; the test pass stays whole."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mirec.config import load_config
from mirec.errors import ConfigError
from mirec.evaluation.evaluator import evaluate
from mirec.models.build import build_model
from mirec.runs import prepare_for, train_run
from mirec.training.trainer import fit

# a small ComiRec-SA on ml-100k: an epoch in about a second on one thread
SMALL = ["embedding_dim=8", "maxlen=10", "batch_size=1024", "num_negatives=64"]


def small_config(*settings: str):
    return load_config("comirec-sa", overrides=[*SMALL, *settings], dataset="ml-100k")


@pytest.fixture(scope="module")
def ml100k(shared_data):
    return prepare_for(small_config(), shared_data)


def test_the_sample_is_fixed_seeded_and_keeps_each_users_targets(ml100k):
    valid = ml100k.valid
    a, b, other = valid.sample(20, 42), valid.sample(20, 42), valid.sample(20, 7)
    assert len(a) == 20 and np.array_equal(a.users, b.users)  # the same users every time
    assert not np.array_equal(a.users, other.users)  # drawn by the seed
    rows = [int(np.flatnonzero(valid.users == user)[0]) for user in a.users]
    assert rows == sorted(rows)  # in the split's order
    for j, row in enumerate(rows):
        assert np.array_equal(a.targets_of(j), valid.targets_of(row))
        assert torch.equal(a.histories[j], valid.histories[row])
    # as many as the split has, or more: the split itself, as before the setting existed
    assert valid.sample(len(valid), 42) is valid
    assert valid.sample(None, 42) is valid


def test_valid_users_is_honoured_and_recorded(ml100k, shared_data, tmp_path):
    config = small_config("max_epochs=1", "valid_users=20")
    metrics = train_run(config, tmp_path / "run", data_dir=shared_data, progress=False)
    assert metrics.valid_users == 20 and metrics.valid_every == 1
    assert metrics.header.n_valid_users == len(ml100k.valid) > 20
    assert metrics.header.n_test_users == len(ml100k.test)  # the test pass stays whole
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written["config"]["valid_users"] == 20
    # the recorded validation figures are those of the seeded sample, not of all users
    torch.manual_seed(config.seed)
    model = build_model(config, ml100k.sequences.n_items, ml100k.maxlen)
    result = fit(model, ml100k, config, tmp_path, progress=False)
    sample = ml100k.valid.sample(20, config.split_seed)
    assert result.best_valid == evaluate(model, sample).metrics
    assert result.best_valid != evaluate(model, ml100k.valid).metrics


def test_epochs_without_validation_do_not_count_for_patience(ml100k, tmp_path):
    # a learning rate so small that no step changes a weight: every validation ties the
    # first, so each one after it costs one unit of patience
    config = small_config("max_epochs=9", "valid_every=2", "patience=2", "lr=1e-30")
    torch.manual_seed(config.seed)
    model = build_model(config, ml100k.sequences.n_items, ml100k.maxlen)
    result = fit(model, ml100k, config, tmp_path, progress=False)
    validated = [row["epoch"] for row in result.history if "recall@50" in row]
    assert validated == [2, 4, 6]  # counted in epochs, patience 2 would stop at epoch 4
    assert [row["epoch"] for row in result.history] == [1, 2, 3, 4, 5, 6]
    assert result.stopped_by == "early_stopping" and result.best_epoch == 2


def test_the_last_epoch_is_validated(ml100k, tmp_path):
    config = small_config("max_epochs=3", "valid_every=2")
    torch.manual_seed(config.seed)
    model = build_model(config, ml100k.sequences.n_items, ml100k.maxlen)
    result = fit(model, ml100k, config, tmp_path, progress=False)
    assert [row["epoch"] for row in result.history if "recall@50" in row] == [2, 3]


@pytest.mark.parametrize("setting", ["valid_users=0", "valid_every=0", "valid_users=-5"])
def test_bad_values_are_refused(setting):
    with pytest.raises(ConfigError, match=setting.split("=")[0]):
        small_config(setting)
