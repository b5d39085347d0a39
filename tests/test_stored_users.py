"""``stored_users``: what a model folder keeps of the log's users (histories, ids or none),
and what each allows: by-id requests, re-evaluation and export need the histories and are
refused in one line without them; requests that send a history work on every folder."""

from __future__ import annotations

import json
import signal

import httpx
import pyarrow.parquet as pq
import pytest

from mirec import MirecError, Recommender
from mirec.config import load_config
from mirec.errors import ConfigError, UnknownIdError
from mirec.runs import train_run

TINY = "synthetic:n_users=150,n_items=70,n_clusters=4"


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The same ComiRec-SA run written with each setting."""
    out = {}
    for stored in ("histories", "ids", "none"):
        config = load_config(
            "comirec-sa", dataset=TINY, fixed={"max_epochs": 1, "stored_users": stored}
        )
        folder = tmp_path_factory.mktemp(stored) / "run"
        train_run(config, folder, progress=False)
        out[stored] = folder
    return out


def test_users_parquet_keeps_what_the_setting_says(folders):
    tables = {name: pq.read_table(folder / "users.parquet") for name, folder in folders.items()}
    full = tables["histories"]
    assert full.num_rows == 150
    assert sum(len(items) for items in full.column("items").to_pylist()) > 150 * 4
    assert tables["ids"].column("user").to_pylist() == full.column("user").to_pylist()
    assert all(items == [] for items in tables["ids"].column("items").to_pylist())
    assert tables["none"].num_rows == 0
    for name, folder in folders.items():
        assert json.loads((folder / "model.json").read_text())["stored_users"] == name


def test_the_setting_changes_no_result(folders):
    metrics = {name: json.loads((f / "metrics.json").read_text()) for name, f in folders.items()}
    assert metrics["ids"]["test"] == metrics["histories"]["test"] == metrics["none"]["test"]


def test_histories_sent_are_answered_on_every_folder(folders):
    lists = {
        name: [r.item for r in Recommender.load(folder).recommend([1, 2, 3], 5)]
        for name, folder in folders.items()
    }
    assert lists["ids"] == lists["histories"] == lists["none"]
    assert len(lists["histories"]) == 5


def test_a_request_by_user_id_needs_the_histories(folders):
    full, ids, none = (Recommender.load(folders[n]) for n in ("histories", "ids", "none"))
    user = full.info.user_ids[0]
    assert len(full.recommend(user=user, n=5)) == 5
    assert full.info.stored_users == "histories" and ids.info.stored_users == "ids"
    with pytest.raises(ConfigError, match=r"keeps only user ids \(stored_users=ids\); send"):
        ids.recommend(user=user, n=5)
    with pytest.raises(UnknownIdError):  # an ids folder still tells users apart
        ids.recommend(user=10**9, n=5)
    with pytest.raises(ConfigError, match=r"keeps no users \(stored_users=none\)"):
        none.recommend(user=user, n=5)
    with pytest.raises(ConfigError, match="stored_users=ids"):
        ids.history_of(user)
    assert none.info.user_ids == ()


@pytest.mark.parametrize("command", ["evaluate", "export"])
def test_commands_that_read_histories_refuse_in_one_line(folders, mirec_main, tmp_path, command):
    args = ["--out", str(tmp_path / "x")] if command == "export" else ["--quiet"]
    code, out, err = mirec_main(command, "--checkpoint", str(folders["ids"]), *args)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "(stored_users=ids)" in err, err
    assert not (tmp_path / "x").exists()


def test_a_bad_value_and_a_conflict_are_refused():
    with pytest.raises(MirecError, match="stored_users='all'"):
        load_config("comirec-sa", fixed={"stored_users": "all"})
    with pytest.raises(MirecError, match="needs stored_users=histories"):
        load_config("mind", fixed={"stored_users": "none", "user_features": True})


def test_the_service_answers_by_id_with_a_4xx(folders, serve_process, tmp_path):
    server = serve_process(["--checkpoint", str(folders["ids"]), "--workers", "1"], tmp_path)
    try:
        by_id = httpx.get(f"{server.url}/users/1/recommendations", timeout=30)
        assert 400 <= by_id.status_code < 500, by_id.text
        assert "stored_users=ids" in by_id.text
        sent = httpx.post(f"{server.url}/recommend", json={"history": [1, 2, 3]}, timeout=30)
        assert sent.status_code == 200, sent.text
    finally:
        assert server.stop(signal.SIGINT) == 0
