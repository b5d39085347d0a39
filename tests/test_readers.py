"""Readers against the real shared datasets, and every kind of bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from mirec.data import readers
from mirec.data.log import RawLog
from mirec.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def data(shared_data: Path) -> Path:
    return shared_data


def _counts(log: RawLog) -> tuple[int, int, int]:
    t = log.interactions
    return t.num_rows, len(pc.unique(t["user"])), len(pc.unique(t["item"]))


def _rows(log: RawLog, n: int) -> list[tuple]:
    t = log.interactions.slice(0, n)
    return list(
        zip(t["user"].to_pylist(), t["item"].to_pylist(), t["timestamp"].to_pylist(), strict=True)
    )


def _categories_of(log: RawLog, item: object) -> list[str]:
    cats = log.item_categories
    assert cats is not None
    return cats.filter(pc.equal(cats["item"], item))["category"].to_pylist()


def _one_line_error(exc: pytest.ExceptionInfo[DataError]) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------- real datasets


@pytest.fixture(scope="module")
def ml100k(data: Path) -> RawLog:
    return readers.read_movielens_100k(data / "ml-100k")


@pytest.fixture(scope="module")
def ml_small(data: Path) -> RawLog:
    return readers.read_movielens(data / "ml-latest-small")


def test_ml100k_counts_and_order(ml100k: RawLog) -> None:
    assert _counts(ml100k) == (100_000, 943, 1_682)
    assert ml100k.interactions.schema.names == ["user", "item", "timestamp"]
    assert ml100k.interactions.schema.field("user").type == pa.int64()
    assert ml100k.interactions.schema.field("timestamp").type == pa.float64()
    assert _rows(ml100k, 3) == [
        (196, 242, 881250949.0),
        (186, 302, 891717742.0),
        (22, 377, 878887116.0),
    ]
    assert [p.name for p in ml100k.sources] == ["u.data", "u.item", "u.genre", "u.user"]


def test_ml100k_genres_and_titles(ml100k: RawLog) -> None:
    cats, titles = ml100k.item_categories, ml100k.item_titles
    assert cats is not None and titles is not None
    assert set(cats["category"].to_pylist()) == set(readers.ML100K_GENRES)
    assert len(pc.unique(cats["category"])) == 19
    assert cats.schema.field("item").type == pa.int64()
    assert len(pc.unique(cats["item"])) == 1_682  # every movie has at least one flag
    assert _categories_of(ml100k, 1) == ["Animation", "Children's", "Comedy"]
    assert titles.num_rows == 1_682
    by_item = dict(zip(titles["item"].to_pylist(), titles["title"].to_pylist(), strict=True))
    assert by_item[1] == "Toy Story (1995)"
    assert by_item[543] == "Misérables, Les (1995)"  # latin-1 decoded, not mojibake


def test_ml1m_sequences_with_movies_and_users(data: Path) -> None:
    # ml-1m.txt: one 'user item' line per rating, each user's movies oldest first
    log = readers.read_log(data / "ml-1m" / "ml-1m.txt", "movielens-sequences")
    assert _counts(log) == (1_000_209, 6_040, 3_706)
    assert log.interactions.schema.field("item").type == pa.int64()
    assert _rows(log, 2) == [(1, 3186, None), (1, 1721, None)]  # file order is time order
    assert [p.name for p in log.sources] == ["ml-1m.txt", "movies.dat", "users.dat"]
    assert len(pc.unique(log.item_categories["category"])) == 18
    assert _categories_of(log, 1) == ["Animation", "Children's", "Comedy"]
    by_item = dict(zip(*(log.item_titles[c].to_pylist() for c in ("item", "title")), strict=True))
    assert by_item[2858] == "American Beauty (1999)"
    assert by_item[73] == "Misérables, Les (1995)"  # latin-1 decoded, not mojibake
    profiles = log.user_features
    assert profiles is not None and profiles.num_rows == 6_040
    assert profiles.slice(0, 1).to_pylist() == [
        {"user": 1, "age": "Under 18", "gender": "F", "occupation": "10", "zip_region": "4"}
    ]
    assert readers.source_files(data / "ml-1m" / "ml-1m.txt", "movielens-sequences") == [
        *log.sources
    ]


def test_ml100k_without_genre_file_uses_standard_names(data: Path, tmp_path: Path) -> None:
    for name in ("u.data", "u.item"):
        shutil.copy(data / "ml-100k" / name, tmp_path / name)
    log = readers.read_movielens_100k(tmp_path)
    assert log.item_categories is not None
    assert _categories_of(log, 1) == ["Animation", "Children's", "Comedy"]
    assert len(pc.unique(log.item_categories["category"])) == 19


def test_ml_latest_small(ml_small: RawLog) -> None:
    assert _counts(ml_small) == (100_836, 610, 9_724)
    assert _rows(ml_small, 2) == [(1, 1, 964982703.0), (1, 3, 964981247.0)]
    cats, titles = ml_small.item_categories, ml_small.item_titles
    assert cats is not None and titles is not None
    genres = set(cats["category"].to_pylist())
    # 20 genre labels in the file, one of which is "(no genres listed)", meaning none
    assert len(genres) == 19 and "(no genres listed)" not in genres and "IMAX" in genres
    assert _categories_of(ml_small, 1) == [
        "Adventure",
        "Animation",
        "Children",
        "Comedy",
        "Fantasy",
    ]
    assert titles.num_rows == 9_742
    assert len(pc.unique(cats["item"])) == 9_742 - 34  # 34 movies list no genres


@pytest.mark.parametrize(
    ("folder", "stem", "expected"),
    [
        ("amazon-beauty", "Beauty", (198_502, 22_363, 12_101)),
        ("amazon-toys", "Toys_and_Games", (167_597, 19_412, 11_924)),
        ("lastfm", "LastFM", (52_551, 1_090, 3_646)),
    ],
)
def test_sequences(data: Path, folder: str, stem: str, expected: tuple[int, int, int]) -> None:
    path = data / folder / f"{stem}.txt"
    log = readers.read_log(path, "sequences")
    assert _counts(log) == expected
    assert log.interactions["timestamp"].null_count == expected[0]
    assert log.sources == (path, data / folder / f"{stem}_item2attributes.json")
    cats = log.item_categories
    assert cats is not None and cats.schema.field("item").type == pa.int64()
    attrs = json.loads(log.sources[1].read_text())
    assert len(pc.unique(cats["item"])) == len(attrs)
    # one row per distinct (item, attribute): LastFM repeats tags
    assert cats.num_rows == sum(len(set(v)) for v in attrs.values())
    first_item = next(iter(attrs))
    assert _categories_of(log, int(first_item)) == [
        str(a) for a in dict.fromkeys(attrs[first_item])
    ]


def test_sequences_file_order(data: Path) -> None:
    log = readers.read_sequences(data / "amazon-beauty" / "Beauty.txt")
    t = log.interactions.slice(0, 12)
    assert t["user"].to_pylist() == [1] * 5 + [2] * 7
    assert t["item"].to_pylist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 4, 11]
    assert log.item_categories is None
    assert _categories_of(readers.read_log(log.sources[0], "sequences"), 4) == ["1", "2", "3"]


def test_taobao_sample(data: Path) -> None:
    log = readers.read_taobao(data / "taobao-sample" / "UserBehavior.csv")
    t = log.interactions
    assert t.num_rows == 84_475
    assert len(pc.unique(t["user"])) == 815
    assert len(pc.unique(t["item"])) == 55_368
    assert t.schema.names == ["user", "item", "timestamp", "behavior"]
    assert t.slice(0, 1).to_pylist() == [
        {"user": 1, "item": 2268318, "timestamp": 1511544070.0, "behavior": "pv"}
    ]
    assert t["user"][-1].as_py() == 100370  # the cut-short last user is kept
    assert set(pc.unique(t["behavior"]).to_pylist()) <= {"pv", "cart", "fav", "buy"}
    cats = log.item_categories
    assert cats is not None
    assert len(pc.unique(cats["category"])) == 2_914
    assert len(pc.unique(cats["item"])) == 55_368
    assert _categories_of(log, 2268318) == ["2520377"]
    # the folder works too
    assert readers.read_log(data / "taobao-sample", "taobao").interactions.num_rows == 84_475


def test_diginetica_through_read_interactions(data: Path) -> None:
    path = data / "diginetica-sample" / "sample_train-item-views.csv"
    log = readers.read_interactions(path, "session_id,item_id,timeframe", sep=";")
    assert _counts(log) == (12_391, 2_986, 7_139)
    assert _rows(log, 2) == [(1, 81766, 526309.0), (1, 31331, 1031018.0)]
    assert log.item_categories is None
    same = readers.read_log(path, "interactions", columns="session_id,item_id,timeframe", sep=";")
    assert same.interactions.equals(log.interactions)


def test_read_log_dispatch(data: Path, ml100k: RawLog, ml_small: RawLog) -> None:
    assert readers.read_log(data / "ml-100k", "movielens-100k").interactions.equals(
        ml100k.interactions
    )
    assert readers.read_log(data / "ml-latest-small", "movielens").interactions.equals(
        ml_small.interactions
    )
    # a MovieLens ratings file path works like its folder
    via_file = readers.read_movielens(data / "ml-latest-small" / "ratings.csv")
    assert via_file.interactions.equals(ml_small.interactions)


def test_movielens_1m_layout_latin1_movies(tmp_path: Path) -> None:
    # ML-1M: '::'-separated, no header, movies.dat in latin-1
    _write(tmp_path / "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n")
    _write(
        tmp_path / "movies.dat",
        b"1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
        + "661::Misérables, Les (1995)::Drama|Musical\n".encode("latin-1")
        + b"7::Nothing (2000)::(no genres listed)\n",
    )
    log = readers.read_movielens(tmp_path)
    assert _rows(log, 2) == [(1, 1193, 978300760.0), (1, 661, 978302109.0)]
    assert log.item_titles is not None
    assert log.item_titles["title"][1].as_py() == "Misérables, Les (1995)"
    assert _categories_of(log, 661) == ["Drama", "Musical"]
    assert _categories_of(log, 7) == []


# --------------------------------------------------------------------------- generic logs


def _write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(text)
    return path


def test_interactions_headerless_positional(tmp_path: Path) -> None:
    path = _write(tmp_path / "log.csv", "u1,i1,5,drama\nu2,i2,3,comedy\nu1,i3,4,\n")
    log = readers.read_interactions(path, "user,item,time,genre", header=False)
    assert log.interactions.schema.field("user").type == pa.string()
    assert log.interactions["item"].to_pylist() == ["i1", "i2", "i3"]
    assert log.interactions["timestamp"].to_pylist() == [5.0, 3.0, 4.0]
    assert log.item_categories is not None
    assert log.item_categories.to_pylist() == [
        {"item": "i1", "category": "drama"},
        {"item": "i2", "category": "comedy"},
    ]
    # column numbers pick columns in any order; all numbers means no header
    by_number = readers.read_interactions(path, "2,1")
    assert by_number.interactions["user"].to_pylist() == ["i1", "i2", "i3"]
    assert by_number.interactions["timestamp"].null_count == 3


def test_interactions_int_ids_and_leading_zeros(tmp_path: Path) -> None:
    ints = readers.read_interactions(
        _write(tmp_path / "a.tsv", "u\ti\n1\t7\n2\t8\n"), "u,i", sep="\t"
    )
    assert ints.interactions.schema.field("item").type == pa.int64()
    padded = readers.read_interactions(_write(tmp_path / "b.csv", "u,i\n1,007\n2,7\n"), "u,i")
    # "007" and "7" must stay different items, so both id columns become strings
    assert padded.interactions["item"].to_pylist() == ["007", "7"]
    assert padded.interactions["user"].to_pylist() == ["1", "2"]


def test_interactions_skip_timestamp_keep_category(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.csv", "user,item,ts,cat\n1,2,10,a\n1,3,11,b\n")
    log = readers.read_interactions(path, "user,item,,cat")
    assert log.interactions["timestamp"].null_count == 2
    assert log.item_categories is not None and log.item_categories.num_rows == 2


def test_interactions_blank_lines_and_crlf(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.csv", b"u,i,t\r\n1,2,3\r\n\r\n   \r\n4,5,6\r\n\r\n\r\n")
    log = readers.read_interactions(path, "u,i,t")
    assert _rows(log, 5) == [(1, 2, 3.0), (4, 5, 6.0)]


def test_mixed_line_endings_name_the_line(tmp_path: Path) -> None:
    # DuckDB stops without a line number here; the reader finds the line itself
    path = _write(tmp_path / "m.csv", b"u,i,t\n1,2,3\n4,5,6\r\n7,8,9\n")
    with pytest.raises(DataError, match=r"m.csv: line 3: ends in \\r\\n but line 1 ends in \\n"):
        readers.read_interactions(path, "u,i,t")
    seq = _write(tmp_path / "s.txt", b"1 2 3\n4 5\r\n")
    with pytest.raises(DataError, match=r"s.txt: line 2: ends in"):
        readers.read_sequences(seq)


def test_interactions_parquet(tmp_path: Path) -> None:
    path = tmp_path / "log.parquet"
    pq.write_table(
        pa.table({"uid": ["a", "b"], "iid": [10, 11], "ts": pa.array([1, 2], pa.timestamp("s"))}),
        path,
    )
    log = readers.read_interactions(path, "uid,iid,ts")
    assert log.interactions.to_pylist() == [
        {"user": "a", "item": "10", "timestamp": 1.0},
        {"user": "b", "item": "11", "timestamp": 2.0},
    ]


def _ml100k_parts(data: Path, folder: Path) -> tuple[Path, list[Path]]:
    """ml-100k's u.data as a tab-separated file with a header, and as 3 Parquet parts."""
    rows = (data / "ml-100k" / "u.data").read_text().splitlines()
    text = folder / "u.tsv"
    text.write_text("user\titem\trating\tts\n" + "\n".join(rows) + "\n")
    table = pa.table(
        {
            name: pa.array([int(r.split("\t")[i]) for r in rows], pa.int32())
            for i, name in enumerate(("user", "item", "rating", "ts"))
        }
    )
    parts = folder / "parts"
    parts.mkdir()
    bounds = [0, 30_000, 70_000, table.num_rows]
    paths = [parts / f"part-{k}.parquet" for k in range(3)]
    for k, path in enumerate(paths):
        pq.write_table(table.slice(bounds[k], bounds[k + 1] - bounds[k]), path)
    return text, paths


