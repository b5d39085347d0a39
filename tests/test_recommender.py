"""The public API: a model folder that stands alone, `Recommender`, and the one ranking path."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from conftest import string_id_log
from typer.testing import CliRunner

import mirec
from mirec import CTRScorer, MirecError, ModelInfo, Recommender
from mirec.cli.main import app
from mirec.core.config import MAX_DIVERSITY_LAMBDA
from mirec.data.prepare import load_sequences
from mirec.data.vocabulary import Vocabulary
from mirec.errors import ConfigError, UnknownIdError
from mirec.evaluation.evaluator import evaluate
from mirec.runs import load_run


class ListRecorder:
    """Stands in for the evaluator's diagnostics to record each chunk's ranked lists."""

    interest_depth = 0  # it reads no per-interest lists

    def __init__(self) -> None:
        self.lists: list[torch.Tensor] = []

    def update(self, lo, histories, extracted, top, hits, targets, items, interest_top) -> None:
        self.lists.append(top.cpu())

    def result(self) -> dict:
        return {}


def protocol_test_users(seqs, seed: int, maxlen: int):
    """PROTOCOL.md sections 2 and 4, written out plainly: each test user's history (raw
    ids) and target set (raw ids)."""
    perm = np.random.default_rng(seed).permutation(seqs.n_users)
    n = seqs.n_users
    test = perm[int(0.8 * n) + int(0.1 * n) :]
    histories, targets = [], []
    for row in test:
        s = [seqs.item_ids[i - 1].item() for i in seqs.sequence(row)]
        k = int(0.8 * len(s))
        histories.append(s[:k][-maxlen:])
        targets.append(set(s[k:]))
    return histories, targets


def test_recommend_of_many_histories_is_the_evaluators_ranking(ml100k_run, shared_data):
    rec = Recommender.load(ml100k_run)
    seqs = load_sequences("ml-100k", data_dir=shared_data)
    histories, targets = protocol_test_users(seqs, rec.info.config.split_seed, rec.info.maxlen)
    lists = rec.recommend(histories, n=50)
    # the evaluator's own lists, for the same users in the same order
    loaded, data = load_run(ml100k_run)
    recorder = ListRecorder()
    evaluate(loaded.model, data.test, diagnostics=recorder)
    evaluator_lists = torch.cat(recorder.lists)
    assert len(lists) == len(evaluator_lists) == len(targets) == 95
    for got, expected in zip(lists, evaluator_lists.tolist(), strict=True):
        assert [r.item for r in got] == [seqs.item_ids[i - 1].item() for i in expected]
    # recall, NDCG and hit rate of those lists, by PROTOCOL.md section 5, equal metrics.json
    recall, ndcg, hit = [], [], []
    for got, t in zip(lists, targets, strict=True):
        items = [r.item for r in got]
        hits = [item in t for item in items]
        recall.append(sum(hits) / len(t))
        dcg = sum(1 / np.log2(r + 2) for r, h in enumerate(hits) if h)
        ndcg.append(dcg / sum(1 / np.log2(r + 2) for r in range(min(len(t), 50))))
        hit.append(float(any(hits)))
    metrics = json.loads((ml100k_run / "metrics.json").read_text())["test"]
    assert np.mean(recall) == pytest.approx(metrics["recall@50"], abs=1e-6)
    assert np.mean(ndcg) == pytest.approx(metrics["ndcg@50"], abs=1e-6)
    assert np.mean(hit) == pytest.approx(metrics["hitrate@50"], abs=1e-6)


def test_batch_equals_one_by_one_and_types_follow_the_log(ml100k_run):
    rec = Recommender.load(ml100k_run)
    users = rec.info.user_ids[:25]
    histories = [[*rec.history_of(u)[-30:], "no-such-item"] for u in users]
    batch = rec.recommend(histories, n=20)
    for history, listed in zip(histories, batch, strict=True):
        alone = rec.recommend(history, n=20)
        assert [r.item for r in alone] == [r.item for r in listed]
        assert [r.score for r in alone] == pytest.approx([r.score for r in listed], abs=1e-5)
        assert listed.unknown_items == ["no-such-item"]
    first = batch[0][0]
    assert type(first.item) is int and isinstance(first.score, float)
    assert 0 <= first.interest < rec.info.num_interests
    assert [r.score for r in batch[0]] == sorted((r.score for r in batch[0]), reverse=True)
    # ids that arrive as text (JSON, a command line) find the same items
    as_text = rec.recommend([str(i) for i in histories[0][:-1]], n=20)
    assert [r.item for r in as_text] == [r.item for r in batch[0]]


def test_exclusions_unknown_ids_and_cold_histories(ml100k_run):
    rec = Recommender.load(ml100k_run)
    history = rec.history_of(rec.info.user_ids[0])
    plain = rec.recommend(history, n=30)
    banned = [r.item for r in plain[:10]]
    kept = rec.recommend(history, n=30, exclude=banned)
    assert not {r.item for r in kept} & set(banned) and len(kept) == 30
    assert [r.item for r in kept[:20]] == [r.item for r in plain[10:30]]
    fresh = rec.recommend(history, n=30, exclude_history=True)
    assert not {r.item for r in fresh} & set(history) and len(fresh) == 30
    with pytest.raises(MirecError, match=r"2 item id\(s\) not in the catalogue: 'x', 99999"):
        rec.recommend([history[0], "x", 99999], on_unknown="error")
    # a history with no known item: the training users' most popular items, interest None
    cold = rec.recommend(["x", "y"], n=10)
    assert cold.unknown_items == ["x", "y"] and all(r.interest is None for r in cold)
    counts = rec._data.item_counts[1:]
    order = np.lexsort((np.arange(len(counts)), -counts))[:10]
    assert [r.item for r in cold] == [rec.info.item_ids[i] for i in order]
    assert [r.score for r in cold] == [float(counts[i]) for i in order]
    assert [r.item for r in rec.recommend([], n=10)] == [r.item for r in cold]
    # exclusions hold for the fallback too
    assert cold[0].item not in {r.item for r in rec.recommend([], n=10, exclude=[cold[0].item])}


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda r: r.recommend("50 172 181"), "a history must be a list"),
        (lambda r: r.recommend(50), "a history must be a list"),
        (lambda r: r.recommend({"items": [50]}), "a history must be a list"),
        (lambda r: r.recommend([50], n=0), "n=0: expected an integer from 1"),
        (lambda r: r.recommend([50], n=-3), "n=-3"),
        (lambda r: r.recommend([50], n=True), "n=True"),
        (lambda r: r.recommend([50], n=100_000), "n=100000"),
        (lambda r: r.recommend([50], on_unknown="warn"), "on_unknown='warn'"),
        (lambda r: r.recommend([[50], "abc"]), "a history must be a list"),
        (lambda r: r.recommend(user="no-such-user"), "is not in ml-100k"),
        (lambda r: r.similar_items("no-such-item"), "not in the catalogue"),
    ],
)
def test_bad_arguments_are_clear_errors(ml100k_run, call, message):
    with pytest.raises(MirecError, match=message):
        call(Recommender.load(ml100k_run))


# odd spellings of an integer id: int() reads each as 10 (or 50), none of them is the id
INT_SPELLINGS = [
    "1_0", " 10", "10 ", "+10", "010", "0010", "10.0", "1e1", "0x0a", "10\u200b", "\u200b10",
    "\uff10\uff11\uff10", "\uff11\uff10", "\u0661\u0660", "\u0967\u0966", "\U0001d7cf\U0001d7ce",
]  # full-width, Arabic-Indic, Devanagari and mathematical digits last  # fmt: skip
# ids holding a control character or a lone surrogate: refused, not merely not found
REFUSED_SPELLINGS = ["10\n", "\n10", "10\r\n", "10\t", "\t10", "10\x00", "\x00", "1\x7f0",
                     "10\x85", "\ud800", "10\udfff", "\x1b[31m10"]  # fmt: skip


def test_an_odd_spelling_of_an_integer_id_finds_no_one():
    vocab = Vocabulary(np.asarray([10, 1, 0, 7, -3, 2**62]), "user")
    assert vocab.rows(["10", 10, np.int64(10), "0", "-3", "7", str(2**62)]).tolist() == [
        0, 0, 0, 2, 4, 3, 5
    ]  # fmt: skip
    for odd in [*INT_SPELLINGS, "-0", "007", "", "-", "--3", 10.0, True, None, b"10", 2**64]:
        assert vocab.rows([odd]).tolist() == [-1], odd
    with pytest.raises(UnknownIdError, match=r"user '010' is not in ml-100k \(its ids are integ"):
        vocab.row_of("010", "ml-100k")
    for refused in REFUSED_SPELLINGS:
        with pytest.raises(ConfigError, match=r"^user id .* holds a (control character|lone UTF)"):
            vocab.rows(["10", refused])


def test_a_text_id_is_never_cut_to_a_shorter_one():
    # numpy's fixed-width strings (<U5 here) cut a longer key to the width, which then
    # matched "it-50": every longer id sharing a widest id's prefix was another user
    vocab = Vocabulary(np.asarray(["it-50", "it-5", "b", "42"]), "item")
    assert vocab.ids.dtype == np.dtype("<U5")
    assert vocab.rows(["it-50", "it-5", "b", "42", 42]).tolist() == [0, 1, 2, 3, 3]
    for other in ["it-500", "it-50x", "it-50 ", " it-5", "it-5​", "bb", "B", "42.0", 42.0]:
        assert vocab.rows([other]).tolist() == [-1], other
    for refused in ["it-5\x00", "it-5\x07", "it-5\x9f", "b\ud800", "\udc80"]:
        with pytest.raises(ConfigError, match=r"^item id .* holds"):
            vocab.rows([refused])


def test_no_spelling_of_a_known_id_gets_another_list(ml100k_run):
    rec = Recommender.load(ml100k_run)
    own = [r.item for r in rec.recommend(user=10, n=10)]
    assert own != [r.item for r in rec.recommend(user=1, n=10)]
    for odd in INT_SPELLINGS:
        with pytest.raises(UnknownIdError, match="is not in ml-100k"):
            rec.recommend(user=odd, n=10)
        with pytest.raises(UnknownIdError, match="is not in the catalogue"):
            rec.similar_items(odd.replace("1", "5"), n=10)
        with pytest.raises(UnknownIdError):
            rec.history_of(odd)
        # an odd spelling in a history is an unknown item, never item 10 or 50
        listed = rec.recommend([50, 172, odd], n=10)
        assert listed.unknown_items == [odd]
        assert [r.item for r in listed] == [r.item for r in rec.recommend([50, 172], n=10)]
        assert rec.recommend([50, odd], n=5, exclude=[odd]).unknown_items == [odd]
    for refused in REFUSED_SPELLINGS:
        for method, args, kwargs in (
            ("recommend", (), {"user": refused}),
            ("recommend", ([50, refused],), {}),
            ("recommend", ([50],), {"exclude": [refused]}),
            ("similar_items", (refused,), {}),
            ("explain", (), {"history": [50, refused]}),
        ):
            with pytest.raises(ConfigError, match=r" id .* holds ") as exc:
                getattr(rec, method)(*args, **kwargs)
            assert not isinstance(exc.value, UnknownIdError)
            assert "\n" not in str(exc.value) and str(exc.value).isascii()
    assert [r.item for r in rec.recommend(user="10", n=10)] == own


def test_bad_arguments_name_the_argument(ml100k_run, tmp_path):
    rec = Recommender.load(ml100k_run)
    history = rec.history_of(1)
    for call, message in (
        (lambda: Recommender.load(None), r"^path=None: expected a folder path"),
        (lambda: Recommender.load(np.array("x")), r"^path=array\('x'"),
        (lambda: Recommender.load(""), r"^path='': expected a folder path"),
        (lambda: rec.save(None), r"^path=None"),
        (lambda: mirec.train(output_dir=None, dataset="x"), r"^output_dir=None"),
        (lambda: rec.recommend(None), r"^recommend: give a history"),
        (lambda: rec.recommend(np.array(50)), r"^a history must be a list .*; got a 0-d array"),
        (lambda: rec.recommend(np.array([[[50]]])), r"got a 3-d array"),
        (lambda: rec.recommend([history, None]), r"^a history must be a list .*; got NoneType"),
        (lambda: rec.interests(np.array(50)), r"^a history must be a list"),
        (lambda: rec.explain(history=np.array(50)), r"^a history must be a list"),
        (lambda: rec.recommend(history, exclude=None), r"^exclude must be a list .*NoneType"),
        (lambda: rec.recommend(history, exclude=np.array(50)), r"^exclude .* 0-d array"),
        (lambda: rec.recommend(history, exclude=50), r"^exclude must be a list .* int"),
        (lambda: rec.recommend(user=1, exclude="50"), r"^exclude must be a list .* str"),
        (lambda: rec.recommend(history, exclude_history="no"), r"^exclude_history='no': expec"),
        (lambda: rec.recommend(history, exclude_history=None), r"^exclude_history=None"),
        (lambda: rec.recommend(user=[1], exclude_history=1), r"^exclude_history=1: expected"),
    ):
        with pytest.raises(MirecError, match=message):
            call()
    # the forms that are lists of ids keep working
    same = rec.recommend(
        np.asarray(history), n=5, exclude=np.asarray([50]), exclude_history=np.True_
    )
    assert [r.item for r in same] == [
        r.item for r in rec.recommend(history, n=5, exclude={50}, exclude_history=True)
    ]


@pytest.mark.parametrize(
    "lam", [math.nan, math.inf, -math.inf, 1e300, -1e-9, MAX_DIVERSITY_LAMBDA * 1.001, "1", True]
)
def test_diversity_lambda_out_of_range_is_refused(ml100k_run, lam):
    # NaN, inf and 1e300 used to return one item several times (inf - inf is NaN)
    rec = Recommender.load(ml100k_run)
    expected = r"^diversity_lambda=.*: expected a finite number in \[0, 1000\], or None$"
    with pytest.raises(MirecError, match=expected):
        rec.recommend([50, 172], n=10, diversity_lambda=lam)
    with pytest.raises(MirecError, match=r"^diversity_lambda="):
        rec.recommend(user=1, n=10, diversity_lambda=lam)
    if not isinstance(lam, str | bool):
        with pytest.raises(ConfigError, match=r"^setting diversity_lambda="):
            Recommender.load(ml100k_run, diversity_lambda=lam)


def test_diversity_lambda_at_its_bounds_gives_distinct_items(ml100k_run):
    rec = Recommender.load(ml100k_run)
    history = rec.history_of(5)
    n_items = rec.info.n_items
    for lam in (0.0, 1.0, MAX_DIVERSITY_LAMBDA, np.float32(MAX_DIVERSITY_LAMBDA)):
        items = [r.item for r in rec.recommend(history, n=n_items, diversity_lambda=lam)]
        assert len(items) == len(set(items)) == n_items


def test_interests_similar_items_and_embeddings(ml100k_run):
    rec = Recommender.load(ml100k_run)
    info = rec.info
    history = rec.history_of(info.user_ids[3])
    assert rec.interests(history).shape == (info.num_interests, 64)
    adaptive = Recommender.load(ml100k_run, adaptive_k="share:0.3")
    assert 1 <= adaptive.interests(history).shape[0] <= info.num_interests
    embeddings = rec.item_embeddings()
    assert embeddings.shape == (info.n_items, 64) and len(info.item_ids) == info.n_items
    similar = rec.similar_items(50, n=10)
    assert len(similar) == 10 and 50 not in {r.item for r in similar}
    row = info.item_ids.index(50)
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    cosine = unit @ unit[row]
    cosine[row] = -np.inf
    assert [r.item for r in similar] == [info.item_ids[i] for i in np.argsort(-cosine)[:10]]
    with pytest.raises(ConfigError, match="not an inference-time setting"):
        Recommender.load(ml100k_run, lr=0.1)


def test_diversity_lambda_trades_score_for_categories(ml100k_run):
    rec = Recommender.load(ml100k_run)
    history = rec.history_of(rec.info.user_ids[5])
    plain = rec.recommend(history, n=20)
    diverse = rec.recommend(history, n=20, diversity_lambda=5.0)
    assert [r.item for r in plain] != [r.item for r in diverse]
    assert len({r.item for r in diverse}) == 20


def test_a_copied_folder_loads_in_a_fresh_process_without_data(ml100k_run, tmp_path):
    moved = tmp_path / "elsewhere" / "model"
    shutil.copytree(ml100k_run, moved)
    expected = Recommender.load(ml100k_run).recommend([50, 172, 181], n=10)
    script = textwrap.dedent(
        f"""
        import json, sys
        import mirec.data.locate, mirec.data.prepare
        def refuse(*args, **kwargs):
            raise SystemExit("the dataset was read")
        mirec.data.locate.load = mirec.data.locate.source_files = refuse
        mirec.data.prepare.load_sequences = refuse
        from mirec import Recommender
        rec = Recommender.load({str(moved)!r})
        recs = rec.recommend([50, 172, 181], n=10)
        json.dump([[r.item, r.score, r.interest] for r in recs], sys.stdout)
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "MIREC_DATA_DIR"}
    env.update(HOME=str(tmp_path), MIREC_CACHE_DIR=str(tmp_path / "empty-cache"))
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert [g[0] for g in got] == [r.item for r in expected]
    assert [g[1] for g in got] == pytest.approx([r.score for r in expected], abs=1e-6)


