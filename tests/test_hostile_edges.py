"""Hostile input, third sweep (issue 29): the classes a careless or hostile user found after
the second one was fixed, each through the real command line, real files and real servers on
loopback. Each class: the clear one-line error (exit 2), a 4xx, or the right result; never a
traceback, a 5xx, another user's list, a hang or a lost file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import user_error

from mirec.data.vocabulary import Vocabulary

REPO = Path(__file__).resolve().parents[1]
TINY = "synthetic:n_users=150,n_items=70,n_clusters=4"
LONG_ID = "9" * 5000
"""Longer than the 4,300 digits Python's int() reads: it raised ValueError, an HTTP 503."""


def cli(*args: str, cwd: Path | None = None, timeout: float = 120):
    environ = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    command = [sys.executable, "-m", "mirec", *args]
    return subprocess.run(
        command, capture_output=True, text=True, env=environ, timeout=timeout, cwd=cwd
    )


def tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (links not followed) and the SHA-256 of its bytes."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not path.is_symlink() and path.name != ".lock"  # its holder's pid
    }


def tiny_run(tmp_path: Path, name: str, model: str, *args: str) -> Path:
    out = tmp_path / name
    result = cli("train", "--dataset", TINY, "--model", model, "--output-dir", str(out),
                 "--quiet", "--set", "max_epochs=1", *args)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return out


# --------------------------------------------------------------------------- identity


def test_an_id_too_long_for_int_is_unknown_never_an_error():
    integer = Vocabulary(np.array([1, 2, 99]), "user")
    text = Vocabulary(np.array(["a", "99"]), "item")
    assert integer.rows([LONG_ID, "9" * 20, 10**5000, "99"]).tolist() == [-1, -1, -1, 2]
    assert text.rows([10**5000, LONG_ID, 99]).tolist() == [-1, -1, 1]


def test_a_long_id_is_a_short_message_from_the_command_line(ml100k_run):
    line = user_error(cli("recommend", "--model-dir", str(ml100k_run), "--user", LONG_ID),
                      "is not in ml-100k", "5,002 characters")  # fmt: skip
    assert len(line) < 400


def test_a_long_id_over_http_is_a_4xx(ml100k_server):
    url = ml100k_server
    for path in (f"/users/{LONG_ID}/recommendations", f"/items/{LONG_ID}/similar"):
        answer = httpx.get(url + path, timeout=30)
        assert answer.status_code == 404, (path[:20], answer.text[:200])
        assert len(answer.text) < 400
    answer = httpx.post(f"{url}/recommend", json={"history": [LONG_ID, "1"]}, timeout=30)
    assert answer.status_code == 200, answer.text[:200]
    assert answer.json()["unknown_items"] == [LONG_ID]
    for query in (f"user={LONG_ID}", f"items={LONG_ID}"):
        answer = httpx.get(f"{url}/api/explain?{query}", timeout=30)
        assert 400 <= answer.status_code < 500, answer.text[:200]
    assert httpx.get(f"{url}/users/1/recommendations", timeout=30).status_code == 200


# --------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    ("option", "shown"),
    [
        (("--m", "99999999999"), "m=99999999999: at most 512"),
        (("--m", "100000"), "m=100000: at most 512"),  # a 1 GB index of 1,349 items
        (("--ef-search", "99999999999"), "ef_search=99999999999: at most 100,000"),
        (("--ef-construction", "1000000000"), "ef_construction=1000000000: at most 100,000"),
    ],
)
def test_hnsw_options_out_of_range_are_refused_before_building(ml100k_run, tmp_path, option, shown):
    pytest.importorskip("faiss")
    folder = tmp_path / "sa"
    shutil.copytree(ml100k_run, folder)
    user_error(cli("index", "--model-dir", str(folder), "--kind", "hnsw", *option), shown)
    assert not list(folder.glob("index-*"))


def test_set_cannot_rename_the_model(tmp_path):
    out = tmp_path / "run"
    args = ["--dataset", TINY, "--model", "comirec-sa", "--output-dir", str(out)]
    result = cli("train", *args, "--set", "model=gru4rec")
    user_error(result, "setting model='gru4rec'", "(comirec-sa)", "--model gru4rec")
    assert not out.exists()