def test_interactions_parquet_parts_read_as_one_log(tmp_path: Path, data: Path) -> None:
    text, paths = _ml100k_parts(data, tmp_path)
    single = readers.read_log(text, "interactions", columns="user,item,ts")
    folder = readers.read_log(paths[0].parent, "interactions", columns="user,item,ts")
    pattern = readers.read_log(
        str(paths[0].parent / "part-*.parquet"), "interactions", columns="user,item,ts"
    )
    for log in (folder, pattern):
        assert log.interactions.schema.field("user").type == pa.int64()
        assert log.interactions.equals(single.interactions)
        assert log.sources == tuple(paths)
    assert readers.source_files(str(paths[0].parent / "*.parquet"), "interactions") == paths


def test_parquet_parts_errors_name_the_part_and_its_row(tmp_path: Path) -> None:
    parts = tmp_path / "parts"
    parts.mkdir()
    pq.write_table(
        pa.table({"u": [str(i) for i in range(50)], "i": ["7"] * 50}), parts / "a.parquet"
    )
    pq.write_table(pa.table({"u": ["3", "x4"], "i": ["7", "8"]}), parts / "b.parquet")
    with pytest.raises(DataError, match=r"b\.parquet: row 2: .*'x4'"):
        readers.read_interactions(parts, "u,i")
    pq.write_table(pa.table({"u": ["3"], "j": ["7"]}), parts / "b.parquet")
    with pytest.raises(DataError, match=r"b\.parquet.*'i'"):
        readers.read_interactions(parts, "u,i")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"empty: is a folder without \*\.parquet files"):
        readers.read_interactions(empty, "u,i")
    with pytest.raises(DataError, match=r"no file matches"):
        readers.read_interactions(tmp_path / "nothing-*.parquet", "u,i")
    (parts / "notes.txt").write_text("u,i\n1,2\n")
    with pytest.raises(DataError, match=r"notes\.txt: matched by .*only match Parquet"):
        readers.read_interactions(str(parts / "*"), "u,i")


