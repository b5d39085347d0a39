"""Preprocessing is cached by dataset, settings and file stamps; synthetic data is planted."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow.csv as pv
import pyarrow.parquet as pq
import pytest

from mirec.data import download, locate
from mirec.data import prepare as prepare_module
from mirec.data.prepare import load_sequences, prepare
from mirec.data.synthetic import SyntheticSpec, generate
from mirec.errors import ConfigError


def cached_files(cache: Path) -> set[Path]:
    """The cache entries (a folder each; hidden staging folders are not entries)."""
    return {p for p in (cache / "sequences").glob("[!.]*") if p.is_dir()}


def test_second_run_loads_the_cache_and_a_changed_file_is_noticed(
    tmp_path, shared_data, private_cache, monkeypatch
):
    source = tmp_path / "LastFM.txt"
    shutil.copy(shared_data / "lastfm" / "LastFM.txt", source)
    before = cached_files(private_cache)
    first = load_sequences(str(source), format="sequences")
    added = cached_files(private_cache) - before
    assert len(added) == 1

    def must_not_read(*args, **kwargs):
        raise AssertionError("the cached result should have been used")

    with monkeypatch.context() as m:
        # neither parsed nor hashed: finding the cache reads no byte of the source
        m.setattr(locate, "load", must_not_read)
        m.setattr(download, "sha256_of", must_not_read)
        again = load_sequences(str(source), format="sequences")
    assert np.array_equal(first.items, again.items)
    assert np.array_equal(first.offsets, again.offsets)
    assert np.array_equal(first.user_ids, again.user_ids)
    assert np.array_equal(first.category_names, again.category_names)

    # drop the last user's line: a new size, a new cache entry, one user fewer
    lines = source.read_text().splitlines()
    source.write_text("\n".join(lines[:-1]) + "\n")
    changed = load_sequences(str(source), format="sequences")
    assert len(cached_files(private_cache) - before) == 2
    assert changed.n_users == first.n_users - 1


def test_a_same_size_rewrite_with_a_new_time_is_read_again(tmp_path, shared_data, private_cache):
    source = tmp_path / "LastFM.txt"
    shutil.copy(shared_data / "lastfm" / "LastFM.txt", source)
    before = cached_files(private_cache)
    first = load_sequences(str(source), format="sequences")
    stat = source.stat()

    # the first user's first two items swapped: same size, other content, a later time
    # (set explicitly, as a coarse file-system clock could give the same one)
    text = source.read_text()
    assert text.startswith("1 1 2 ")
    source.write_text("1 2 1 " + text[len("1 1 2 ") :])
    assert source.stat().st_size == stat.st_size
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    changed = load_sequences(str(source), format="sequences")
    assert len(cached_files(private_cache) - before) == 2
    assert changed.n_interactions == first.n_interactions
    assert not np.array_equal(changed.items, first.items)
    fresh = load_sequences(str(source), format="sequences", use_cache=False)
    assert np.array_equal(changed.items, fresh.items)


def test_a_file_changed_while_it_is_read_is_not_cached(
    tmp_path, shared_data, private_cache, monkeypatch
):
    source = tmp_path / "LastFM.txt"
    shutil.copy(shared_data / "lastfm" / "LastFM.txt", source)
    real_load = locate.load

    def load_then_append(*args, **kwargs):
        log = real_load(*args, **kwargs)
        with source.open("a") as f:
            f.write("9999 1 2 3 4 5\n")
        return log

    before = cached_files(private_cache)
    monkeypatch.setattr(locate, "load", load_then_append)
    load_sequences(str(source), format="sequences")
    assert cached_files(private_cache) == before


def test_a_glob_of_parquet_parts_prepares_as_the_single_file(tmp_path, shared_data, private_cache):
    source = shared_data / "ml-100k" / "u.data"
    table = pv.read_csv(
        source,
        read_options=pv.ReadOptions(column_names=["user", "item", "rating", "ts"]),
        parse_options=pv.ParseOptions(delimiter="\t"),
    )
    bounds = [0, 25_000, 60_000, table.num_rows]
    for k in range(3):
        part = table.slice(bounds[k], bounds[k + 1] - bounds[k])
        pq.write_table(part, tmp_path / f"part-{k}.parquet")
    single = load_sequences(str(source), format="interactions", columns="1,2,4", sep="\t")
    parts = load_sequences(
        str(tmp_path / "part-*.parquet"), format="interactions", columns="user,item,ts"
    )
    assert parts.user_ids.dtype.kind == "i" and parts.item_ids.dtype.kind == "i"
    for name in ("items", "offsets", "user_ids", "item_ids"):
        assert np.array_equal(getattr(parts, name), getattr(single, name)), name


def test_prepared_amazon_beauty_matches_the_readme(shared_data):
    data = prepare("amazon-beauty", data_dir=shared_data)
    seqs = data.sequences
    # already 5-core: the protocol's filter changes nothing
    assert (seqs.n_users, seqs.n_items, seqs.n_interactions) == (22363, 12101, 198502)
    assert data.maxlen == 20
    assert (len(data.valid), len(data.test)) == (2236, 2237)
    assert set(data.split.train).isdisjoint(data.split.test)
    assert set(data.split.valid).isdisjoint(data.split.test)
    assert seqs.primary_category() is not None


def test_movielens_gets_maxlen_50(shared_data):
    assert prepare("ml-100k", data_dir=shared_data).maxlen == 50


def test_synthetic_is_deterministic_and_planted():
    spec = SyntheticSpec(n_users=500, n_items=300, n_clusters=10, seed=3)
    (log_a, truth_a), (log_b, _) = generate(spec), generate(spec)
    assert log_a.interactions.equals(log_b.interactions)
    items = log_a.interactions.column("item").to_numpy()
    users = log_a.interactions.column("user").to_numpy()
    # every event's item lies in its planted cluster, and that cluster is one of the user's
    cluster_size = 300 // 10
    assert np.array_equal((items - 1) // cluster_size, truth_a.event_cluster)
    planted = truth_a.user_interests[users - 1]
    assert (planted == truth_a.event_cluster[:, None]).any(axis=1).all()
    other = generate(SyntheticSpec(n_users=500, n_items=300, n_clusters=10, seed=4))[0]
    assert not other.interactions.equals(log_a.interactions)


def test_synthetic_options_are_checked():
    assert SyntheticSpec.parse("synthetic:n_users=10,seed=2") == SyntheticSpec(n_users=10, seed=2)
    with pytest.raises(ConfigError, match="n_userz"):
        SyntheticSpec.parse("synthetic:n_userz=10")
    with pytest.raises(ConfigError, match="expected int"):
        SyntheticSpec.parse("synthetic:n_users=many")


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MIREC_CACHE_DIR", str(tmp_path))
    assert prepare_module.cache_dir() == tmp_path
