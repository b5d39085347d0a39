"""`mirec recommend --all-users / --users FILE --out recs.parquet` and
:func:`mirec.serving.bulk_lists.write_all_lists`: every user once, with exactly the lists of
``Recommender.recommend(user=...)``, in chunks, written whole or not at all, bad input
refused in one line before anything is written."""

from __future__ import annotations

import importlib.util
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import string_id_log

import mirec
from mirec import Recommender
from mirec.errors import DataError, MirecError, UnknownIdError
from mirec.serving.bulk_lists import METADATA_KEY, read_users, write_all_lists

TINY = "synthetic:n_users=150,n_items=70,n_clusters=4"
COLUMNS = ["user", "rank", "item", "score", "interest"]


def lists_of(path: Path) -> dict:
    """The file's rows as {user: [(item, score, interest), ...]} in rank order, checking
    that each user's rows are contiguous and ranked 1, 2, ..."""
    table = pq.read_table(path)
    assert table.column_names == COLUMNS
    out: dict = {}
    last = object()
    for row in table.to_pylist():
        if row["user"] != last:
            assert row["user"] not in out, f"user {row['user']!r} written twice"
            out[row["user"]] = []
            last = row["user"]
        assert row["rank"] == len(out[row["user"]]) + 1
        out[row["user"]].append((row["item"], row["score"], row["interest"]))
    return out


def expected(rec: Recommender, users: list, **options) -> dict:
    """What ``recommend(user=u)`` gives each user, one call per user."""
    return {
        u: [(r.item, r.score, r.interest) for r in rec.recommend(user=u, **options)] for u in users
    }


def leftovers(folder: Path) -> list[str]:
    """Temp files left beside an output (``.NAME.XXXX.tmp``)."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def string_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ComiRec-SA trained 1 epoch on a log with text ids (150 users)."""
    folder = tmp_path_factory.mktemp("strings")
    mirec.train(
        dataset=str(string_id_log(folder / "log.txt")), format="sequences", model="comirec-sa",
        output_dir=folder / "run", max_epochs=1, progress=False,
    )  # fmt: skip
    return folder / "run"


def test_all_users_writes_every_user_once_with_recommends_lists(ml100k_run, tmp_path, mirec_main):
    out = tmp_path / "recs.parquet"
    # 943 users in chunks of 100: the last chunk holds 43
    code, stdout, err = mirec_main(
        "recommend", "--checkpoint", str(ml100k_run), "--all-users", "--out", str(out),
        "-n", "20", "--chunk-size", "100", "--quiet",
    )  # fmt: skip
    assert code == 0, err
    rec = Recommender.load(ml100k_run)
    users = list(rec.info.user_ids)
    written = lists_of(out)
    assert list(written) == users  # every user, once, in the folder's order
    assert written == expected(rec, users, n=20)
    table = pq.read_table(out)
    assert table.schema.field("user").type == pa.int64() == table.schema.field("item").type
    assert pq.ParquetFile(out).metadata.num_row_groups == 10
    assert f"943 users, {943 * 20} rows in " in stdout and "users/s" in stdout
    assert stdout.count("\n") == 1 and leftovers(tmp_path) == []
    recorded = pq.read_schema(out).metadata[METADATA_KEY]
    assert b'"n": 20' in recorded and b'"exclude_history": false' in recorded


def test_exclude_history_and_the_batched_call(ml100k_run, tmp_path):
    rec = Recommender.load(ml100k_run)
    users = list(rec.info.user_ids)
    out = tmp_path / "recs.parquet"
    written = write_all_lists(rec, out, n=30, exclude_history=True, chunk_size=333)
    assert (written.users, written.rows) == (943, 943 * 30) and written.users_per_second > 0
    batched = rec.recommend(user=users, n=30, exclude_history=True)
    lists = lists_of(out)
    assert lists == {
        u: [(r.item, r.score, r.interest) for r in one]
        for u, one in zip(users, batched, strict=True)
    }
    for u in users[:50]:
        assert not {item for item, _, _ in lists[u]} & set(rec.history_of(u))


def test_string_ids_stay_strings(string_run, tmp_path):
    rec = Recommender.load(string_run)
    out = tmp_path / "recs.parquet"
    write_all_lists(rec, out, n=10, chunk_size=7)  # 150 users: 21 chunks of 7, then 3
    table = pq.read_table(out)
    assert table.schema.field("user").type == pa.string() == table.schema.field("item").type
    users = list(rec.info.user_ids)
    assert users[0].startswith("user-")
    assert lists_of(out) == expected(rec, users, n=10)
    assert pq.ParquetFile(out).metadata.num_row_groups == 22