# --------------------------------------------------------------------------- bad input


def test_wrong_field_count_names_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "u.data", "1\t2\t3\t881250949\n1\t3\t4\t881250950\n1\t4\t5\n")
    with pytest.raises(DataError) as exc:
        readers.read_movielens_100k(path)
    message = _one_line_error(exc)
    assert str(path) in message and "line 3" in message and "expected 4 fields" in message


@pytest.mark.parametrize(
    ("name", "text", "read"),
    [
        ("log.csv", "u,i,t\n1,2,3\n1,2\n", lambda p: readers.read_interactions(p, "u,i,t")),
        ("ratings.dat", "1::2::3::4\n1::2::3::4\n1::2::3\n", readers.read_movielens),
        ("UserBehavior.csv", "1,2,3,pv,5\n1,2,3,pv,5\n1,2,3,pv,5,6\n", readers.read_taobao),
    ],
)
def test_wrong_field_count_every_format(tmp_path: Path, name: str, text: str, read) -> None:
    path = _write(tmp_path / name, text)
    with pytest.raises(DataError) as exc:
        read(path)
    message = _one_line_error(exc)
    assert name in message and "line 3" in message


def test_line_numbers_count_blank_lines(tmp_path: Path) -> None:
    # blank and whitespace-only lines are skipped, yet the error names the physical line
    path = _write(tmp_path / "u.data", "1\t2\t3\t10\n\n  \n1\t3\t4\t11\n1.5\t4\t5\t12\n")
    with pytest.raises(DataError) as exc:
        readers.read_movielens_100k(path)
    assert "line 5" in _one_line_error(exc) and "'1.5'" in str(exc.value)


