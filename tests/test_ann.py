"""ANN retrieval: item indexes in a model folder, ``Recommender(..., index=KIND)`` and
``mirec index``, on the ml-100k run."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file, save_file

from mirec import MirecError, Recommender
from mirec.models.folder import CONFIG_FILE, METRICS_FILE, MODEL_FILE, WEIGHTS_FILE, load_model
from mirec.retrieval.ann import KINDS, index_paths
from mirec.run_folder import LOCK_FILE


@pytest.fixture(scope="module")
def indexed_run(ml100k_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the ml-100k run (the shared folder stays as trained) with its flat, hnsw
    and ivf indexes, built with the default options."""
    folder = tmp_path_factory.mktemp("ann") / "sa"
    shutil.copytree(ml100k_run, folder)
    rec = Recommender.load(folder)
    for kind in KINDS:
        rec.build_index(kind)
    return folder


@pytest.fixture(scope="module")
def rec(indexed_run: Path) -> Recommender:
    return Recommender.load(indexed_run)


@pytest.fixture(scope="module")
def histories(rec: Recommender) -> list[list]:
    """Every user's stored history, and one history the catalogue does not know (the
    popularity fallback)."""
    return [rec.history_of(user) for user in rec.info.user_ids] + [["no-such-item"]]


def same_lists(exact: list, found: list) -> None:
    assert len(exact) == len(found)
    for a, b in zip(exact, found, strict=True):
        assert [r.item for r in a] == [r.item for r in b]
        assert [r.score for r in a] == pytest.approx([r.score for r in b], abs=1e-5)
        assert [r.interest for r in a] == [r.interest for r in b]


BLOCKING = [
    {},
    {"exclude_history": True},
    {"exclude": [50, 100, 181, 258, 286]},  # ml-100k's most popular items
    {"exclude_history": True, "exclude": [50, 100, 181, 258, 286]},
]


@pytest.mark.parametrize("blocking", BLOCKING, ids=["none", "history", "exclude", "both"])
def test_flat_index_returns_the_exact_lists(rec, histories, blocking):
    exact = rec.recommend(histories, 50, **blocking)
    flat = rec.recommend(histories, 50, index="flat", **blocking)
    same_lists(exact, flat)
    assert len(histories) == 944 and all(len(x) == 50 for x in flat)
    assert flat[-1][0].interest is None and flat[-1].unknown_items == ["no-such-item"]
    if blocking.get("exclude_history"):
        assert all(not {r.item for r in x} & set(h) for x, h in zip(flat, histories, strict=True))
    for user in rec.info.user_ids[:5]:
        same_lists(
            [rec.recommend(user=user, n=20, **blocking)],
            [rec.recommend(user=user, n=20, index="flat", **blocking)],
        )


def test_flat_index_with_fewer_items_left_than_asked(rec, histories):
    """Only 10 items are not excluded: every path returns those 10 and nothing else."""
    kept = rec.info.item_ids[:10]
    exclude = rec.info.item_ids[10:]
    for kind in (None, *KINDS):
        lists = rec.recommend(histories[:50], 50, exclude=exclude, index=kind)
        assert all(sorted(r.item for r in x) == sorted(kept) for x in lists), kind


@pytest.mark.parametrize("blocking", BLOCKING[:2], ids=["none", "history"])
def test_diversity_on_the_flat_index_is_the_exact_diverse_list(rec, histories, blocking):
    """ComiRec's greedy merge draws on each interest's top-n, which the flat index returns
    whole: the same diverse lists."""
    exact = rec.recommend(histories, 50, diversity_lambda=1.0, **blocking)
    plain = rec.recommend(histories, 50, **blocking)
    assert sum(a != b for a, b in zip(exact, plain, strict=True)) > 500  # lambda acts
    flat = rec.recommend(histories, 50, diversity_lambda=1.0, index="flat", **blocking)
    same_lists(exact, flat)


def test_approximate_indexes_find_the_exact_lists_on_ml100k(rec, histories):
    """Measured with the default options: hnsw 1.0000, ivf 0.9999 (943 users); every item
    they return carries the model's exact score."""
    assert rec.index_recall("hnsw") >= 0.99
    assert rec.index_recall("ivf") >= 0.98
    exact = rec.recommend(histories, 50, exclude_history=True)
    for kind in ("hnsw", "ivf"):
        found = rec.recommend(histories, 50, exclude_history=True, index=kind)
        for a, b in zip(exact, found, strict=True):
            scores = {r.item: (r.score, r.interest) for r in a}
            shared = [r for r in b if r.item in scores]
            assert len(shared) >= 40
            assert all(scores[r.item] == pytest.approx((r.score, r.interest)) for r in shared)


def test_index_files_are_whole_and_described(indexed_run, rec):
    # no temp file left beside them (the run's own lock file aside)
    names = sorted(
        p.name
        for p in indexed_run.iterdir()
        if p.name.startswith((".", "index")) and p.name != LOCK_FILE
    )
    assert names == [f"index-{kind}.{ext}" for kind in sorted(KINDS) for ext in ("faiss", "json")]
    meta = json.loads(index_paths(indexed_run, "hnsw")[1].read_text())
    assert (
        meta["kind"] == "hnsw" and meta["n_items"] == rec.info.n_items == 1349 and meta["d"] == 64
    )
    assert meta["options"] == {"m": 32, "ef_construction": 200, "ef_search": 128}
    assert len(meta["item_vectors_sha256"]) == 64
    assert meta["index_bytes"] == index_paths(indexed_run, "hnsw")[0].stat().st_size


