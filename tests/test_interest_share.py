"""Each interest's share of the list: the list diagnostics and the quota merge, by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mirec import MirecError, Recommender
from mirec.cli.main import app
from mirec.core.config import MAX_QUOTA_ALPHA, Config
from mirec.core.contracts import Extracted
from mirec.core.functional import (
    largest_remainder,
    mean_pairwise_jaccard,
    miscalibration,
    owner_counts,
)
from mirec.errors import ConfigError
from mirec.evaluation.diagnostics import list_diagnostics, target_shares
from mirec.evaluation.metrics import Targets
from mirec.retrieval.quota import quota_merge, quota_slots

# -- the ground floor's math ------------------------------------------------------------


def test_jaccard_of_interest_lists_by_hand():
    lists = torch.tensor([[[1, 2], [2, 3], [4, 5]]])
    # pairs: {1,2}~{2,3} share 1 of 3 items; every pair with {4,5} shares none
    assert mean_pairwise_jaccard(lists).item() == pytest.approx(1 / 9)
    two = torch.tensor([[True, True, False]])
    assert mean_pairwise_jaccard(lists, two).item() == pytest.approx(1 / 3)
    assert mean_pairwise_jaccard(lists, torch.tensor([[True, False, False]])).isnan().all()
    same = torch.tensor([[[1, 2], [2, 1]]])
    assert mean_pairwise_jaccard(same).item() == 1.0


def test_owners_leading_share_and_miscalibration_by_hand():
    counts = owner_counts(torch.tensor([[0, 0, 1, 0]]), 3)
    assert counts.tolist() == [[3.0, 1.0, 0.0]]
    # p = (1/2, 1/2, 0), q = (1, 0, 0): q~ = 0.99 q + 0.01 p = (0.995, 0.005, 0)
    p, q = torch.tensor([[0.5, 0.5, 0.0]]), torch.tensor([[1.0, 0.0, 0.0]])
    expected = 0.5 * math.log(0.5 / 0.995) + 0.5 * math.log(0.5 / 0.005)
    assert miscalibration(p, q).item() == pytest.approx(expected, rel=1e-12)
    assert miscalibration(p, p).item() == pytest.approx(0.0, abs=1e-15)
    # a group the user never had costs nothing however much of the list it takes
    assert miscalibration(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.5, 0.5]])).item() == (
        pytest.approx(-math.log(0.99 * 0.5 + 0.01))
    )


def test_largest_remainder_sums_to_n_and_breaks_ties_to_the_lower_interest():
    # exact shares 2.5, 1.5, 1.0: floors 2, 1, 1, the one seat left to the first tie
    assert largest_remainder(torch.tensor([[0.5, 0.3, 0.2]]), 5).tolist() == [[3, 1, 1]]
    assert largest_remainder(torch.tensor([[1.0, 1.0, 1.0]]), 10).tolist() == [[4, 3, 3]]
    seats = largest_remainder(torch.rand(200, 7), 50)
    assert (seats.sum(1) == 50).all() and (seats >= 0).all()


@pytest.mark.parametrize(
    ("alpha", "slots"),
    # p = (0.6, 0.4, 0, 0), N = 10: alpha 2 weighs 0.36 : 0.16, so 6.92 : 3.08
    [
        (0.0, [5, 5, 0, 0]),
        (1.0, [6, 4, 0, 0]),
        (2.0, [7, 3, 0, 0]),
        (MAX_QUOTA_ALPHA, [10, 0, 0, 0]),
    ],
)
def test_quota_slots_by_hand(alpha, slots):
    shares = torch.tensor([[0.6, 0.4, 0.0, 0.0]])
    assert quota_slots(shares, 10, alpha).tolist() == [slots]


def test_quota_slots_without_routed_history_split_over_the_active_interests():
    empty = torch.zeros(1, 3)
    assert quota_slots(empty, 4, 1.0).tolist() == [[2, 1, 1]]
    active = torch.tensor([[True, False, True]])
    assert quota_slots(empty, 4, 1.0, active).tolist() == [[2, 0, 2]]
    # an inactive interest gets nothing even where routing gave it items
    assert quota_slots(torch.tensor([[0.5, 0.5, 0.0]]), 4, 0.0, active).tolist() == [[4, 0, 0]]


def test_routed_shares_weigh_recent_items_by_the_half_life_by_hand():
    from mirec.retrieval.adaptive_k import routed_shares

    # one left-padded history of 4 items: the two oldest route to interest 0, the two most
    # recent to interest 1 (routing (B, L, K): each item's weight on each interest)
    histories = torch.tensor([[0, 7, 8, 9, 5]])
    routing = torch.tensor([[[0.5, 0.5], [0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.1, 0.9]]])
    extracted = Extracted(interests=torch.zeros(1, 2, 4), routing=routing)
    assert routed_shares(extracted, histories).tolist() == [[0.5, 0.5]]
    # half-life 1: weights 1/8, 1/4 (interest 0) and 1/2, 1 (interest 1) -> 3/8 : 12/8
    shares = routed_shares(extracted, histories, half_life=1.0)
    assert shares[0].tolist() == pytest.approx([0.2, 0.8])
    # a very long half-life is the plain count
    long = routed_shares(extracted, histories, half_life=1e6)
    assert long[0].tolist() == pytest.approx([0.5, 0.5], abs=1e-5)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"quota_half_life": 3.0}, r"quota_half_life=3\.0: it weighs the quota merge's shares"),
        ({"quota_alpha": 1.0, "quota_half_life": 0.0}, "quota_half_life"),
        ({"quota_alpha": 1.0, "quota_half_life": math.inf}, "quota_half_life"),
    ],
)
def test_a_bad_quota_half_life_is_refused_by_name(settings, message):
    with pytest.raises(ConfigError, match=message):
        Config(**settings)


def test_quota_merge_by_hand():
    candidates = torch.tensor([[[1, 2, 3], [2, 4, 5]]])
    scores = torch.tensor([[[0.9, 0.8, 0.7], [0.85, 0.6, 0.5]]])
    # interest 0 takes item 1 (0.9) and is full; interest 1 then takes 2 (0.85) and 4 (0.6);
    # the max merge would have listed 1, 2, 3
    assert quota_merge(candidates, scores, torch.tensor([[1, 2]]), 3).tolist() == [[1, 2, 4]]
    assert quota_merge(candidates, scores, torch.tensor([[3, 0]]), 3).tolist() == [[1, 2, 3]]


def test_quota_merge_gives_slots_an_interest_cannot_fill_to_the_others():
    candidates = torch.tensor([[[1, 2], [1, 2], [5, 6]]])
    scores = torch.tensor([[[0.9, 0.8], [0.5, 0.4], [0.3, 0.2]]])
    # interest 0 takes 1; interest 1 takes 2, then has nothing left: item 5 (interest 2's
    # best, the best free candidate) takes its last slot
    assert quota_merge(candidates, scores, torch.tensor([[1, 2, 0]]), 3).tolist() == [[1, 2, 5]]
    blocked = torch.tensor([[[1, 2], [3, 4]]])
    at = torch.tensor([[[0.9, -math.inf], [-math.inf, -math.inf]]])
    # blocked candidates (-inf) come only when nothing else is free, first come first
    assert quota_merge(blocked, at, torch.tensor([[1, 2]]), 3).tolist() == [[1, 2, 3]]


def test_list_diagnostics_by_hand():
    # two interests along the axes; items 1-3 along x, item 4 along y
    interests = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    items = torch.tensor([[3.0, 0.0], [2.0, 0.1], [1.0, 0.0], [0.0, 5.0]])
    extracted = Extracted(interests)
    top = torch.tensor([[1, 2, 4, 3]])  # owners 0, 0, 1, 0
    history_share = torch.tensor([[0.5, 0.5]])
    targets = Targets(torch.tensor([4]), torch.tensor([0]), 1)  # item 4: interest 1's
    own = torch.tensor([[[1, 2, 3, 4], [4, 2, 1, 3]]])
    got = list_diagnostics(extracted, items, top, history_share, targets, own)
    assert got["owning_interests"].item() == 2
    assert got["leading_share"].item() == 0.75
    q = (0.99 * 0.75 + 0.005, 0.99 * 0.25 + 0.005)
    expected = 0.5 * math.log(0.5 / q[0]) + 0.5 * math.log(0.5 / q[1])
    assert got["miscalibration"].item() == pytest.approx(expected)
    # the targets' p = (0, 1): q~ = 0.99 q + 0.01 p puts 0.99 * 0.25 + 0.01 on interest 1
    assert got["target_miscalibration"].item() == pytest.approx(-math.log(0.99 * 0.25 + 0.01))
    assert got["list_overlap"].item() == 1.0  # the same four items in both lists
    assert target_shares(extracted, items, targets).tolist() == [[0.0, 1.0]]


# -- settings ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", [-0.5, math.nan, math.inf, 1e300, MAX_QUOTA_ALPHA * 2])
def test_a_bad_quota_alpha_is_refused_by_name(value):
    with pytest.raises(ConfigError, match="quota_alpha"):
        Config(quota_alpha=value)


def test_quota_alpha_with_diversity_or_popularity_is_refused():
    with pytest.raises(ConfigError, match=r"quota_alpha=0\.5: the quota merge and diversity"):
        Config(quota_alpha=0.5, diversity_lambda=1.0)
    with pytest.raises(ConfigError, match="popularity baseline"):
        Config(quota_alpha=0.5, extractor="popularity")


@pytest.mark.parametrize(
    ("settings", "reason"),
    [
        ({"num_interests": 1}, "the model has one interest"),
        ({"aggregator": "attention"}, "aggregator=attention fuses the interests into one"),
    ],
)
def test_a_quota_for_a_model_that_ranks_with_one_vector_is_refused(settings, reason):
    from mirec.models.build import check_components

    # every alpha would give the max merge's list: a setting that silently did nothing
    config = Config(extractor="self_attentive", quota_alpha=1.0, **settings)
    with pytest.raises(ConfigError, match=rf"^setting quota_alpha=1\.0: {reason}"):
        check_components(config)
    check_components(Config(extractor="self_attentive", num_interests=4, quota_alpha=1.0))


def test_a_one_vector_folder_refuses_a_quota_at_recommend_time(tmp_path):
    import mirec

    folder = tmp_path / "fused"
    mirec.train(
        dataset="synthetic:n_users=120,n_items=60", model="comirec-sa-transformer",
        output_dir=folder, progress=False, max_epochs=1,
    )  # fmt: skip
    rec = Recommender.load(folder)
    assert len(rec.recommend([1, 2, 3], n=5)) == 5
    with pytest.raises(MirecError, match=r"^quota_alpha: aggregator=attention fuses"):
        rec.recommend([1, 2, 3], n=5, quota_alpha=1.0)


# -- on a trained model -----------------------------------------------------------------


@pytest.fixture(scope="module")
def rec(ml100k_run) -> Recommender:
    return Recommender.load(ml100k_run)


@pytest.fixture(scope="module")
def histories(rec) -> list[list]:
    return [rec.history_of(user) for user in rec.info.user_ids[:200]]


def test_quota_lists_fill_each_interests_quota_from_its_own_top(rec, histories):
    plain = rec.recommend(histories, 50)
    for alpha in (0.0, 1.0):
        lists = rec.recommend(histories, 50, quota_alpha=alpha)
        pairs = zip(lists, plain, strict=True)
        changed = sum([r.item for r in a] != [r.item for r in b] for a, b in pairs)
        assert changed > 50, alpha  # the quota acts on many users
        for found in lists:
            scores = [r.score for r in found]
            assert len({r.item for r in found}) == 50 and scores == sorted(scores, reverse=True)

    # one interest's quota of everything it can fill: at alpha 100 the leading interest owns
    # at least as much of the list as under the max merge, on average
    def leading(lists) -> float:
        return float(np.mean([max(np.bincount([r.interest for r in x])) for x in lists]))

    assert leading(rec.recommend(histories, 50, quota_alpha=MAX_QUOTA_ALPHA)) >= leading(plain)
    assert leading(rec.recommend(histories, 50, quota_alpha=0.0)) < leading(plain)


def test_a_half_life_moves_the_quotas_to_recent_interests(rec, histories, ml100k_run):
    recent = Recommender.load(ml100k_run, quota_alpha=1.0, quota_half_life=1.0)
    whole = rec.recommend(histories, 50, quota_alpha=1.0)
    lists = recent.recommend(histories, 50)  # the folder's quota, with its half-life
    assert lists == recent.recommend(histories, 50, quota_alpha=1.0)
    assert (
        sum([r.item for r in a] != [r.item for r in b] for a, b in zip(lists, whole, strict=True))
        > 50
    )

    # with half-life 1 the last item's interest weighs at least half of the shares: the
    # quotas gather on fewer interests than the whole history's do
    def leading(found) -> float:
        return float(np.mean([max(np.bincount([r.interest for r in x])) for x in found]))

    assert leading(lists) > leading(whole) + 2


def test_quota_on_the_flat_index_is_the_exact_quota(rec, histories, ml100k_run, tmp_path):
    pytest.importorskip("faiss")
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(ml100k_run, folder)
    copy = Recommender.load(folder)
    copy.build_index("flat")
    for blocking in ({}, {"exclude_history": True}):
        exact = copy.recommend(histories, 50, quota_alpha=0.5, **blocking)
        flat = copy.recommend(histories, 50, quota_alpha=0.5, index="flat", **blocking)
        assert [[r.item for r in x] for x in flat] == [[r.item for r in x] for x in exact]


@pytest.mark.parametrize("alpha", [-1, math.nan, math.inf, 1e300, "0.5", True])
def test_a_bad_quota_alpha_argument_is_one_line_naming_it(rec, alpha):
    with pytest.raises(MirecError, match=r"^quota_alpha=.*expected a finite number in \[0, 100\]"):
        rec.recommend([50, 172], quota_alpha=alpha)


def test_quota_with_diversity_is_refused(rec):
    with pytest.raises(MirecError, match="quota_alpha and diversity_lambda are two ways"):
        rec.recommend([50, 172], quota_alpha=1.0, diversity_lambda=1.0)


def test_quota_over_http_is_the_python_list(ml100k_server, rec):
    import httpx

    history = rec.history_of(rec.info.user_ids[3])
    user = rec.info.user_ids[4]
    with httpx.Client(base_url=ml100k_server, timeout=60) as http:
        posted = http.post("/recommend", json={"history": history, "n": 30, "quota_alpha": 0.0})
        asked = http.get(f"/users/{user}/recommendations", params={"n": 30, "quota_alpha": 2.0})
        for answer, expected in (
            (posted, rec.recommend(history, 30, quota_alpha=0.0)),
            (asked, rec.recommend(user=user, n=30, quota_alpha=2.0)),
        ):
            assert answer.status_code == 200, answer.text
            assert [row["item"] for row in answer.json()["items"]] == [r.item for r in expected]
        for bad in (
            http.post("/recommend", json={"history": history, "quota_alpha": -1}),
            http.get(f"/users/{user}/recommendations", params={"quota_alpha": "nan"}),
            http.get(f"/users/{user}/recommendations", params={"quota_alpha": 101}),
            http.post(
                "/recommend", json={"history": history, "quota_alpha": 1, "diversity_lambda": 1}
            ),
        ):
            assert 400 <= bad.status_code < 500, bad.text
            assert "quota_alpha" in str(bad.json()["detail"])


def test_the_popularity_baseline_refuses_a_quota_by_name(shared_data, tmp_path):
    import mirec

    folder = tmp_path / "popular"
    mirec.train(
        dataset="ml-100k", model="most-popular", data_dir=shared_data, output_dir=folder,
        progress=False,
    )  # fmt: skip
    with pytest.raises(MirecError, match=r"^quota_alpha: most-popular .* no interests"):
        Recommender.load(folder).recommend([50, 172], quota_alpha=0.5)


def test_evaluate_with_a_quota_records_it_and_the_list_diagnostics(ml100k_run, tmp_path):
    out = tmp_path / "quota"
    args = ["evaluate", "--model-dir", str(ml100k_run), "--output-dir", str(out)]
    args += ["--set", "quota_alpha=0.5"]
    result = CliRunner().invoke(app, [*args, "--quiet"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    import json

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["inference_settings"]["quota_alpha"] == 0.5
    diagnostics = metrics["diagnostics"]
    assert 1 <= diagnostics["owning_interests@50"] <= 4
    assert 0.25 <= diagnostics["leading_share@50"] <= 1
    assert 0 <= diagnostics["list_overlap@50"] <= 1
    assert 0 <= diagnostics["miscalibration@50"] <= math.log(100)
    assert 0 <= diagnostics["target_miscalibration@50"] <= math.log(100)
    trained = json.loads((ml100k_run / "metrics.json").read_text())["diagnostics"]
    # equal-ish quotas spread the list over more interests than the max merge
    assert diagnostics["owning_interests@50"] > trained["owning_interests@50"]


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        (["quota_alpha=nan"], "quota_alpha"),
        (["quota_alpha=1", "diversity_lambda=1"], "quota_alpha"),
    ],
)
def test_evaluate_refuses_a_bad_quota_in_one_line(
    ml100k_run, tmp_path, mirec_main, settings, named
):
    sets = [part for setting in settings for part in ("--set", setting)]
    where = ["--model-dir", str(ml100k_run), "--output-dir", str(tmp_path)]
    code, _, err = mirec_main("evaluate", *where, *sets)
    assert code == 2 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and named in err


# -- where the figures are shown ----------------------------------------------------------


def test_inspect_reports_how_the_interests_share_its_list_by_hand():
    from mirec.evaluation.inspection import InterestRow, ItemRow, UserReport

    def rows(items, interest=None):
        return [ItemRow(str(i), "", 1.0, interest) for i in items]

    interests = [
        InterestRow(0, 0.5, [], rows("ab"), rows("ab")),
        InterestRow(1, 0.5, [], rows("c"), rows("bc")),
    ]
    listed = [*rows("abd", 0), *rows("c", 1)]
    empty = np.zeros((0, 2))
    report = UserReport("d", "m", "u", list("abc"), interests, listed, empty, empty, empty, empty)
    figures = report.list_figures()
    q = (0.99 * 0.75 + 0.005, 0.99 * 0.25 + 0.005)
    assert figures == pytest.approx(
        {
            "owning_interests": 2,
            "leading_share": 0.75,
            "miscalibration": 0.5 * math.log(0.5 / q[0]) + 0.5 * math.log(0.5 / q[1]),
            "list_overlap": 1 / 3,  # {a, b} and {b, c}
        }
    )
    assert "2 of 2 interests own its 4 items, the leading one 75%" in report.to_text()
    assert report.to_json()["list"] == figures


def test_compare_buckets_carry_each_runs_list_columns():
    from mirec.evaluation.compare import compare_users, format_table

    users = 8
    a = {"recall@50": np.linspace(0, 1, users), "ndcg@50": np.zeros(users)}
    a["leading_share@50"] = np.array([1.0] * 4 + [0.5] * 4)
    a["miscalibration@50"] = np.arange(users, dtype=np.float64)
    b = {"recall@50": np.ones(users), "ndcg@50": np.zeros(users)}  # one interest: no lists
    feature = np.array([1.0] * 4 + [2.0] * 4)
    rows = compare_users(a, b, feature, resamples=10)
    assert [r.lists_a for r in rows] == [
        {"leading_share@50": 0.75, "miscalibration@50": 3.5},
        {"leading_share@50": 1.0, "miscalibration@50": 1.5},
        {"leading_share@50": 0.5, "miscalibration@50": 5.5},
    ]
    assert all(r.lists_b == {"leading_share@50": None, "miscalibration@50": None} for r in rows)
    table = format_table(rows, "history_length", ("A", "B"))
    assert "leading A" in table and "miscal B" in table
    assert table.splitlines()[4].split()[-4:] == ["0.750", "-", "3.500", "-"]


def test_mirec_recommend_with_a_quota_gives_the_python_list(ml100k_run, rec, mirec_main):
    import json

    user = rec.info.user_ids[7]
    where = ["--model-dir", str(ml100k_run), "--user", str(user), "-n", "20", "--json"]
    code, out, err = mirec_main("recommend", *where, "--quota-alpha", "0.5")
    assert code in (0, None), err
    expected = rec.recommend(user=user, n=20, quota_alpha=0.5)
    assert [row["item"] for row in json.loads(out)["items"]] == [r.item for r in expected]
    code, _, err = mirec_main("recommend", *where, "--quota-alpha", "inf")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "quota_alpha" in err
    # a half-life with the quota is the folder loaded with both; alone, it is refused
    recent = ["--quota-alpha", "1", "--quota-half-life", "2"]
    code, out, err = mirec_main("recommend", *where, *recent)
    assert code in (0, None), err
    loaded = Recommender.load(ml100k_run, quota_alpha=1.0, quota_half_life=2.0)
    expected = loaded.recommend(user=user, n=20)
    assert [row["item"] for row in json.loads(out)["items"]] == [r.item for r in expected]
    code, _, err = mirec_main("recommend", *where, "--quota-half-life", "2")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "quota_half_life" in err