def test_save_and_load_round_trip(ml100k_run, tmp_path):
    rec = Recommender.load(ml100k_run)
    saved = rec.save(tmp_path / "copy")
    for name in ("config.yaml", "model.safetensors", "model.json", "items.parquet",
                 "users.parquet", "metrics.json"):  # fmt: skip
        assert (saved / name).is_file(), name
    again = Recommender.load(saved)
    history = rec.history_of(rec.info.user_ids[7])
    assert rec.recommend(history, n=25) == again.recommend(history, n=25)
    assert again.info.metrics == rec.info.metrics
    with pytest.raises(MirecError, match="already exists"):
        rec.save(saved)
    rec.save(saved, overwrite=True)
    assert not [p for p in saved.parent.iterdir() if p.name.startswith(".copy")]


def test_save_keeps_the_item_indexes(ml100k_run, tmp_path):
    shutil.copytree(ml100k_run, tmp_path / "run")
    rec = Recommender.load(tmp_path / "run")
    rec.build_index("flat")
    saved = Recommender.load(rec.save(tmp_path / "copy"))
    assert (tmp_path / "copy" / "index-flat.faiss").is_file()
    history = rec.history_of(rec.info.user_ids[3])
    assert saved.recommend(history, n=20, index="flat") == rec.recommend(history, n=20)