def test_non_numeric_timestamp(tmp_path: Path) -> None:
    path = _write(tmp_path / "u.data", "1\t2\t3\t881250949\n1\t3\t4\tyesterday\n")
    with pytest.raises(DataError) as exc:
        readers.read_movielens_100k(path)
    message = _one_line_error(exc)
    assert "u.data" in message and "line 2" in message
    assert "timestamp" in message and "not a number" in message


def test_empty_and_nan_timestamps(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"line 2: timestamp .* is empty"):
        readers.read_movielens_100k(_write(tmp_path / "u.data", "1\t2\t3\t5\n1\t3\t4\t\n"))
    with pytest.raises(DataError, match=r"line 1: timestamp .* not a finite number"):
        readers.read_taobao(_write(tmp_path / "t.csv", "1,2,3,pv,nan\n"))


def test_non_numeric_timestamp_generic(tmp_path: Path) -> None:
    path = _write(tmp_path / "views.csv", "s;i;t\n1;2;3\n1;3;4\n1;4;noon\n")
    with pytest.raises(DataError) as exc:
        readers.read_interactions(path, "s,i,t", sep=";")
    message = _one_line_error(exc)
    assert "views.csv: line 4" in message and "'t'" in message and "'noon'" in message


def test_non_numeric_id_in_numeric_format(tmp_path: Path) -> None:
    path = _write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,2,3,4\n1,x2,3,4\n")
    with pytest.raises(DataError) as exc:
        readers.read_movielens(path)
    message = _one_line_error(exc)
    assert "line 3" in message and "movieId" in message and "'x2'" in message


