"""Out-of-core preparation (DuckDB, memory-mapped arrays) of ``interactions`` logs gives
the in-memory path's sequences array for array, and its errors word for word."""

from __future__ import annotations

import itertools
import logging
from dataclasses import fields
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv
import pyarrow.parquet as pq
import pytest

from mirec.data import ingest
from mirec.data.prepare import load_sequences, prepare
from mirec.data.readers import read_interactions, read_sequences
from mirec.data.sequences import Sequences, build_sequences
from mirec.data.synthetic import SyntheticSpec, generate
from mirec.errors import ConfigError, DataError
from mirec.models.folder import _flat, _user_tables


def ml100k(shared_data: Path) -> pa.Table:
    """u.data (user, item, rating, ts; integer ids, timestamps with ties) as a table."""
    return pv.read_csv(
        shared_data / "ml-100k" / "u.data",
        read_options=pv.ReadOptions(column_names=["user", "item", "rating", "ts"]),
        parse_options=pv.ParseOptions(delimiter="\t"),
    )


def in_memory(path: Path | str, columns: str, **kw: object) -> Sequences:
    """What the in-memory reader and build_sequences make of the log."""
    return build_sequences(read_interactions(path, columns, **kw))


def out_of_core(path: Path | str, columns: str, folder: Path, **kw: object) -> Sequences:
    folder.mkdir()
    return ingest.ingest_interactions(path, columns, folder, **kw)


def assert_same_sequences(new: Sequences, old: Sequences) -> None:
    for field in fields(Sequences):
        a, b = getattr(old, field.name), getattr(new, field.name)
        assert (a is None) == (b is None), field.name
        if a is not None:
            assert a.shape == b.shape, field.name
            assert np.array_equal(a.astype(str) if a.dtype == object else a, b), field.name
    assert new.items.dtype == np.int32 and new.offsets.dtype == np.int64


@pytest.mark.parametrize("kind", ["parquet", "csv", "tsv"])
def test_ml100k_exported_prepares_as_in_memory(tmp_path, shared_data, kind):
    table = ml100k(shared_data)
    path = tmp_path / f"ml.{kind}"
    if kind == "parquet":
        pq.write_table(table, path)
    else:
        pv.write_csv(table, path, pv.WriteOptions(delimiter="\t" if kind == "tsv" else ","))
    new = out_of_core(path, "user,item,ts", tmp_path / "out")
    assert_same_sequences(new, in_memory(path, "user,item,ts", sep="\t" if kind == "tsv" else ","))
    assert (new.n_users, new.n_items, new.n_interactions) == (943, 1349, 99287)
    # integer ids stay integers
    assert new.user_ids.dtype == np.int64 and new.item_ids.dtype == np.int64
    assert isinstance(new.items, np.memmap) and isinstance(new.offsets, np.memmap)


def test_parquet_parts_of_mixed_types_prepare_as_in_memory(tmp_path, shared_data):
    """Parts in name order as one log: ints in one part and digits as text in another,
    times as integers, timestamps and text, a category column; ties broken by file order."""
    table = ml100k(shared_data).append_column(
        "genre", pc.cast(ml100k(shared_data).column("rating"), pa.string())
    )
    bounds = [0, 30_000, 70_000, table.num_rows]
    parts = [table.slice(lo, hi - lo) for lo, hi in itertools.pairwise(bounds)]
    parts[1] = (
        parts[1]
        .set_column(1, "item", pc.cast(parts[1].column("item"), pa.string()))
        .set_column(3, "ts", pc.cast(parts[1].column("ts"), pa.timestamp("s")))
    )
    parts[2] = parts[2].set_column(3, "ts", pc.cast(parts[2].column("ts"), pa.string()))
    folder = tmp_path / "log"
    folder.mkdir()
    for k, part in enumerate(parts):
        pq.write_table(part, folder / f"part-{k}.parquet")
    pattern = str(folder / "part-*.parquet")
    new = out_of_core(pattern, "user,item,ts,genre", tmp_path / "out")
    assert_same_sequences(new, in_memory(pattern, "user,item,ts,genre"))
    assert new.item_ids.dtype == np.int64
    assert list(new.category_names) == ["1", "2", "3", "4", "5"]


