"""mirec compare: buckets, the paired bootstrap, and two real ml-100k runs end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mirec.config import load_config
from mirec.data.examples import EvaluationSet
from mirec.data.sequences import Sequences
from mirec.errors import ConfigError
from mirec.evaluation import compare
from mirec.models.folder import read_metrics
from mirec.runs import compare_folders, train_run

# --------------------------------------------------------------------------- hand-computed


def test_quantile_buckets_keep_ties_together_and_leave_no_gap() -> None:
    values = np.array([1, 2, 3, 4, 5, 6, 7, 8], dtype=float)
    # quartile edges 2.75, 4.5, 6.25
    assert compare.quantile_buckets(values).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    tied = np.array([0, 0, 0, 0, 0, 0, 1, 2], dtype=float)
    # edges 0, 0, 0.25: one edge at 0 and one at 0.25; the zeros share the lowest bucket
    assert compare.quantile_buckets(tied).tolist() == [0, 0, 0, 0, 0, 0, 1, 1]
    assert compare.quantile_buckets(np.full(5, 3.0)).tolist() == [0] * 5


def test_paired_bootstrap_identical_runs_and_b_better_everywhere() -> None:
    rng = np.random.default_rng(1)
    a = rng.random(200)
    assert compare.paired_bootstrap(a, a) == (0.0, 0.0, 0.0)
    b = a + 0.01 + 0.02 * rng.random(200)  # better for every user
    mean, low, high = compare.paired_bootstrap(a, b)
    assert mean == pytest.approx(float(np.mean(b - a)))
    assert 0.01 < low < mean < high < 0.03
    # seeded: the same interval again, another seed another one
    assert compare.paired_bootstrap(a, b) == (mean, low, high)
    assert compare.paired_bootstrap(a, b, seed=7) != (mean, low, high)
    # the resamples pair users: a constant per-user gain has no spread at all
    assert compare.paired_bootstrap(a, a + 0.05)[1:] == pytest.approx((0.05, 0.05))


def test_bootstrap_in_chunks_matches_its_definition(monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = np.zeros(10), np.arange(10, dtype=float)
    whole = compare.paired_bootstrap(a, b, resamples=50, seed=3)
    monkeypatch.setattr(compare, "_RESAMPLE_CELLS", 30)  # 3 resamples per chunk
    assert compare.paired_bootstrap(a, b, resamples=50, seed=3) == whole


def _tiny() -> tuple[Sequences, EvaluationSet]:
    """Items 1-4 with categories 0, 0, 1, (none); three users' histories and targets."""
    seqs = Sequences(
        user_ids=np.array([1, 2, 3]),
        offsets=np.array([0, 0, 0, 0]),
        items=np.array([], dtype=np.int64),
        item_ids=np.array([10, 20, 30, 40]),
        item_category_offsets=np.array([0, 1, 2, 3, 3]),
        item_category_codes=np.array([0, 0, 1]),
        category_names=np.array(["x", "y"]),
    )
    histories = torch.tensor([[0, 0, 1, 2], [1, 2, 3, 4], [0, 0, 0, 4]])
    eval_set = EvaluationSet(
        users=np.array([0, 1, 2]),
        histories=histories,
        target_offsets=np.array([0, 2, 3, 5]),
        target_items=np.array([1, 4, 3, 2, 4]),
    )
    return seqs, eval_set


def test_user_features_by_hand() -> None:
    seqs, eval_set = _tiny()
    counts = np.array([0, 9, 5, 1, 1])  # 4 items: the head is the top 20%, item 1 alone
    assert compare.user_features(seqs, eval_set, counts, "history_length").tolist() == [2, 4, 1]
    assert compare.user_features(seqs, eval_set, counts, "categories").tolist() == [1, 2, 0]
    # user 2: categories 0, 0, 1 (item 4 has none) -> shares 2/3, 1/3
    h = -(2 / 3 * np.log2(2 / 3) + 1 / 3 * np.log2(1 / 3))
    entropy = compare.user_features(seqs, eval_set, counts, "entropy")
    assert entropy.tolist() == pytest.approx([0.0, h, 0.0])
    tail = compare.user_features(seqs, eval_set, counts, "target_popularity")
    assert tail.tolist() == [0.5, 1.0, 1.0]
    with pytest.raises(ConfigError, match="--by 'age'"):
        compare.user_features(seqs, eval_set, counts, "age")