def test_missing_column_lists_the_file_columns(tmp_path: Path) -> None:
    path = _write(tmp_path / "log.csv", "user_id,item_id,when\n1,2,3\n")
    with pytest.raises(DataError) as exc:
        readers.read_interactions(path, "user_id,item_id,timestamp")
    message = _one_line_error(exc)
    assert "log.csv" in message and "'timestamp'" in message
    assert "'user_id', 'item_id', 'when'" in message
    parquet = tmp_path / "log.parquet"
    pq.write_table(pa.table({"a": [1], "b": [2]}), parquet)
    with pytest.raises(DataError, match=r"no column 'c' .* 'a', 'b'"):
        readers.read_interactions(parquet, "a,b,c")


def test_movielens_ratings_with_wrong_header(tmp_path: Path) -> None:
    _write(tmp_path / "ratings.csv", "userId,itemId,rating,timestamp\n1,2,3,4\n")
    with pytest.raises(DataError, match=r"no column 'movieId'.*'itemId'"):
        readers.read_movielens(tmp_path)


@pytest.mark.parametrize("content", ["", "\n\n   \n"])
def test_empty_file(tmp_path: Path, content: str) -> None:
    for read in (
        readers.read_movielens_100k,
        readers.read_sequences,
        readers.read_taobao,
        lambda p: readers.read_interactions(p, "a,b"),
    ):
        path = _write(tmp_path / "empty.txt", content)
        with pytest.raises(DataError) as exc:
            read(path)
        assert "empty.txt" in _one_line_error(exc) and "empty" in str(exc.value)