def test_text_ids_and_a_log_without_times_prepare_as_in_memory(tmp_path, shared_data):
    """amazon-beauty as (user, item) rows in time order, ids as text; file order is time."""
    log = read_sequences(shared_data / "amazon-beauty" / "Beauty.txt").interactions
    rows = pa.table(
        {
            "user": pc.binary_join_element_wise("u", pc.cast(log.column("user"), pa.string()), ""),
            "item": pc.binary_join_element_wise("i", pc.cast(log.column("item"), pa.string()), ""),
        }
    )
    path = tmp_path / "beauty.parquet"
    pq.write_table(rows, path)
    new = out_of_core(path, "user,item", tmp_path / "out")
    assert_same_sequences(new, in_memory(path, "user,item"))
    assert (new.n_users, new.n_items, new.n_interactions) == (22363, 12101, 198502)
    assert new.user_ids.dtype.kind == "U" and new.item_ids[0].startswith("i")


def test_a_cache_load_is_memory_mapped_and_reads_no_source(tmp_path, shared_data, monkeypatch):
    path = tmp_path / "ml.parquet"
    pq.write_table(ml100k(shared_data), path)
    first = prepare(str(path), format="interactions", columns="user,item,ts")

    def must_not_run(*args, **kwargs):
        raise AssertionError("the cache entry should have been used")

    monkeypatch.setattr("mirec.data.prepare.ingest_interactions", must_not_run)
    again = prepare(str(path), format="interactions", columns="user,item,ts")
    for seqs in (first.sequences, again.sequences):
        for name in ("items", "offsets", "user_ids", "item_ids"):
            assert isinstance(getattr(seqs, name), np.memmap), name
    assert_same_sequences(again.sequences, first.sequences)
    assert np.array_equal(again.test.target_items, first.test.target_items)
    # a registry dataset's entry is memory-mapped too
    assert isinstance(load_sequences("ml-100k", data_dir=shared_data).items, np.memmap)


def test_duckdb_spills_to_disk_under_its_memory_limit(tmp_path, monkeypatch, caplog):
    """600k rows (the synthetic generator's) in 40 MB: DuckDB spills, the result holds."""
    log, _ = generate(SyntheticSpec(n_users=30_000, n_items=5_000))
    path = tmp_path / "synthetic.parquet"
    pq.write_table(log.interactions.select(["user", "item"]), path)
    monkeypatch.setenv(ingest.MEMORY_ENV, "40MB")
    with caplog.at_level(logging.INFO, logger="mirec.data.ingest"):
        new = out_of_core(path, "user,item", tmp_path / "out")
    assert max(record.spilled for record in caplog.records) > 0
    assert_same_sequences(new, in_memory(path, "user,item"))
    monkeypatch.setenv(ingest.MEMORY_ENV, "lots")
    with pytest.raises(ConfigError, match="MIREC_INGEST_MEMORY='lots'"):
        out_of_core(path, "user,item", tmp_path / "again")


def test_decimal_times_fall_back_to_the_in_memory_reader(tmp_path, shared_data):
    table = ml100k(shared_data)
    table = table.set_column(3, "ts", pc.cast(table.column("ts"), pa.decimal128(24, 2)))
    path = tmp_path / "ml.parquet"
    pq.write_table(table, path)
    with pytest.raises(ingest.InMemoryOnly, match="decimal"):
        out_of_core(path, "user,item,ts", tmp_path / "out")
    prepared = load_sequences(str(path), format="interactions", columns="user,item,ts")
    assert_same_sequences(prepared, in_memory(path, "user,item,ts"))


def small_log() -> pa.Table:
    """7 users x 7 items, all kept by the 5-core filter."""
    return pa.table(
        {
            "user": np.repeat(np.arange(1, 8), 7),
            "item": np.tile(np.arange(1, 8), 7),
            "ts": np.arange(49),
        }
    )


