"""Integrity checked as a whole: an item index whose file was altered at the same size
(rows permuted, HNSW links rewired) is refused, and a damaged preprocessing cache entry is
rebuilt, with one line saying so, instead of being read."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mirec import MirecError, Recommender
from mirec.core.paths import cache_dir
from mirec.data.prepare import load_sequences
from mirec.data.stored import CHECKSUMS_FILE
from mirec.retrieval.ann import index_paths

TINY = "synthetic:n_users=150,n_items=60,n_clusters=3,max_interests=3,seed=5"


@pytest.fixture
def indexed(ml100k_run: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "sa"
    shutil.copytree(ml100k_run, folder, ignore=shutil.ignore_patterns("index-*"))
    rec = Recommender.load(folder)
    rec.build_index("flat")
    rec.build_index("hnsw")
    return folder


def test_an_index_records_the_sha256_of_its_file(indexed):
    for kind in ("flat", "hnsw"):
        index_file, description = index_paths(indexed, kind)
        meta = json.loads(description.read_text())
        assert meta["index_sha256"] == hashlib.sha256(index_file.read_bytes()).hexdigest()


def test_a_flat_index_with_permuted_rows_is_refused(indexed):
    import faiss

    index_file, _ = index_paths(indexed, "flat")
    index = faiss.read_index(str(index_file))
    vectors = index.reconstruct_n(0, index.ntotal)
    permuted = faiss.IndexFlatIP(index.d)
    permuted.add(np.ascontiguousarray(vectors[::-1]))  # same vectors, other rows
    size = index_file.stat().st_size
    faiss.write_index(permuted, str(index_file))
    assert index_file.stat().st_size == size  # the size check alone passed this
    rec = Recommender.load(indexed)
    with pytest.raises(
        MirecError,
        match=r"index-flat\.faiss: does not match index-flat\.json "
        r"\(damaged, or written by another build\); rebuild it with `mirec index",
    ):
        rec.recommend([50, 172], 10, index="flat")  # fmt: skip
    rec.build_index("flat")  # the way out the message names
    assert [r.item for r in rec.recommend([50, 172], 10, index="flat")] == [
        r.item for r in rec.recommend([50, 172], 10)
    ]


def test_an_hnsw_index_with_rewired_links_is_refused(indexed):
    index_file, _ = index_paths(indexed, "hnsw")
    data = bytearray(index_file.read_bytes())
    # the neighbour lists follow the vectors: swap two 4-byte neighbour ids near the end
    end = len(data) - 64
    data[end : end + 4], data[end + 4 : end + 8] = data[end + 4 : end + 8], data[end : end + 4]
    assert data != index_file.read_bytes()
    index_file.write_bytes(bytes(data))
    with pytest.raises(MirecError, match=r"index-hnsw\.faiss: does not match"):
        Recommender.load(indexed).recommend([50], 5, index="hnsw")


def test_an_index_described_before_the_checksum_loads_as_before(indexed):
    _, description = index_paths(indexed, "flat")
    meta = json.loads(description.read_text())
    del meta["index_sha256"]
    description.write_text(json.dumps(meta))
    rec = Recommender.load(indexed)
    assert [r.item for r in rec.recommend([50], 5, index="flat")] == [
        r.item for r in rec.recommend([50], 5)
    ]


# -- the preprocessing cache ----------------------------------------------------------------


def cache_entry() -> Path:
    """The one cache entry of TINY (each test has a fresh cache folder)."""
    (entry,) = (cache_dir() / "sequences").iterdir()
    return entry


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("MIREC_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


FIELDS = ("items", "offsets", "user_ids", "item_ids")


def arrays(seqs) -> dict[str, np.ndarray]:
    """Copies of the arrays: the loaded ones map the entry's files, which the test damages."""
    return {name: np.array(getattr(seqs, name)) for name in FIELDS}


def same(a: dict[str, np.ndarray], b) -> None:
    for name in FIELDS:
        assert np.array_equal(a[name], getattr(b, name)), name


DAMAGES = {
    "cut short": lambda entry: (entry / "items.npy").write_bytes(
        (entry / "items.npy").read_bytes()[:-40]
    ),
    "a flipped bit": lambda entry: _flip(entry / "offsets.npy"),
    "no checksums": lambda entry: (entry / CHECKSUMS_FILE).unlink(),
    "a garbled record": lambda entry: (entry / CHECKSUMS_FILE).write_text("{not json"),
    "a file gone": lambda entry: (entry / "items.npy").unlink(),
}


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", list(DAMAGES))
def test_a_damaged_cache_entry_is_rebuilt_with_one_line(how, fresh_cache, caplog):
    first = arrays(load_sequences(TINY))
    entry = cache_entry()
    assert json.loads((entry / CHECKSUMS_FILE).read_text())  # recorded when published
    DAMAGES[how](entry)
    with caplog.at_level(logging.WARNING, logger="mirec.data"):
        again = load_sequences(TINY)
    same(first, again)
    lines = [r.getMessage() for r in caplog.records if r.name == "mirec.data"]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"mirec: {entry}: damaged preprocessing cache entry (")
    assert lines[0].endswith("); rebuilding it")
    # rebuilt in place, whole: read again without a word
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mirec.data"):
        same(first, load_sequences(TINY))
    assert not caplog.records
    assert sorted(p.name for p in entry.parent.iterdir()) == [entry.name]  # nothing aside


def test_a_damaged_cache_entry_under_the_command_line(fresh_cache, tmp_path):
    def train(out: Path) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "mirec", "train", "--dataset", TINY, "--model",
             "most-popular", "--quiet", "--output-dir", str(out)],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip

    first = train(tmp_path / "a")
    assert first.returncode == 0, first.stderr
    _flip(cache_entry() / "items.npy")
    again = train(tmp_path / "b")
    assert again.returncode == 0, again.stderr
    assert again.stderr.strip().splitlines() == [
        f"mirec: {cache_entry()}: damaged preprocessing cache entry (items.npy does not match "
        "its checksum); rebuilding it"
    ]
    a = json.loads((tmp_path / "a" / "metrics.json").read_text())
    b = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert a["test"] == b["test"]  # the same data, rebuilt