def test_header_only(tmp_path: Path) -> None:
    path = _write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n")
    with pytest.raises(DataError, match="no data rows after the header"):
        readers.read_movielens(path)


def test_missing_path_says_what_goes_there(tmp_path: Path) -> None:
    with pytest.raises(DataError) as exc:
        readers.read_sequences(tmp_path / "Beauty.txt")
    message = _one_line_error(exc)
    assert "Beauty.txt" in message and "no such file" in message and "sequence file" in message
    with pytest.raises(DataError, match=r"no such file or folder; put the MovieLens files"):
        readers.read_movielens(tmp_path / "ml-1m")
    with pytest.raises(DataError, match=r"no ratings.csv or ratings.dat here"):
        readers.read_movielens(tmp_path)
    with pytest.raises(DataError, match=r"UserBehavior.csv: no such file; put the Taobao"):
        readers.read_taobao(tmp_path)


def test_sequence_line_without_items(tmp_path: Path) -> None:
    path = _write(tmp_path / "seq.txt", "1 2 3\n\n2 4 5\n3\n4 6 7\n")
    with pytest.raises(DataError) as exc:
        readers.read_sequences(path)
    message = _one_line_error(exc)
    assert "seq.txt: line 4" in message and "user '3' has no items" in message


def test_sequences_blank_lines_tabs_and_string_ids(tmp_path: Path) -> None:
    path = _write(tmp_path / "seq.txt", "\nu1  a\tb \n\n \nu2 c\n\n")
    log = readers.read_sequences(path)
    assert log.interactions["user"].to_pylist() == ["u1", "u1", "u2"]
    assert log.interactions["item"].to_pylist() == ["a", "b", "c"]


def test_bad_attributes_json(tmp_path: Path) -> None:
    seq = _write(tmp_path / "S.txt", "1 2 3\n")
    bad = _write(tmp_path / "S_item2attributes.json", '{"2": [1, 2],\n "3": [4,}')
    with pytest.raises(DataError, match=r"S_item2attributes.json: line 2: not valid JSON"):
        readers.read_log(seq, "sequences")
    _write(bad, '{"2": [1], "x": [2]}')
    with pytest.raises(DataError, match=r"item 'x' is not an integer"):
        readers.read_log(seq, "sequences")
    _write(bad, '{"2": 5}')
    with pytest.raises(DataError, match=r"item '2': expected a list"):
        readers.read_log(seq, "sequences")


def test_invalid_encoding(tmp_path: Path) -> None:
    path = _write(tmp_path / "log.csv", b"u,i\n1,2\n1,\xff\n")
    with pytest.raises(DataError, match=r"log.csv: line 3: is not valid utf-8 text"):
        readers.read_interactions(path, "u,i")


def test_bad_genre_flag(tmp_path: Path, data: Path) -> None:
    shutil.copy(data / "ml-100k" / "u.data", tmp_path / "u.data")
    lines = (data / "ml-100k" / "u.item").read_bytes().split(b"\n")
    lines[1] = lines[1][:-1] + b"7"
    _write(tmp_path / "u.item", b"\n".join(lines))
    with pytest.raises(DataError, match=r"u.item: line 2: genre flag 'Western' must be 0 or 1"):
        readers.read_movielens_100k(tmp_path)


def test_unknown_format_and_bad_settings(tmp_path: Path) -> None:
    path = _write(tmp_path / "x.csv", "a,b\n1,2\n")
    with pytest.raises(ConfigError) as exc:
        readers.read_log(path, "csv")
    assert "'csv'" in str(exc.value)
    for name in readers.FORMATS:
        assert name in str(exc.value)
    with pytest.raises(ConfigError, match="needs columns"):
        readers.read_log(path, "interactions")
    with pytest.raises(ConfigError, match="apply to format 'interactions' only"):
        readers.read_log(path, "taobao", sep=";")
    with pytest.raises(ConfigError, match="expected 'user,item"):
        readers.read_interactions(path, "a")
    with pytest.raises(ConfigError, match="two roles"):
        readers.read_interactions(path, "a,a")