def test_a_users_file_writes_those_users_in_its_order(ml100k_run, tmp_path, mirec_main):
    rec = Recommender.load(ml100k_run)
    chosen = list(rec.info.user_ids)[::-37]
    text = tmp_path / "users.txt"
    # ids as text, a blank line, spaces and a Windows line end: the log's ints come out
    text.write_text(
        "\n".join(f" {u}\r" for u in chosen[:5]) + "\n\n" + "\n".join(map(str, chosen[5:])) + "\n"
    )
    out = tmp_path / "some.parquet"
    code, _, err = mirec_main(
        "recommend", "--model-dir", str(ml100k_run), "--users", str(text), "--out", str(out),
        "-n", "5", "--exclude-history", "--quiet",
    )  # fmt: skip
    assert code == 0, err
    written = lists_of(out)
    assert list(written) == chosen
    assert written == expected(rec, chosen, n=5, exclude_history=True)

    parquet = tmp_path / "users.parquet"
    pq.write_table(pa.table({"id": chosen[:9], "other": list(range(9))}), parquet)
    code, _, err = mirec_main(
        "recommend", "--model-dir", str(ml100k_run), "--users", str(parquet), "--users-column",
        "id", "--out", str(out), "-n", "5", "--quiet",
    )  # fmt: skip
    assert code == 0, err
    assert lists_of(out) == expected(rec, chosen[:9], n=5)
    # the default column is `user`; this file has none
    code, _, err = mirec_main(
        "recommend", "--model-dir", str(ml100k_run), "--users", str(parquet), "--out", str(out),
    )  # fmt: skip
    assert code == 2 and err.count("\n") == 1
    assert f"{parquet}: has no column 'user' (its columns: id, other)" in err


def test_bad_input_is_refused_in_one_line_before_anything_is_written(
    ml100k_run, tmp_path, mirec_main
):
    rec = Recommender.load(ml100k_run)
    out = tmp_path / "recs.parquet"
    out.write_bytes(b"the previous file")
    base = ["recommend", "--model-dir", str(ml100k_run), "--out", str(out), "--quiet"]

    def refused(*args: str) -> str:
        code, stdout, err = mirec_main(*base, *args)
        assert code == 2 and stdout == "" and err.count("\n") == 1, (code, stdout, err)
        assert out.read_bytes() == b"the previous file" and leftovers(tmp_path) == []
        return err.removeprefix("mirec: error: ").strip()

    users = [str(u) for u in rec.info.user_ids]
    late = tmp_path / "late.txt"
    late.write_text("\n".join([*users[:700], "999999", *users[700:]]) + "\n")
    assert refused("--users", str(late)).startswith(
        f"{late}, line 701: user '999999' is not in ml-100k"
    )
    twice = tmp_path / "twice.txt"
    twice.write_text("\n".join([*users[:20], users[3]]) + "\n")
    assert refused("--users", str(twice)) == (
        f"{twice}, line 21: user '{users[3]}' again (first at {twice}, line 4); each user is "
        "written once"
    )
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    assert refused("--users", str(empty)).startswith(f"{empty}: holds no user ids")
    assert refused("--users", str(tmp_path / "nowhere.txt")).endswith("no such users file")
    nulls = tmp_path / "nulls.parquet"
    pq.write_table(pa.table({"user": [1, None, 3]}), nulls)
    assert refused("--users", str(nulls)) == f"{nulls}, row 2 of column 'user': no user id (null)"
    assert refused("--users", str(late), "--users-column", "id").startswith(
        f"{late}: a text file (one raw user id a line) has no columns"
    )
    assert refused("--all-users", "-n", "0").startswith("n=0: expected an integer from 1")
    assert "--all-users or --users FILE, not both" in refused("--all-users", "--users", str(late))
    assert "drop --user/--items" in refused("--all-users", "--user", "1")
    # an output in the model folder, or the folder itself
    code, _, err = mirec_main(
        "recommend", "--model-dir", str(ml100k_run), "--all-users", "--out",
        str(ml100k_run / "recs.parquet"),
    )  # fmt: skip
    assert code == 2 and "is inside the model folder" in err
    assert not (ml100k_run / "recs.parquet").exists()
    code, _, err = mirec_main(
        "recommend", "--model-dir", str(ml100k_run), "--all-users", "--out", str(ml100k_run)
    )
    assert code == 2 and "holds the model folder" in err
    code, _, err = mirec_main("recommend", "--model-dir", str(ml100k_run), "--all-users")
    assert code == 2 and "give --out FILE" in err
    # the same checks from Python, where a list's place is its position
    with pytest.raises(UnknownIdError, match=r"^users\[2\]: user 'x' is not in ml-100k"):
        write_all_lists(rec, out, users=[1, 2, "x"])
    with pytest.raises(MirecError, match="an empty list"):
        write_all_lists(rec, out, users=[])
    with pytest.raises(MirecError, match="chunk_size=0"):
        write_all_lists(rec, out, chunk_size=0)
    assert out.read_bytes() == b"the previous file"