def test_old_and_damaged_folders_are_clear_errors(ml100k_run, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(ml100k_run, old)
    (old / "model.json").unlink()
    with pytest.raises(ConfigError, match=r"written before mirec 0\.2.*mirec train --config"):
        Recommender.load(old)
    damaged = tmp_path / "damaged"
    shutil.copytree(ml100k_run, damaged)
    (damaged / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ConfigError, match=r"model\.safetensors: not a readable safetensors"):
        Recommender.load(damaged)
    with pytest.raises(ConfigError, match="no such model folder"):
        Recommender.load(tmp_path / "nowhere")


def test_train_from_python_keeps_string_ids(tmp_path):
    log = string_id_log(tmp_path / "log.txt")
    rec = mirec.train(
        dataset=str(log), format="sequences", model="comirec-sa", output_dir=tmp_path / "run",
        max_epochs=1, progress=False,
    )  # fmt: skip
    assert isinstance(rec, Recommender)
    assert (tmp_path / "run" / "metrics.json").is_file() and rec.info.metrics.fit.epochs == 1
    assert all(isinstance(i, str) for i in rec.info.item_ids)
    recs = rec.recommend(["sku-3", "sku-7", 7], n=5)
    assert all(r.item.startswith("sku-") for r in recs) and recs.unknown_items == [7]
    assert rec.history_of("user-0")[0].startswith("sku-")


def test_mind_with_user_profiles_serves_known_users(shared_data, tmp_path):
    rec = mirec.train(
        dataset="ml-100k", model="mind", data_dir=shared_data, output_dir=tmp_path / "mind",
        user_features=True, max_epochs=1, progress=False,
    )  # fmt: skip
    assert len(rec.recommend(user=1, n=5)) == 5
    with pytest.raises(MirecError, match="uses user profiles"):
        rec.recommend([50, 172])


def test_a_ctr_model_scores_candidates(shared_data, tmp_path, ml100k_run):
    folder = tmp_path / "din"
    scorer = mirec.train(
        dataset="ml-100k", task="ctr", model="din", data_dir=shared_data, output_dir=folder,
        max_epochs=1, progress=False,
    )  # fmt: skip
    assert isinstance(scorer, CTRScorer) and scorer.info.task == "ctr"
    history = scorer.history_of(1)[:30]
    p = scorer.score(history, [50, 181, 1])
    assert p.shape == (3,) and np.all((p > 0) & (p < 1))
    assert np.array_equal(CTRScorer.load(folder).score(history, [50, 181, 1]), p)
    with pytest.raises(MirecError, match="candidate id"):
        scorer.score(history, [50, "nope"])
    with pytest.raises(MirecError, match=r"^candidates must be a list .* 0-d array"):
        scorer.score(history, np.array(50))
    # each class loads its own task, and says in one line which class loads the other
    with pytest.raises(MirecError) as exc:
        Recommender.load(folder)
    assert str(exc.value) == (
        f"{folder}: din is a ctr model (click probabilities of given candidates); load it "
        "with CTRScorer.load, or mirec.load, which picks the class"
    )
    with pytest.raises(MirecError) as exc:
        CTRScorer.load(ml100k_run)
    assert str(exc.value) == (
        f"{ml100k_run}: comirec-sa is a retrieval model (recommendations over the whole "
        "catalogue); load it with Recommender.load, or mirec.load, which picks the class"
    )
    assert type(mirec.load(folder)) is CTRScorer
    assert type(mirec.load(ml100k_run)) is Recommender
    with pytest.raises(ConfigError, match=r"^mirec\.load: lr is not an inference-time"):
        mirec.load(folder, lr=0.1)


def test_the_public_surface_is_small():
    def public(cls: type) -> set[str]:
        return {name for name in dir(cls) if not name.startswith("_")}

    shared = {"load", "save", "info", "history_of"}
    retrieval = {"recommend", "interests", "explain", "similar_items", "item_embeddings"}
    assert public(Recommender) == shared | retrieval | {"build_index", "index_recall"}
    assert len(public(Recommender)) <= 12
    assert public(CTRScorer) == shared | {"score"}
    assert {"load", "train", "Recommender", "CTRScorer", "ModelInfo"} <= set(mirec.__all__)


def test_recommend_takes_one_or_many_histories_or_users(ml100k_run):
    rec = Recommender.load(ml100k_run)
    users = list(rec.info.user_ids[:6])
    histories = [rec.history_of(u) for u in users]

    def items(lists):
        return [[r.item for r in listed] for listed in lists]

    one_by_one = [rec.recommend(h, n=15) for h in histories]
    assert all(isinstance(listed, mirec.Recommendations) for listed in one_by_one)
    for many in (histories, tuple(histories), [np.asarray(h) for h in histories]):
        got = rec.recommend(many, n=15)
        assert isinstance(got, list) and got == one_by_one
    # a 2-d array is several histories of one length, a row each
    rows = np.asarray([h[-20:] for h in histories])
    assert rec.recommend(rows, n=15) == [rec.recommend(list(row), n=15) for row in rows]
    # by user: the stored history (this model reads no user profile), one or many
    by_user = [rec.recommend(user=u, n=15) for u in users]
    assert items(by_user) == items(one_by_one)
    for many in (users, tuple(users), np.asarray(users)):
        assert rec.recommend(user=many, n=15) == by_user
    assert rec.recommend(user=[], n=15) == [] == rec.recommend(np.zeros((0, 3), int), n=15)
    # [] is one empty history (the popularity fallback); [[]] a batch of one empty history
    cold = rec.recommend([], n=5)
    assert isinstance(cold, mirec.Recommendations) and {r.interest for r in cold} == {None}
    assert rec.recommend([[]], n=5) == [cold]
    assert rec.recommend([[], ["nope"]], n=5)[1].unknown_items == ["nope"]
    for call, message in (
        (lambda: rec.recommend(), r"^recommend: give a history \(raw item ids"),
        (lambda: rec.recommend(n=5), r"^recommend: give a history"),
        (lambda: rec.recommend(histories[0], user=users[0]), r"^recommend: give a history or "
         r"user=, not both$"),
        (lambda: rec.recommend([50, [172]]), r"^history mixes item ids and histories \(element 1"),
        (lambda: rec.recommend(user={1, 2}), r"^user must be one user id .*; got set$"),
        (lambda: rec.recommend(user=1.5), r"^user must be one user id .*; got float$"),
        (lambda: rec.recommend(user=np.ones((2, 2))), r"; got a 2-d array$"),
        (lambda: rec.recommend(user=[1, "no-such-user"]), r"^user 'no-such-user' is not in"),
        (lambda: rec.recommend(user=1, on_unknown="warn"), r"^on_unknown='warn': expected"),
    ):  # fmt: skip
        with pytest.raises(MirecError, match=message) as exc:
            call()
        assert "\n" not in str(exc.value)


def test_the_model_info_is_one_frozen_record(ml100k_run, tmp_path):
    rec = Recommender.load(ml100k_run)
    info = rec.info
    assert isinstance(info, ModelInfo) and rec.info is info  # built once
    assert (info.name, info.task, info.dataset) == ("comirec-sa", "retrieval", "ml-100k")
    assert (info.n_items, info.n_users, info.num_interests, info.maxlen) == (1349, 943, 4, 50)
    assert info.stored_users == "histories" and info.folder == ml100k_run
    assert info.metrics.to_dict() == json.loads((ml100k_run / "metrics.json").read_text())
    assert len(info.item_ids) == len(info.item_counts) == len(info.item_titles) == 1349
    assert info.item_titles[info.item_ids.index(50)] == "Star Wars (1977)"
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.n_items = 3
    with pytest.raises(ValueError, match="read-only"):
        info.item_counts[0] = 0
    before = rec.recommend([50, 172], n=10)
    info.config.diversity_lambda = 5.0  # a copy: the model keeps its own settings
    info.metrics.test.clear()
    assert rec.recommend([50, 172], n=10) == before
    assert Recommender.load(rec.save(tmp_path / "copy")).info.metrics != info.metrics
    assert "item_ids" not in repr(info)  # the long fields stay out of the repr


def test_recommend_command(ml100k_run):
    runner = CliRunner()
    result = runner.invoke(
        app, ["recommend", "--checkpoint", str(ml100k_run), "--user", "1", "-n", "3", "--json"]
    )
    assert result.exit_code == 0, result.output
    listed = json.loads(result.output)
    expected = Recommender.load(ml100k_run).recommend(user=1, n=3)
    assert [row["item"] for row in listed["items"]] == [r.item for r in expected]
    text = runner.invoke(app, ["recommend", "--checkpoint", str(ml100k_run), "--items", "50,zz"])
    assert text.exit_code == 0 and "unknown items, left out: zz" in text.output


def test_recommend_command_refuses_an_empty_history(ml100k_run, mirec_main):
    code, out, err = mirec_main("recommend", "--checkpoint", str(ml100k_run), "--items", " , ")
    assert code == 2 and out == ""
    assert err == "mirec: error: --items: no item ids; give raw item ids, oldest first: a,b,c\n"