def test_stale_torn_and_missing_indexes_are_refused(indexed_run, tmp_path, histories):
    folder = tmp_path / "sa"
    shutil.copytree(indexed_run, folder)
    index_paths(folder, "hnsw")[0].unlink()
    with pytest.raises(MirecError, match=rf"{folder}: no hnsw index; build it with `mirec index"):
        Recommender.load(folder).recommend(histories[0], index="hnsw")
    with pytest.raises(MirecError, match="index kind 'annoy': expected one of flat, hnsw, ivf"):
        Recommender.load(folder).recommend(histories[0], index="annoy")
    # a torn write: the index file is not the one its description was written for
    ivf_file, _ = index_paths(folder, "ivf")
    ivf_file.write_bytes(ivf_file.read_bytes()[:-8])
    with pytest.raises(MirecError, match=r"index-ivf\.faiss: does not match index-ivf\.json"):
        Recommender.load(folder).recommend(histories[0], index="ivf")
    # retrain after indexing: new item vectors, the old flat index is refused
    weights = load_file(folder / WEIGHTS_FILE)
    weights["item_embedding.weight"][5] += 0.01
    save_file(weights, folder / WEIGHTS_FILE)
    retrained = Recommender.load(folder)
    with pytest.raises(MirecError, match=r"index-flat.faiss: stale: .* retrained after indexing"):
        retrained.recommend(histories[0], index="flat")
    retrained.build_index("flat")
    same_lists(
        [retrained.recommend(histories[0])], [retrained.recommend(histories[0], index="flat")]
    )


def test_models_an_index_cannot_serve_are_refused(indexed_run, tmp_path):
    folder = tmp_path / "mean"
    shutil.copytree(indexed_run, folder)
    # the same weights scored by the mean of the interests: every file of the folder must
    # say so, or the loader refuses a folder of mixed runs
    config = yaml.safe_load((folder / CONFIG_FILE).read_text())
    (folder / CONFIG_FILE).write_text(yaml.safe_dump({**config, "aggregator": "mean"}))
    for name in (MODEL_FILE, METRICS_FILE):
        recorded = json.loads((folder / name).read_text())
        recorded["config"]["aggregator"] = "mean"
        (folder / name).write_text(json.dumps(recorded))
    mean = Recommender.load(folder)
    for ask in (lambda: mean.build_index("flat"), lambda: mean.recommend([1, 2], index="flat")):
        with pytest.raises(MirecError, match="ranks by mean_over_interests: use index=None"):
            ask()
    unsaved = Recommender(load_model(indexed_run))
    with pytest.raises(MirecError, match=r"load the model with Recommender\.load"):
        unsaved.recommend([1, 2], index="flat")


def test_mirec_index_builds_measures_and_serves(indexed_run, rec, tmp_path, mirec_main):
    folder = tmp_path / "sa"
    shutil.copytree(indexed_run, folder)
    index_paths(folder, "hnsw")[0].unlink()
    code, out, err = mirec_main(
        "index",
        "--checkpoint",
        str(folder),
        "--kind",
        "hnsw",
        "--ef-search",
        "64",
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "hnsw index of 1349 items (d=64; m=32, ef_construction=200, ef_search=64)"
    assert re.fullmatch(
        rf"  built in \d+\.\d\d s, \d+\.\d\d MiB: {folder}/index-hnsw.faiss", lines[1]
    )
    recall = re.fullmatch(
        r"  Recall@50 against the exact lists, 943 users of the folder: (.*)", lines[2]
    )
    assert recall and float(recall[1]) >= 0.99
    args = ["recommend", "--checkpoint", str(folder), "--user", "1", "-n", "10", "--json"]
    code, out, err = mirec_main(*args, "--index", "hnsw")
    assert code == 0, err
    exact = rec.recommend(user=1, n=10)
    assert [r["item"] for r in json.loads(out)["items"]] == [r.item for r in exact]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--kind", "annoy"], "index kind 'annoy': expected one of flat, hnsw, ivf"),
        (["--kind", "flat", "--m", "16"], "option m does not apply to a flat index"),
        (["--kind", "ivf", "--nlist", "500"], "nlist=500: at most 34 lists for 1349 items"),
        (["--kind", "hnsw", "--ef-search", "0"], "ef_search=0: expected an integer >= 1"),
    ],
)
def test_mirec_index_bad_options_are_one_line_and_exit_2(indexed_run, args, needle, mirec_main):
    before = sorted(p.name for p in indexed_run.iterdir())
    code, _, err = mirec_main("index", "--checkpoint", str(indexed_run), *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mirec: error:") and needle in lines[0]
    assert sorted(p.name for p in indexed_run.iterdir()) == before


def test_recommend_without_the_index_says_how_to_build_it(ml100k_run, mirec_main):
    args = ["recommend", "--checkpoint", str(ml100k_run), "--user", "1", "--index", "ivf"]
    code, _, err = mirec_main(*args)
    assert code == 2
    rebuild = f"`mirec index --model-dir {ml100k_run} --kind ivf`"
    assert err == f"mirec: error: {ml100k_run}: no ivf index; build it with {rebuild}\n"
