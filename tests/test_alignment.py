"""Alignment of an interest's recommendations with the categories of its history: by hand on
constructed tensors, and end to end on a trained ml-100k model (metrics.json and inspect)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mirec.cli.main import app
from mirec.core.contracts import Extracted
from mirec.data.prepare import load_sequences
from mirec.evaluation.diagnostics import (
    alignment_chance,
    interest_alignment,
    interest_category_counts,
    top_categories,
)
from mirec.evaluation.inspection import _explain, inspect_folder
from mirec.retrieval.ranking import interest_top_n
from mirec.runs import evaluate_folder

# categories A = 0, B = 1, C = 2; item index 0 is the padding
CATEGORIES = torch.tensor(
    [
        [False, False, False],  # 0 padding
        [True, False, False],  # 1: A
        [True, True, False],  # 2: A and B
        [False, True, False],  # 3: B
        [False, False, True],  # 4: C
        [False, False, True],  # 5: C
        [False, False, False],  # 6: none
    ]
)


def hand_case() -> tuple[torch.Tensor, torch.Tensor]:
    """One user, history 1 2 3 4 (and padding); items 1 and 2 go to interest 0, items 3 and
    4 to interest 1, none to interest 2. Interest 0 counts A 2, B 1; interest 1 B 1, C 1."""
    histories = torch.tensor([[0, 1, 2, 3, 4]])
    assignment = torch.tensor([[-1, 0, 0, 1, 1]])
    return histories, interest_category_counts(assignment, CATEGORIES[histories], 3)


def test_category_counts_and_top_categories_by_hand():
    _, counts = hand_case()
    assert counts[0].tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 0]]
    top3 = top_categories(counts)
    assert top3[0].tolist() == [[True, True, False], [False, True, True], [False, False, False]]
    # one category: A for interest 0; B and C tie for interest 1, the lower code wins
    top1 = top_categories(counts, 1)
    assert top1[0].tolist() == [[True, False, False], [False, True, False], [False] * 3]


def test_alignment_and_chance_by_hand():
    _, counts = hand_case()
    top = top_categories(counts)  # interest 0: {A, B}; interest 1: {B, C}; interest 2: none
    recommended = torch.tensor([[[5, 3], [5, 4], [1, 2]]])
    aligned = interest_alignment(top, recommended, CATEGORIES)
    # interest 0: item 5 (C) no, item 3 (B) yes -> 1/2; interest 1: both C -> 1
    assert aligned[0, :2].tolist() == [0.5, 1.0]
    assert math.isnan(aligned[0, 2])  # no history items: no alignment
    assert aligned.nanmean(1).item() == pytest.approx(0.75)
    # draws by popularity: items 1..5 weigh 0.1 each, item 6 (no category) 0.5
    weight = torch.tensor([0.0, 0.1, 0.1, 0.1, 0.1, 0.1, 0.5])
    chance = alignment_chance(top, CATEGORIES, weight)
    # {A, B}: items 1, 2, 3 -> 0.3; {B, C}: items 2, 3, 4, 5 -> 0.4
    assert chance[0, :2].tolist() == pytest.approx([0.3, 0.4])
    assert math.isnan(chance[0, 2])


def test_interest_top_n_ranks_each_interest_alone_without_blocked_items():
    items = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.1, 0.9], [0.5, 0.5]])
    extracted = Extracted(torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]))
    blocked = torch.tensor([[True, False, False, False, False]])  # item 1
    top = interest_top_n(extracted, items, 2, blocked)
    assert top.tolist() == [[[3, 5], [2, 4]]]


def test_alignment_in_metrics_json_and_inspect(ml100k_run, shared_data, tmp_path):
    metrics = evaluate_folder(ml100k_run, tmp_path, progress=False)
    written = json.loads((tmp_path / "metrics.json").read_text())
    for found in (metrics.figures.diagnostics, written["diagnostics"]):
        assert 0.0 <= found["alignment@10"] <= 1.0
        assert 0.0 < found["alignment_chance@10"] < 1.0

    result = CliRunner().invoke(
        app, ["inspect", "--checkpoint", str(ml100k_run), "--user", "1", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    rows = [row for row in report["interests"] if row["alignment"] is not None]
    assert rows
    # an alignment is a share of 10 recommendations; the user's is the mean of the interests'
    assert all(round(row["alignment"] * 10, 6).is_integer() for row in rows)
    assert report["alignment"] == pytest.approx(np.mean([row["alignment"] for row in rows]))

    # recomputed by hand from the report: the share of each interest's top-10 carrying one of
    # the three categories that name it (inspect's own explanation)
    seqs = load_sequences("ml-100k", data_dir=shared_data)
    index = {str(item): i + 1 for i, item in enumerate(seqs.item_ids)}
    names = [str(name) for name in seqs.category_names]
    for row in inspect_folder(ml100k_run, user="1").interests:
        members = np.array([index[item.item] for item in row.history])
        top = {name for name, _ in _explain(seqs, members)[:3]}
        hits = [
            bool(top & {names[c] for c in seqs.categories_of(index[item.item])})
            for item in row.recommendations
        ]
        assert row.alignment == pytest.approx(np.mean(hits)), row.index

    text = CliRunner().invoke(app, ["inspect", "--checkpoint", str(ml100k_run), "--user", "1"])
    assert "alignment (mean over the interests): " in text.output