def bad_files(folder: Path) -> dict[str, tuple[Path, str]]:
    """Each bad log, with the words its error must hold."""
    log = small_log()
    times = [str(t) if t != 20 else "yesterday" for t in range(49)]
    cases = {
        "missing column": (log, "no column 'time' (wanted as the timestamp)"),
        "time not a number": (log.set_column(2, "ts", pa.array(times)), "row 21: column 'ts'"),
        "empty user": (
            log.set_column(
                0,
                "user",
                pa.array(
                    [u if k != 9 else None for k, u in enumerate(log.column("user").to_pylist())]
                ),
            ),
            "row 10: column 'user' is empty",
        ),
        # "7" and "7\0" were one item (numpy's strings drop trailing NULs)
        "control character in an id": (
            log.set_column(
                1,
                "item",
                pa.array(
                    [f"{i}\x00" if k == 11 else str(i) for k, i in enumerate(log.column("item"))]
                ),
            ),
            "row 12: column 'item' holds a control character (U+0000), which no id does",
        ),
    }
    out = {}
    for name, (table, words) in cases.items():
        path = folder / f"{name.replace(' ', '-')}.parquet"
        pq.write_table(table, path)
        out[f"parquet, {name}"] = (path, words)
    lines = [",".join(map(str, row.values())) for row in log.to_pylist()]
    text = {
        "missing column": (["user,item,ts", *lines], "no column 'time' (wanted as the timestamp)"),
        "time not a number": (
            ["user,item,ts", *lines[:5], "3,1,soon", *lines[5:]],
            "line 7: timestamp column 'ts' is not a number: 'soon'",
        ),
        "non-integer id": (
            ["user,item,ts", *lines[:5], "x3,1,7", *lines[5:]],
            "line 7: user column 'user' is not an integer: 'x3', though 49 of its 50",
        ),
        "tab in a quoted id": (
            ["user,item,ts", *lines[:5], '"u\t3",1,7', *lines[5:]],
            "line 7: user column 'user' holds a control character (U+0009), which no id does",
        ),
    }
    for name, (rows, words) in text.items():
        path = folder / f"{name.replace(' ', '-')}.csv"
        path.write_text("\n".join(rows) + "\n")
        out[f"csv, {name}"] = (path, words)
    parts = folder / "parts"
    parts.mkdir()
    pq.write_table(log, parts / "a.parquet")
    (parts / "b.parquet").write_bytes(b"PAR1 not really")
    out["parquet part, unreadable"] = (parts, "b.parquet: not a readable Parquet file")
    return out


def test_a_bad_file_is_one_error_naming_the_file_and_column(tmp_path):
    for case, (path, words) in bad_files(tmp_path).items():
        columns = "user,item,time" if "missing column" in case else "user,item,ts"
        with pytest.raises(DataError) as new:
            load_sequences(str(path), format="interactions", columns=columns, use_cache=False)
        with pytest.raises(DataError) as old:
            in_memory(path, columns)
        message = str(new.value)
        assert str(path if path.is_file() else path / "b.parquet") in message, case
        assert words in message, case
        assert message == str(old.value), case  # the in-memory reader's words


def test_the_model_folder_streams_users_in_batches(shared_data):
    seqs = load_sequences("ml-100k", data_dir=shared_data)
    batches = list(_user_tables(seqs, interactions=7_000))
    assert len(batches) == 15  # 99,287 interactions, about 7,000 a batch
    users = pa.concat_tables(batches)
    offsets, items = _flat(users.column("items"), np.int32)
    assert np.array_equal(offsets, seqs.offsets) and np.array_equal(items, seqs.items)
    assert np.array_equal(users.column("user").to_numpy(), seqs.user_ids)
    _, codes = _flat(users.column("profile"))
    assert np.array_equal(codes.reshape(seqs.n_users, -1), seqs.user_feature_codes)