@pytest.mark.parametrize(
    ("sets", "shown"),
    [
        (("max_epochs=1", "max_epochs=2"), "--set max_epochs: given twice"),
        (("=5",), "no setting before '='"),
        ((" =5",), "no setting before '='"),
    ],
)
def test_set_values_that_say_two_things_or_nothing_are_refused(tmp_path, sets, shown):
    args = [a for s in sets for a in ("--set", s)]
    result = cli("train", "--dataset", TINY, "--model", "most-popular", "--output-dir",
                 str(tmp_path / "run"), *args)  # fmt: skip
    user_error(result, shown)


def test_the_same_set_twice_is_one_setting(tmp_path):
    tiny_run(tmp_path, "run", "most-popular", "--set", "seed=3", "--set", "seed=3")


def test_a_synthetic_option_given_twice_is_refused(tmp_path):
    result = cli("train", "--dataset", "synthetic:n_users=150,n_users=200", "--model",
                 "most-popular", "--output-dir", str(tmp_path / "run"))  # fmt: skip
    user_error(result, "synthetic dataset option n_users: given twice")


def test_inspect_refuses_a_ctr_run(tmp_path):
    folder = tiny_run(tmp_path, "din", "din")
    for args in (("--user", "1"), ("--items", "1,2")):
        user_error(cli("inspect", "--model-dir", str(folder), *args), "a ctr model")


# --------------------------------------------------------------------------- experiments

GRID = (
    "name: t\nreport: {report}\nruns_dir: {runs}\ndatasets: [synthetic]\nmodels: [most-popular]\n"
)


@pytest.mark.parametrize(
    ("extra", "shown"),
    [
        ({"report": "[r.md]"}, "report: expected a text, got list"),
        ({"runs": "{a: 1}"}, "runs_dir: expected a text, got dict"),
        ({"tail": "grid: {num_interests: [4, 4]}"}, "grid.num_interests: 4 appears twice"),
        ({"tail": "seeds: [1, 1]"}, "seeds: 1 appears twice"),
        ({"datasets": "[synthetic, synthetic]"}, "datasets: 'synthetic' appears twice"),
        ({"report": "r.csv"}, "its results table has the same name"),
    ],
)
def test_grid_files_of_the_wrong_shape_are_refused(tmp_path, extra, shown):
    text = GRID.format(report=extra.get("report", "r.md"), runs=extra.get("runs", "runs"))
    text = text.replace("[synthetic]", extra.get("datasets", "[synthetic]"))
    file = tmp_path / "grid.yaml"
    file.write_text(text + extra.get("tail", "") + "\n")
    user_error(cli("experiment", str(file), "--max-cells", "0", "--quiet", cwd=tmp_path), shown)
    assert not (tmp_path / "runs").exists()


def test_a_huge_grid_is_refused_at_once(tmp_path):
    values = "[" + ", ".join(str(v) for v in range(1, 11)) + "]"
    keys = ["num_interests", "embedding_dim", "seed", "batch_size", "max_epochs", "patience"]
    grid = "grid: {" + ", ".join(f"{k}: {values}" for k in keys) + "}\n"
    file = tmp_path / "grid.yaml"
    file.write_text(GRID.format(report="r.md", runs="runs") + grid)
    start = time.monotonic()
    user_error(cli("experiment", str(file), "--max-cells", "0", cwd=tmp_path),
               "1,000,000 cells", "at most 10,000")  # fmt: skip
    assert time.monotonic() - start < 60  # it built configs for over ten minutes


@pytest.mark.parametrize("target", ["other.yaml", "notes.md", "data.csv-is-mine"])
def test_a_report_never_replaces_a_file_it_did_not_write(tmp_path, target):
    kept = tmp_path / ("data.csv" if target.startswith("data") else target)
    kept.write_text("my own file\n")
    report = "data.md" if target.startswith("data") else target  # data.md -> data.csv
    file = tmp_path / "grid.yaml"
    file.write_text(GRID.format(report=report, runs="runs"))
    user_error(cli("experiment", str(file), "--max-cells", "0", cwd=tmp_path),
               "was not written by mirec experiment")  # fmt: skip
    assert kept.read_text() == "my own file\n"


