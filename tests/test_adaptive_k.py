"""Data-driven adaptive K: interests with little routing mass are dropped, near-duplicate
interests are merged, each user keeps at least their heaviest interest; the ``cluster`` rule
keeps as many interests as the history has k-means clusters (by silhouette)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import silhouette_score

from mirec.config import load_config
from mirec.core.contracts import Extracted
from mirec.errors import ConfigError
from mirec.models.build import build_model
from mirec.retrieval.adaptive_k import (
    adapt_interests,
    assign_behaviours,
    count_clusters,
    interest_mass,
    interest_shares,
    kmeans,
    parse_adaptive_k,
    silhouette,
)


def test_mass_is_each_interests_share_of_the_real_history():
    # 3 real behaviours (one padded); capsule-style rows that sum to 1 over interests
    routing = torch.tensor([[[0, 0, 0], [1.0, 0, 0], [0.5, 0.5, 0], [1.0, 0, 0]]])
    mask = torch.tensor([[False, True, True, True]])
    mass = interest_mass(routing, mask)
    torch.testing.assert_close(mass, torch.tensor([[2.5 / 3, 0.5 / 3, 0.0]]))


def test_mass_rule_drops_light_interests_but_keeps_the_heaviest():
    routing = torch.tensor(
        [
            [[1.0, 0, 0], [1.0, 0, 0], [0.8, 0.2, 0], [0.0, 0.0, 1.0]],  # mass .7, .05, .25
            [[0.0, 0, 0.0], [0.0, 0, 0.0], [0.0, 0, 0.0], [0.0, 0.0, 0.0]],  # all padding
        ]
    )
    mask = torch.tensor([[True] * 4, [False] * 4])
    extracted = Extracted(torch.randn(2, 3, 4), routing)
    active = adapt_interests(extracted, mask, "mass", 0.1).active
    assert active[0].tolist() == [True, False, True]
    assert active[1].sum() == 1  # someone with no history still has one interest
    # an interest already switched off (MIND's rule) stays off
    off = extracted._replace(active=torch.tensor([[True, True, False], [True, True, True]]))
    assert adapt_interests(off, mask, "mass", 0.1).active[0].tolist() == [True, False, False]


def test_merge_rule_folds_duplicates_into_the_heavier_interest():
    interests = torch.tensor([[[1.0, 0.0], [0.99, 0.05], [0.0, 1.0]]])
    routing = torch.tensor([[[0.6, 0.4, 0.0], [0.6, 0.4, 0.0], [0.0, 0.0, 1.0]]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    merged = adapt_interests(Extracted(interests, routing), mask, "merge", 0.9)
    assert merged.active.tolist() == [[True, False, True]]
    # mass 0.4 and 0.8/3: the kept vector is the mass-weighted mean of the two
    w0, w1 = 0.4, 0.8 / 3
    expected = (w0 * interests[0, 0] + w1 * interests[0, 1]) / (w0 + w1)
    torch.testing.assert_close(merged.interests[0, 0], expected)
    torch.testing.assert_close(merged.interests[0, 2], interests[0, 2])
    # orthogonal interests are all kept, unchanged
    apart = adapt_interests(
        Extracted(interests[:, [0, 2]], routing[..., [0, 2]]), mask, "merge", 0.9
    )
    assert apart.active.all()
    torch.testing.assert_close(apart.interests, interests[:, [0, 2]])


def test_adaptive_k_applies_at_inference_only():
    config = load_config("comirec-sa", overrides=["adaptive_k=mass:0.3"])
    torch.manual_seed(0)
    model = build_model(config, n_items=40, maxlen=8)
    histories = torch.randint(1, 41, (6, 8))
    model.train()
    assert model.extract(histories).active is None
    model.eval()
    active = model.extract(histories).active
    assert active.shape == (6, 4) and (active.sum(1) >= 1).all()


def test_bad_rules_are_config_errors():
    assert parse_adaptive_k(None) is None
    assert parse_adaptive_k("merge:0.8") == ("merge", 0.8)
    with pytest.raises(ConfigError, match=r"adaptive_k='drop:0.1': expected mass:t"):
        parse_adaptive_k("drop:0.1")
    with pytest.raises(ConfigError, match="expected mass"):
        parse_adaptive_k("mass:x")


def test_share_rule_counts_items_by_where_they_route_most():
    # self-attention: each interest's weights sum to 1 over the history, so soft masses are
    # even (1/3 each) although interests 0 and 1 attend to the same two items
    # (items 0 and 1 tie between interests 0 and 1: the first wins)
    routing = torch.tensor([[[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 0.6], [0.0, 0.0, 0.4]]])
    mask = torch.ones(1, 4, dtype=torch.bool)
    extracted = Extracted(torch.randn(1, 3, 4), routing)
    shares = interest_shares(assign_behaviours(extracted, mask), 3)
    torch.testing.assert_close(shares, torch.tensor([[0.5, 0.0, 0.5]]))
    assert adapt_interests(extracted, mask, "share", 0.1).active[0].tolist() == [True, False, True]
    assert parse_adaptive_k("share:0.1") == ("share", 0.1)


def planted_history(centres: list[int], per_centre: int, d: int = 8, spread: float = 0.05):
    """Items around ``centres`` (indices of orthogonal axes), ``per_centre`` each, in a
    history left-padded by two: (1, L, d) embeddings and (1, L) mask."""
    generator = torch.Generator().manual_seed(0)
    axes = torch.eye(d)[centres].repeat_interleave(per_centre, 0)
    items = axes + spread * torch.randn(axes.shape, generator=generator)
    history = torch.cat([torch.zeros(2, d), items]).unsqueeze(0)
    mask = torch.cat([torch.zeros(2, dtype=torch.bool), torch.ones(len(items), dtype=torch.bool)])
    return history, mask.unsqueeze(0)


def test_cluster_rule_counts_planted_clusters():
    three, mask3 = planted_history([0, 3, 5], per_centre=4)
    one, mask1 = planted_history([2], per_centre=12)
    history, mask = torch.cat([three, one]), torch.cat([mask3, mask1])
    chosen, centroids, sizes = count_clusters(history, mask, max_k=4, threshold=0.25)
    assert chosen.tolist() == [3, 1]
    # splitting one tight group still scores ~0.2: below 0.25 is "no substantial structure"
    assert count_clusters(history, mask, max_k=4, threshold=0.1)[0].tolist() == [3, 2]
    assert sizes[0].tolist() == [4, 4, 4, 0] and sizes[1].tolist() == [12, 0, 0, 0]
    # each found centroid is one planted axis
    axes = F.normalize(centroids[0, :3], dim=-1).abs().argmax(-1)
    assert sorted(axes.tolist()) == [0, 3, 5]
    # K'_u = 3: the three interests that point at the planted axes; K'_u = 1 for the other
    interests = torch.eye(8)[[7, 5, 0, 3]].expand(2, 4, 8)
    kept = adapt_interests(Extracted(interests), mask, "cluster", 0.25, history=history).active
    assert kept[0].tolist() == [False, True, True, True]
    assert kept[1].sum() == 1
    # an interest already switched off (MIND's rule) stays off: the user keeps what is left
    off = torch.tensor([[True, True, False, True], [True] * 4])
    kept = adapt_interests(
        Extracted(interests, active=off), mask, "cluster", 0.25, history=history
    ).active
    assert kept[0].tolist() == [True, True, False, True]
    # a threshold above every silhouette keeps one cluster
    assert count_clusters(history, mask, 4, 1.0)[0].tolist() == [1, 1]


def test_silhouette_matches_scikit_learn():
    generator = torch.Generator().manual_seed(3)
    points = F.normalize(torch.randn(1, 9, 5, generator=generator, dtype=torch.float64), dim=-1)
    mask = torch.ones(1, 9, dtype=torch.bool)
    for k in (2, 3, 4):
        labels, _ = kmeans(points, mask, torch.arange(k).unsqueeze(0))
        ours = silhouette(torch.cdist(points, points), labels, k)
        theirs = silhouette_score(points[0].numpy(), labels[0].numpy(), metric="euclidean")
        assert ours.item() == pytest.approx(theirs, abs=1e-9)
    # one cluster, and as many clusters as points, are undefined (scikit-learn refuses both)
    lone = torch.zeros(1, 9, dtype=torch.long)
    assert silhouette(torch.cdist(points, points), lone, 1).isnan().all()
    assert silhouette(torch.cdist(points, points), torch.arange(9).unsqueeze(0), 9).isnan().all()


def test_cluster_rule_ignores_padding_and_is_deterministic():
    history, mask = planted_history([0, 3, 5], per_centre=4)
    chosen, centroids, _ = count_clusters(history, mask, 4, 0.1)
    # garbage in the padded positions changes nothing
    noisy = history.clone()
    noisy[0, :2] = torch.tensor([[0.0, 0, 0, 0, 0, 0, 0, 9], [0.0, 9, 0, 0, 0, 0, 0, 0]])
    again, noisy_centroids, _ = count_clusters(noisy, mask, 4, 0.1)
    assert again.tolist() == chosen.tolist() == [3]
    torch.testing.assert_close(noisy_centroids, centroids)
    # the same batch twice gives the same result bit for bit
    interests = torch.randn(1, 4, 8, generator=torch.Generator().manual_seed(1))
    first = adapt_interests(Extracted(interests), mask, "cluster", 0.1, history=history)
    second = adapt_interests(Extracted(interests), mask, "cluster", 0.1, history=history)
    assert torch.equal(first.active, second.active) and first.active.sum() == 3
    # an empty history keeps one interest
    empty = adapt_interests(
        Extracted(interests), torch.zeros_like(mask), "cluster", 0.1, history=history
    )
    assert empty.active.sum() == 1
    with pytest.raises(ValueError, match="embedded history"):
        adapt_interests(Extracted(interests), mask, "cluster", 0.1)


def test_cluster_rule_parses_and_is_checked():
    assert parse_adaptive_k("cluster:0.1") == ("cluster", 0.1)
    assert load_config("comirec-sa", overrides=["adaptive_k=cluster:-0.2"]).adaptive_k
    with pytest.raises(ConfigError, match="adaptive_k"):
        parse_adaptive_k(load_config("comirec-sa", overrides=["adaptive_k=cluster:1.5"]).adaptive_k)


def test_cluster_rule_through_mirec_evaluate(ml100k_run: Path, tmp_path: Path):
    out = tmp_path / "cluster"
    args = ["evaluate", "--checkpoint", str(ml100k_run), "--output-dir", str(out),
            "--set", "adaptive_k=cluster:0.1", "--quiet"]  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "mirec", *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["inference_settings"]["adaptive_k"] == "cluster:0.1"
    counts = {int(k): v for k, v in metrics["interest_counts"].items()}
    assert sum(counts.values()) == metrics["n_test_users"]
    assert set(counts) <= {1, 2, 3, 4}
    assert "effective_interests" in metrics["diagnostics"]
    assert 0 < metrics["test"]["recall@50"] <= 1