def test_folders_without_histories_and_ctr_folders_are_refused(tmp_path, mirec_main):
    ids = tmp_path / "ids"
    mirec.train(
        dataset=TINY, model="comirec-sa", output_dir=ids, max_epochs=1, stored_users="ids",
        progress=False,
    )  # fmt: skip
    out = tmp_path / "recs.parquet"
    code, _, err = mirec_main(
        "recommend", "--model-dir", str(ids), "--all-users", "--out", str(out)
    )
    assert code == 2 and err.count("\n") == 1 and not out.exists()
    assert f"{ids}: writing users' lists reads their stored histories" in err
    assert "keeps only user ids (stored_users=ids)" in err
    ctr = tmp_path / "ctr"
    scorer = mirec.train(
        dataset=TINY, task="ctr", model="din", output_dir=ctr, max_epochs=1, progress=False
    )
    code, _, err = mirec_main(
        "recommend", "--model-dir", str(ctr), "--all-users", "--out", str(out)
    )
    assert code == 2 and err.count("\n") == 1 and not out.exists()
    assert "din is a ctr model" in err
    with pytest.raises(MirecError, match="expected a Recommender"):
        write_all_lists(scorer, out)  # type: ignore[arg-type]


def test_read_users_keeps_places(tmp_path):
    path = tmp_path / "u.txt"
    path.write_text("\ufeffa\n\nb\n")
    users = read_users(path)
    assert users == ["a", "b"] and users.place(1) == f"{path}, line 3"
    with pytest.raises(DataError, match="is a folder"):
        read_users(tmp_path)


def _limit_file_size() -> None:  # in the child, before exec: ignored signals stay ignored
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))


@pytest.mark.skipif(not hasattr(resource, "RLIMIT_FSIZE"), reason="needs RLIMIT_FSIZE")
def test_a_write_failure_part_way_leaves_the_previous_file(ml100k_run, tmp_path):
    """A real failure: the process may write no file over 64 KiB (RLIMIT_FSIZE), and the
    lists of 943 users at n = 50 in chunks of 50 users are several times that."""
    out = tmp_path / "recs.parquet"
    out.write_bytes(b"the previous file")
    command = [sys.executable, "-m", "mirec", "recommend", "--model-dir", str(ml100k_run),
               "--all-users", "--out", str(out), "-n", "50", "--chunk-size", "50",
               "--quiet"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        command, capture_output=True, text=True, env=env, preexec_fn=_limit_file_size, timeout=300
    )
    assert done.returncode == 2, done.stderr
    assert (
        done.stderr.count("\n") == 1 and f"{out}: cannot be written (File too large)" in done.stderr
    )
    assert out.read_bytes() == b"the previous file" and leftovers(tmp_path) == []


@pytest.mark.skipif(importlib.util.find_spec("faiss") is None, reason="needs faiss (mirec[ann])")
def test_lists_from_a_flat_index(ml100k_run, tmp_path, mirec_main):
    folder = tmp_path / "model"
    shutil.copytree(ml100k_run, folder)  # the shared folder gets no index
    Recommender.load(folder).build_index("flat")
    out = tmp_path / "recs.parquet"
    code, _, err = mirec_main(
        "recommend", "--model-dir", str(folder), "--all-users", "--index", "flat",
        "--out", str(out), "-n", "10", "--chunk-size", "500", "--quiet",
    )  # fmt: skip
    assert code == 0, err
    rec = Recommender.load(folder)
    users = list(rec.info.user_ids)
    batched = rec.recommend(user=users, n=10, index="flat")
    assert lists_of(out) == {
        u: [(r.item, r.score, r.interest) for r in one]
        for u, one in zip(users, batched, strict=True)
    }
    assert b'"index": "flat"' in pq.read_schema(out).metadata[METADATA_KEY]