def test_a_report_replaces_its_own_earlier_report(tmp_path):
    file = tmp_path / "grid.yaml"
    file.write_text(GRID.format(report="r.md", runs="runs"))
    for _ in range(2):
        result = cli("experiment", str(file), "--max-cells", "0", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    assert "Generated by" in (tmp_path / "r.md").read_text()


# --------------------------------------------------------------------------- writers


def test_export_overwrite_replaces_only_an_export(ml100k_run, tmp_path):
    pytest.importorskip("onnxruntime")
    data = tmp_path / "data"
    (data / "ml-100k").mkdir(parents=True)
    (data / "ml-100k" / "u.data").write_text("1\t2\t3\t4\n")
    before = tree(data)
    # before: exit 0, and the data folder was gone
    user_error(cli("export", "--model-dir", str(ml100k_run), "--out", str(data), "--overwrite"),
               "holds files that are not a mirec export (ml-100k)")  # fmt: skip
    assert tree(data) == before
    export = tmp_path / "export"
    assert cli("export", "--model-dir", str(ml100k_run), "--out", str(export)).returncode == 0
    (export / "notes.txt").write_text("mine")
    user_error(
        cli("export", "--model-dir", str(ml100k_run), "--out", str(export), "--overwrite"),
        "(notes.txt)",
    )
    assert (export / "notes.txt").read_text() == "mine"
    (export / "notes.txt").unlink()
    result = cli("export", "--model-dir", str(ml100k_run), "--out", str(export), "--overwrite")
    assert result.returncode == 0, result.stderr


def test_a_dangling_link_or_a_file_in_the_path_is_named(tmp_path):
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    (tmp_path / "afile").write_text("x")
    train = ("train", "--dataset", TINY, "--model", "most-popular", "--quiet", "--output-dir")
    user_error(cli(*train, str(tmp_path / "dangling")),
               "dangling: is a symbolic link to", "which does not exist")  # fmt: skip
    user_error(cli(*train, str(tmp_path / "afile" / "sub")),
               "afile: is a file, not a folder, so")  # fmt: skip
    assert not (tmp_path / "nowhere").exists()
    assert (tmp_path / "afile").read_text() == "x"


def test_a_run_never_goes_into_a_datasets_folder(tmp_path):
    data = tmp_path / "data"
    (data / "ml-100k").mkdir(parents=True)
    (data / "ml-100k" / "u.data").write_text("1\t2\t3\t4\n")
    (tmp_path / "link").symlink_to(data / "ml-100k")
    before = tree(data)
    for out in (tmp_path / "link", data / "ml-100k" / "runs"):
        result = cli("train", "--dataset", TINY, "--model", "most-popular", "--quiet",
                     "--data-dir", str(data), "--output-dir", str(out))  # fmt: skip
        user_error(result, "lies in the folder of dataset ml-100k")
    assert tree(data) == before


def test_auto_resume_refuses_a_plain_run_before_training(tmp_path):
    folder = tiny_run(tmp_path, "auto", "sasrec")
    before = tree(folder)
    start = time.monotonic()
    result = cli("train", "--dataset", TINY, "--model", "auto", "--resume", "--quiet",
                 "--output-dir", str(folder), "--set", "max_epochs=1")  # fmt: skip
    user_error(result, "holds the finished run of sasrec alone", "--overwrite replaces it")
    assert not (folder / "candidates").exists()  # it trained all three, then refused
    assert tree(folder) == before
    assert time.monotonic() - start < 60


# --------------------------------------------------------------------------- serving


def process_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def spawned_children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"spawn_main" in cmdline:
                found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads /proc (Linux)")
@pytest.mark.parametrize("workers", ["1", "2"])
def test_sighup_stops_the_service_cleanly(serve_process, ml100k_run, tmp_path, workers):
    server = serve_process(["--checkpoint", str(ml100k_run), "--workers", workers], tmp_path)
    if workers == "2":
        deadline = time.monotonic() + 60
        while "all 2 workers ready" not in server.stdout.read_text():
            assert time.monotonic() < deadline, server.stderr.read_text()
            time.sleep(0.2)
    pids = spawned_children(server.process.pid)
    assert len(pids) == (2 if workers == "2" else 0)
    # before: the default action ended it at once, exit 129, no line, requests dropped
    assert server.stop(signal.SIGHUP) == 0, server.stderr.read_text()
    assert "stopped (SIGHUP)" in server.stdout.read_text()
    assert "Traceback" not in server.stderr.read_text()
    time.sleep(1)
    assert not any(process_alive(pid) for pid in pids)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{server.url}/health", timeout=5)