def test_compare_users_rows() -> None:
    feature = np.array([1, 1, 2, 2, 3, 3, 4, 4], dtype=float)
    a = {m: np.linspace(0, 0.7, 8) for m in compare.METRICS}
    rows = compare.compare_users(a, a, feature, resamples=100)
    assert [r.bucket for r in rows] == ["all users", "1", "2", "3", "4"]
    assert [r.users for r in rows] == [8, 2, 2, 2, 2]
    for row in rows:
        for metric in compare.METRICS:
            assert row.difference[metric] == {"mean": 0.0, "ci_low": 0.0, "ci_high": 0.0}
            assert row.a[metric] == row.b[metric]


# --------------------------------------------------------------------------- real runs


@pytest.fixture(scope="session")
def ml100k_popular(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MostPopular on ml-100k (a second run on the ml100k_run's test users)."""
    out = tmp_path_factory.mktemp("ml100k-pop") / "pop"
    config = load_config("most-popular", dataset="ml-100k")
    train_run(config, out, data_dir=shared_data, progress=False)
    return out


def test_two_ml100k_runs_end_to_end(
    ml100k_run: Path, ml100k_popular: Path, tmp_path: Path, mirec_main
) -> None:
    code, out, err = mirec_main(
        "compare", str(ml100k_popular), str(ml100k_run), "--by", "categories",
        "--out", str(tmp_path / "cmp"), "--resamples", "200", "--quiet",
    )  # fmt: skip
    assert code == 0, err
    assert "all users" in out and "B - A [95% CI]" in out
    saved = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    metrics = json.loads((tmp_path / "cmp" / "metrics.json").read_text())
    assert (tmp_path / "cmp" / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = saved["rows"]
    assert rows[0]["bucket"] == "all users" and rows[0]["users"] == saved["n_test_users"] == 95
    assert sum(r["users"] for r in rows[1:]) == 95
    # per-user means are the runs' own test figures in their metrics.json
    for run, key in ((ml100k_popular, "a"), (ml100k_run, "b")):
        trained = read_metrics(run)
        assert trained is not None
        for metric in compare.METRICS:
            assert rows[0][key][metric] == pytest.approx(trained["test"][metric], abs=1e-6)
            assert metrics[f"test_{key}"][metric] == rows[0][key][metric]
    assert metrics["difference"] == rows[0]["difference"]


@pytest.mark.parametrize("by", ["history_length", "entropy", "target_popularity"])
def test_every_feature_buckets_all_test_users(
    ml100k_run: Path, ml100k_popular: Path, by: str
) -> None:
    result, table = compare_folders(ml100k_run, ml100k_popular, by, resamples=50, progress=False)
    users = [row["users"] for row in result["rows"]]
    assert users[0] == 95 and sum(users[1:]) == 95 and len(users) >= 3
    assert table.splitlines()[3].startswith(by)
    # a run against itself: nothing to tell apart
    same, _ = compare_folders(ml100k_popular, ml100k_popular, by, resamples=50, progress=False)
    for row in same["rows"]:
        assert row["difference"]["recall@50"] == {"mean": 0.0, "ci_low": 0.0, "ci_high": 0.0}


def test_a_run_on_another_dataset_is_refused(
    ml100k_run: Path, shared_data: Path, tmp_path: Path, mirec_main
) -> None:
    other = tmp_path / "lastfm-pop"
    train_run(load_config("most-popular", dataset="lastfm"), other, data_dir=shared_data,
              progress=False)  # fmt: skip
    code, out, err = mirec_main(
        "compare", str(ml100k_run), str(other), "--out", str(tmp_path / "c")
    )
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "dataset='lastfm'" in lines[0] and "'ml-100k'" in lines[0]
    assert not (tmp_path / "c").exists()
    code, _, err = mirec_main("compare", str(ml100k_run), str(ml100k_run), "--by", "age")
    assert code == 2 and "--by 'age'" in err