# --------------------------------------------------------------------------- control characters

# ids that differ from "it5" or "u3" only by a control character: "it5\0" and "it5" became
# one item (numpy's fixed-width strings drop trailing NULs); the others were kept as ids
# that print like another one
CONTROLS = ["\x00", "\x07", "\t", "\x0b", "\x0c", "\x1b", "\x7f", "\x85", "\x9f"]


def _control_log(user: str, item: str) -> list[tuple[str, str, int]]:
    rows = [(f"u{u}", f"it{(u + i) % 12}", 10 * u + i) for u in range(20) for i in range(6)]
    rows[8] = (user, item, 81)  # data row 9
    return rows


@pytest.mark.parametrize("control", CONTROLS, ids=[f"U+{ord(c):04X}" for c in CONTROLS])
@pytest.mark.parametrize("role", ["user", "item"])
def test_a_parquet_id_with_a_control_character_names_its_row(
    tmp_path: Path, control: str, role: str
) -> None:
    bad = {"user": ("u1" + control, "it2"), "item": ("u1", "it2" + control)}[role]
    rows = _control_log(*bad)
    path = tmp_path / "log.parquet"
    columns = {"u": [r[0] for r in rows], "i": [r[1] for r in rows], "t": [r[2] for r in rows]}
    pq.write_table(pa.table(columns), path)
    name = {"user": "u", "item": "i"}[role]
    with pytest.raises(DataError) as exc:
        readers.read_interactions(path, "u,i,t")
    assert _one_line_error(exc) == (
        f"{path}: row 9: column {name!r} holds a control character (U+{ord(control):04X}), "
        f"which no id does: {bad[role == 'item']!r}"
    )
    # and in a folder of parts, the part and its own row
    parts = tmp_path / "parts"
    parts.mkdir()
    pq.write_table(pa.table(columns).slice(0, 5), parts / "a.parquet")
    pq.write_table(pa.table(columns).slice(5), parts / "b.parquet")
    with pytest.raises(DataError, match=rf"^{parts / 'b.parquet'}: row 4: column '{name}' holds"):
        readers.read_interactions(parts, "u,i,t", id_type="str")


@pytest.mark.parametrize("control", ["\t", "\x0b", "\x0c", "\x85", "\x9f"])
def test_a_text_id_with_a_control_character_names_its_line(tmp_path: Path, control: str) -> None:
    # the byte check of a text file refuses NUL, BEL, ESC, DEL...; these pass it: a tab,
    # vertical tab or form feed inside a quoted field, C1 controls (two bytes in UTF-8;
    # DuckDB refuses their one-byte latin-1 form as not latin-1)
    rows = _control_log("u1", "it2" + control)
    path = tmp_path / "log.csv"
    path.write_text("user,item,t\n" + "".join(f'{u},"{i}",{t}\n' for u, i, t in rows))
    with pytest.raises(DataError) as exc:
        readers.read_interactions(path, "user,item,t")
    assert _one_line_error(exc) == (
        f"{path}: line 10: item column 'item' holds a control character "
        f"(U+{ord(control):04X}), which no id does: {'it2' + control!r}"
    )
    if control == "\x9f":  # a C1 control: in sequences too (U+0085 splits them, as a space)
        seq = _write(tmp_path / "seq.txt", f"u1 a b c\nu2 a b{control} c\n")
        with pytest.raises(DataError, match=r"seq\.txt: line 2: item id holds a control"):
            readers.read_sequences(seq)


def test_a_parquet_id_that_is_not_utf8_names_its_row(tmp_path: Path) -> None:
    # a lone surrogate as Python's surrogatepass writes it: not UTF-8, which Parquet
    # does not check
    items = [b"it1", b"it2", b"it5\xed\xa0\x80", b"it5"]
    binary = pa.array(items, pa.binary())
    strings = pa.Array.from_buffers(pa.string(), len(binary), binary.buffers())
    path = tmp_path / "log.parquet"
    pq.write_table(pa.table({"u": ["a", "b", "c", "d"], "i": strings}), path)
    with pytest.raises(DataError) as exc:
        readers.read_interactions(path, "u,i")
    assert _one_line_error(exc) == (
        f"{path}: row 3: column 'i' is not valid utf-8 text: {items[2]!r}"
    )
