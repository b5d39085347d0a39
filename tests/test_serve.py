"""`mirec serve` end to end: a real server on loopback answers as `Recommender` does,
refuses bad requests with a 4xx and keeps serving, and batches concurrent requests."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx
import pyarrow.parquet as pq
import pytest
from conftest import string_id_log
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mirec
from mirec import Recommender
from mirec.errors import UnknownIdError
from mirec.serving.app import (
    MAX_HISTORY,
    ModelInfo,
    RecommendResponse,
    SimilarResponse,
    create_app,
)
from mirec.serving.batching import MicroBatcher


@pytest.fixture(scope="module")
def rec(ml100k_run: Path) -> Recommender:
    return Recommender.load(ml100k_run)


@pytest.fixture(scope="module")
def client(ml100k_server: str):
    with httpx.Client(base_url=ml100k_server, timeout=60) as http:
        yield http


def assert_same(answer: dict, expected, rec: Recommender) -> None:
    """An HTTP list is the Python list: items and interests exactly, scores to 1e-5, and
    each item's title and categories from the model folder."""
    assert [row["item"] for row in answer["items"]] == [r.item for r in expected]
    assert [row["interest"] for row in answer["items"]] == [r.interest for r in expected]
    assert [row["score"] for row in answer["items"]] == pytest.approx(
        [r.score for r in expected], abs=1e-5
    )
    info = rec.info
    about = dict(
        zip(info.item_ids, zip(info.item_titles, info.item_categories, strict=True), strict=True)
    )
    for row in answer["items"]:
        title, categories = about[row["item"]]
        assert (row["title"], row["categories"]) == (title, list(categories))


def post(client: httpx.Client, body: dict) -> dict:
    answer = client.post("/recommend", json=body)
    assert answer.status_code == 200, answer.text
    return RecommendResponse.model_validate(answer.json()).model_dump()


# -- good requests ----------------------------------------------------------------------


def test_histories_of_any_id_spelling_get_the_python_lists(client, rec):
    history = rec.history_of(rec.info.user_ids[10])[-40:]
    for sent in (history, [str(i) for i in history], [*history, "no-such", 10**30, "电影 🎬"]):
        answer = post(client, {"history": sent, "n": 25})
        assert len(answer["items"]) == 25
        expected = rec.recommend(sent, n=25)
        assert_same(answer, expected, rec)
        assert answer["unknown_items"] == expected.unknown_items
        assert answer["model"] == "comirec-sa"
    assert post(client, {"history": [*history, "no-such"], "n": 3})["unknown_items"] == ["no-such"]
    star_wars = next(
        r for r in post(client, {"history": [172, 181], "n": 50})["items"] if r["item"] == 50
    )
    assert star_wars["title"] == "Star Wars (1977)" and "Sci-Fi" in star_wars["categories"]


def test_options_exclude_history_and_diversity(client, rec):
    history = rec.history_of(rec.info.user_ids[5])
    fresh = post(client, {"history": history, "n": 50, "exclude_history": True})
    assert_same(fresh, rec.recommend(history, n=50, exclude_history=True), rec)
    assert not {row["item"] for row in fresh["items"]} & set(history)
    diverse = post(client, {"history": history, "n": 20, "diversity_lambda": 5.0})
    assert_same(diverse, rec.recommend(history, n=20, diversity_lambda=5.0), rec)
    plain = post(client, {"history": history, "n": 20, "diversity_lambda": None})
    assert_same(plain, rec.recommend(history, n=20), rec)
    assert [r["item"] for r in plain["items"]] != [r["item"] for r in diverse["items"]]
    cold = post(client, {"history": ["nothing-known"], "n": 5})  # the popularity fallback
    assert_same(cold, rec.recommend(["nothing-known"], n=5), rec)
    assert {row["interest"] for row in cold["items"]} == {None}
    longest = post(client, {"history": history * (MAX_HISTORY // len(history)), "n": 1000})
    assert len(longest["items"]) == 1000


def test_known_users_and_similar_items(client, rec):
    for user, query, kwargs in (
        (1, "n=20", {"n": 20}),
        ("1", "n=20&exclude_history=true", {"n": 20, "exclude_history": True}),
        (rec.info.user_ids[-1], "n=7&diversity_lambda=0.5", {"n": 7, "diversity_lambda": 0.5}),
        (2, "", {"n": 50}),
    ):
        answer = client.get(f"/users/{user}/recommendations?{query}")
        assert answer.status_code == 200, answer.text
        assert_same(answer.json(), rec.recommend(user=user, **kwargs), rec)
        assert answer.json()["unknown_items"] == []
    answer = client.get("/items/50/similar?n=10")
    assert answer.status_code == 200, answer.text
    similar = SimilarResponse.model_validate(answer.json()).model_dump()
    assert_same(similar, rec.similar_items(50, n=10), rec)
    assert len(client.get("/items/50/similar").json()["items"]) == 10


def test_model_health_and_docs(client, rec, ml100k_run):
    model = ModelInfo.model_validate(client.get("/model").json())
    metrics = json.loads((ml100k_run / "metrics.json").read_text())
    assert (model.model, model.dataset, model.num_interests) == ("comirec-sa", "ml-100k", 4)
    assert (model.n_items, model.n_users, model.maxlen) == (rec.info.n_items, 943, rec.info.maxlen)
    assert model.test_metrics == metrics["test"] and model.has_titles and model.has_categories
    assert client.get("/health").json()["status"] == "ok"
    head = client.head("/health")  # what uptime probes send
    assert head.status_code == 200 and head.content == b""
    assert "swagger" in client.get("/docs").text.lower()
    schema = client.get("/openapi.json").json()
    request = schema["components"]["schemas"]["RecommendRequest"]
    assert request["properties"]["history"]["maxItems"] == MAX_HISTORY
    assert request["required"] == ["history"]
    assert {
        "/recommend", "/users/{user}/recommendations", "/items/{item}/similar", "/model", "/health"
    } <= set(schema["paths"])  # fmt: skip


# -- bad requests -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "query, named",
    [
        ("diversity_lamda=0.5", "diversity_lamda"),  # misspelt: must not fall back silently
        ("n=5&n=30", "n"),  # which n would it be?
        ("N=5", "N"),
        ("n=5&user=2", "user"),
    ],
)
def test_unknown_or_repeated_query_parameters_are_refused(client, query, named):
    answer = client.get(f"/users/1/recommendations?{query}")
    assert answer.status_code == 422, answer.text
    assert named in answer.json()["detail"] and "\n" not in answer.json()["detail"]
    assert client.get("/items/50/similar?n=3&x=1").status_code == 422
    assert client.get("/health?verbose=1").status_code == 422
    # the page keeps its own query for its script: a shared link to a user's page
    assert client.get("/?user=1").status_code == 200
    assert client.get("/users/1/recommendations?n=5&exclude_history=true").status_code == 200


JSON = {"Content-Type": "application/json"}


def big_chunks():
    for _ in range(40):  # 40 x 64 KiB = 2.5 MiB, sent chunked, with no Content-Length
        yield b" " * 65536


BAD_REQUESTS = [
    # the body: not JSON, not an object, not what a field wants
    ("malformed JSON", "POST", "/recommend", {"content": b'{"history": [1, 2', "headers": JSON}),
    ("empty body", "POST", "/recommend", {"content": b"", "headers": JSON}),
    ("array body", "POST", "/recommend", {"json": [50, 172]}),
    ("string body", "POST", "/recommend", {"json": "50,172"}),
    ("text/plain", "POST", "/recommend", {"content": b'{"history": [50]}',
                                          "headers": {"Content-Type": "text/plain"}}),
    ("no content type", "POST", "/recommend", {"content": b'{"history": [50]}'}),
    ("form body", "POST", "/recommend", {"data": {"history": "50"}}),
    ("invalid UTF-8", "POST", "/recommend", {"content": b'{"history": ["\xff\xfe"]}',
                                             "headers": JSON}),
    ("deep nesting", "POST", "/recommend", {"content": b"[" * 100_000 + b"]" * 100_000,
                                            "headers": JSON}),
    ("5000-digit id", "POST", "/recommend", {"content": b'{"history": [' + b"9" * 5000 + b"]}",
                                             "headers": JSON}),
    ("missing history", "POST", "/recommend", {"json": {"n": 5}}),
    ("history null", "POST", "/recommend", {"json": {"history": None}}),
    ("history a string", "POST", "/recommend", {"json": {"history": "50,172"}}),
    ("history an object", "POST", "/recommend", {"json": {"history": {"50": 1}}}),
    ("history of objects", "POST", "/recommend", {"json": {"history": [{"item": 50}]}}),
    ("history of lists", "POST", "/recommend", {"json": {"history": [[50, 172]]}}),
    ("history of floats", "POST", "/recommend", {"json": {"history": [50.0]}}),
    ("history of bools", "POST", "/recommend", {"json": {"history": [True]}}),
    ("history of nulls", "POST", "/recommend", {"json": {"history": [None]}}),
    ("history with NaN", "POST", "/recommend", {"content": b'{"history": [NaN]}',
                                                "headers": JSON}),
    ("history of 10,001", "POST", "/recommend", {"json": {"history": [50] * (MAX_HISTORY + 1)}}),
    ("n a string", "POST", "/recommend", {"json": {"history": [50], "n": "5"}}),
    ("n a float", "POST", "/recommend", {"json": {"history": [50], "n": 5.0}}),
    ("n a bool", "POST", "/recommend", {"json": {"history": [50], "n": True}}),
    ("n null", "POST", "/recommend", {"json": {"history": [50], "n": None}}),
    ("n zero", "POST", "/recommend", {"json": {"history": [50], "n": 0}}),
    ("n negative", "POST", "/recommend", {"json": {"history": [50], "n": -3}}),
    ("n 1001", "POST", "/recommend", {"json": {"history": [50], "n": 1001}}),
    ("n huge", "POST", "/recommend", {"json": {"history": [50], "n": 10**30}}),
    ("exclude_history a string", "POST", "/recommend",
     {"json": {"history": [50], "exclude_history": "yes"}}),
    ("lambda negative", "POST", "/recommend", {"json": {"history": [50], "diversity_lambda": -1}}),
    ("lambda a string", "POST", "/recommend",
     {"json": {"history": [50], "diversity_lambda": "0.5"}}),
    ("lambda NaN", "POST", "/recommend", {"content": b'{"history": [50], "diversity_lambda": NaN}',
                                          "headers": JSON}),
    ("lambda infinite", "POST", "/recommend",
     {"content": b'{"history": [50], "diversity_lambda": 1e999}', "headers": JSON}),
    ("unknown field", "POST", "/recommend", {"json": {"history": [50], "N": 5}}),
    # size: by Content-Length, and streamed (chunked, no Content-Length)
    ("2 MiB body", "POST", "/recommend",
     {"content": b'{"history": [' + b"1," * (1 << 20) + b"1]}", "headers": JSON}),
    ("chunked 2.5 MiB", "POST", "/recommend", {"content": big_chunks(), "headers": JSON}),
    # users and items
    ("unknown user", "GET", "/users/999999/recommendations", {}),
    ("unicode user", "GET", "/users/%F0%9F%8E%AC%E7%94%B5/recommendations", {}),
    ("NUL user", "GET", "/users/%00/recommendations", {}),
    ("user with a slash", "GET", "/users/a%2Fb/recommendations", {}),
    ("user n zero", "GET", "/users/1/recommendations?n=0", {}),
    ("user n text", "GET", "/users/1/recommendations?n=ten", {}),
    ("user n 1001", "GET", "/users/1/recommendations?n=1001", {}),
    ("user lambda nan", "GET", "/users/1/recommendations?diversity_lambda=nan", {}),
    ("user lambda inf", "GET", "/users/1/recommendations?diversity_lambda=inf", {}),
    ("unknown item", "GET", "/items/999999/similar", {}),
    ("odd item", "GET", "/items/%27%3B--%20%E2%80%AE/similar", {}),
    ("item n huge", "GET", "/items/50/similar?n=99999999999999999999999", {}),
    # routes and methods
    ("GET /recommend", "GET", "/recommend", {}),
    ("unknown path", "GET", "/../../etc/passwd", {}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
def test_bad_requests_get_a_4xx_with_a_message(client, method, path, kwargs):
    answer = client.request(method, path, **kwargs)
    assert 400 <= answer.status_code < 500, (answer.status_code, answer.text[:300])
    detail = answer.json()["detail"]
    assert isinstance(detail, str) and detail and "\n" not in detail
    assert len(answer.content) < 2000  # a message, not an echo of the input


def test_the_server_answers_after_every_bad_request(client, rec):
    # runs after the battery above (file order): the same server is still up and right
    assert client.get("/health").status_code == 200
    history = rec.history_of(rec.info.user_ids[0])
    assert_same(post(client, {"history": history, "n": 10}), rec.recommend(history, n=10), rec)


def test_specific_statuses_and_messages(client):
    unknown = client.get("/users/999999/recommendations")
    assert unknown.status_code == 404 and "user '999999' is not in ml-100k" in unknown.text
    assert client.get("/items/nope/similar").status_code == 404
    big = client.post("/recommend", content=b"[" + b" " * (2 << 20) + b"]", headers=JSON)
    assert big.status_code == 413
    chunked = client.post("/recommend", content=big_chunks(), headers=JSON)
    assert chunked.status_code == 413
    n = client.post("/recommend", json={"history": [50], "n": 0})
    assert n.status_code == 422
    assert n.json()["detail"] == "body.n: Input should be greater than or equal to 1"
    assert "not valid JSON" in client.post("/recommend", content=b"{", headers=JSON).text


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=8,
)
IDS = st.integers(0, 2000) | st.text(max_size=6) | st.from_regex(r"\A[0-9]{1,4}\Z") | JSON_VALUES
BODIES = JSON_VALUES | st.fixed_dictionaries(
    {},
    optional={
        "history": st.lists(IDS, max_size=30) | JSON_VALUES,
        "n": st.integers(-3, 1400) | JSON_VALUES,
        "exclude_history": st.booleans() | JSON_VALUES,
        "diversity_lambda": st.none() | st.floats() | JSON_VALUES,
        "extra": JSON_VALUES,
    },
)
FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@FUZZ
@given(body=BODIES)
def test_fuzzed_bodies_get_a_list_or_a_4xx(client, body):
    answer = client.post("/recommend", content=json.dumps(body).encode(), headers=JSON)
    assert answer.status_code in (200, 422), (body, answer.text[:300])
    if answer.status_code == 200:
        listed = RecommendResponse.model_validate(answer.json())
        assert len(listed.items) == body.get("n", 50)
    else:
        assert answer.json()["detail"]


@FUZZ
@given(user=st.text(max_size=12), item=st.text(max_size=12), n=st.text(max_size=4))
def test_fuzzed_paths_get_a_list_or_a_4xx(client, user, item, n):
    for path in (
        f"/users/{quote(user, safe='')}/recommendations",
        f"/items/{quote(item, safe='')}/similar",
    ):
        answer = client.get(path, params={"n": n} if n else None)
        assert answer.status_code in (200, 404, 422), (path, n, answer.text[:300])


def test_a_lying_content_length_is_refused_before_the_body(ml100k_server):
    # 5 MB announced, nothing sent: the answer comes at once, from the header alone
    parts = urlsplit(ml100k_server)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as raw:
        raw.sendall(
            b"POST /recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 5000000\r\n\r\n"
        )
        head = raw.recv(4096)
    assert head.startswith(b"HTTP/1.1 413"), head


# -- concurrency: micro-batching ----------------------------------------------------------


def test_concurrent_requests_are_batched_and_answer_as_one_by_one(client, ml100k_server, rec):
    users = rec.info.user_ids[:48]
    cases = []
    for i, user in enumerate(users):
        history = rec.history_of(user)[-(10 + i) :]
        options = {"n": 10 + i % 3 * 20, "exclude_history": i % 4 == 0}
        cases.append(("history", history, options))
    cases += [("user", user, {"n": 15}) for user in users[:16]]  # 64 requests in all

    def ask(case):
        kind, query, options = case
        if kind == "history":
            return client.post("/recommend", json={"history": query, **options})
        flag = str(options.get("exclude_history", False)).lower()
        return client.get(f"/users/{query}/recommendations?n={options['n']}&exclude_history={flag}")

    before = client.get("/health").json()
    with ThreadPoolExecutor(64) as pool:
        answers = list(pool.map(ask, cases))
    after = client.get("/health").json()
    for (kind, query, options), answer in zip(cases, answers, strict=True):
        assert answer.status_code == 200, answer.text
        expected = (
            rec.recommend(query, **options)
            if kind == "history"
            else rec.recommend(user=query, **options)
        )
        assert_same(answer.json(), expected, rec)
    assert after["batched_requests"] - before["batched_requests"] == len(cases)


def test_micro_batcher_makes_one_pass_and_isolates_a_bad_query(rec):
    batcher = MicroBatcher(rec)
    histories = [rec.history_of(u)[-30:] for u in rec.info.user_ids[:40]]

    async def ask_all():
        return await asyncio.gather(
            *(batcher.recommend(h, 20, False, None) for h in histories),
            *(batcher.recommend(h, 5, True, 1.0) for h in histories[:5]),
            batcher.recommend_user(1, 20, False, None),
            batcher.recommend_user("no-such-user", 20, False, None),
            return_exceptions=True,
        )

    try:
        answers = asyncio.run(ask_all())
    finally:
        batcher.close()
    assert batcher.passes == 1 and batcher.batched == 47  # all waiting at once: one pass
    for history, got in zip(histories, answers[:40], strict=True):
        assert [r.item for r in got] == [r.item for r in rec.recommend(history, n=20)]
    for history, got in zip(histories[:5], answers[40:45], strict=True):
        expected = rec.recommend(history, n=5, exclude_history=True, diversity_lambda=1.0)
        assert [r.item for r in got] == [r.item for r in expected]
    assert [r.item for r in answers[45]] == [r.item for r in rec.recommend(user=1, n=20)]
    assert isinstance(answers[46], UnknownIdError)


# -- a folder without categories, in process ----------------------------------------------


def test_a_model_without_categories_refuses_diversity(ml100k_run, tmp_path):
    folder = tmp_path / "no-categories"
    shutil.copytree(ml100k_run, folder)
    items = pq.read_table(folder / "items.parquet")
    pq.write_table(items.drop_columns(["categories"]), folder / "items.parquet")
    meta = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**meta, "category_names": None}))
    rec = Recommender.load(folder)
    app = create_app(rec)

    async def ask() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)  # the app in process, no socket
        async with httpx.AsyncClient(transport=transport, base_url="http://mirec") as http:
            return [
                await http.post("/recommend", json={"history": [50, 172], "diversity_lambda": 0.5}),
                await http.post("/recommend", json={"history": [50, 172], "n": 5}),
                await http.get("/model"),
            ]

    try:
        refused, answer, model = asyncio.run(ask())
    finally:
        app.state.batcher.close()
    assert refused.status_code == 422
    assert "diversity_lambda needs item categories" in refused.json()["detail"]
    rows = answer.json()["items"]
    assert [row["item"] for row in rows] == [r.item for r in rec.recommend([50, 172], 5)]
    assert {row["categories"] for row in rows} == {None} and all(row["title"] for row in rows)
    assert model.json()["has_categories"] is False


# -- the command ---------------------------------------------------------------------------


def run_mirec(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mirec", *args], capture_output=True, text=True, timeout=timeout
    )


def test_bad_folder_and_port_in_use_exit_2_with_one_line(ml100k_server, ml100k_run, tmp_path):
    missing = run_mirec("serve", "--checkpoint", str(tmp_path / "nope"))
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"mirec: error: {tmp_path / 'nope'}: no such model folder"
    port = str(urlsplit(ml100k_server).port)
    taken = run_mirec("serve", "--checkpoint", str(ml100k_run), "--port", port)
    assert taken.returncode == 2 and taken.stdout == ""
    assert (
        taken.stderr.strip()
        == f"mirec: error: cannot listen on 127.0.0.1:{port}: Address already in use"
    )


def test_several_workers_serve_an_index_and_stop_on_sigterm(
    serve_process, ml100k_run, rec, tmp_path
):
    folder = tmp_path / "sa"
    shutil.copytree(ml100k_run, folder)
    no_index = run_mirec("serve", "--checkpoint", str(folder), "--index", "flat")
    assert no_index.returncode == 2 and no_index.stdout == ""
    assert no_index.stderr.count("\n") == 1 and "no flat index" in no_index.stderr
    Recommender.load(folder).build_index("flat")
    args = ["--checkpoint", str(folder), "--workers", "2", "--index", "flat"]
    server = serve_process(args, tmp_path)
    try:
        history = rec.history_of(rec.info.user_ids[3])
        with httpx.Client(base_url=server.url, timeout=60) as http, ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: post(http, {"history": history, "n": 30}), range(16)))
            assert http.get("/model").json()["index"] == "flat"
        for answer in answers:  # the flat index gives the exact lists
            assert_same(answer, rec.recommend(history, n=30), rec)
    finally:
        code = server.stop(signal.SIGTERM)
    assert code == 0, server.stderr.read_text()
    assert "with 2 worker(s), flat index" in server.stdout.read_text()
    assert "stopped" in server.stdout.read_text()


# -- identity: a request finds only the id it spells -------------------------------------

# spellings of user 10 (and, with 1 -> 5, item 50) that Python's int() reads as 10: none of
# them is the id; before, each answered user 10's list, or another user's
ODD_INTEGERS = [
    "1_0", " 10", "10 ", "+10", "010", "0010", "-0", "10.0", "1e1", "0x0a", "\u200b10",
    "\uff11\uff10", "\u0661\u0660", "\u0967\u0966", "\U0001d7cf\U0001d7ce",
]  # fmt: skip
# holding a control character or a lone surrogate: refused with a 422, never looked up
CONTROL_IDS = ["10\n", "10\r\n", "\t10", "10\x00", "1\x7f0", "10\x85", "\x1b[1m10"]


def test_no_spelling_of_a_known_id_gets_another_list(client, rec):
    own = client.get("/users/10/recommendations?n=10")
    assert own.status_code == 200
    assert_same(own.json(), rec.recommend(user=10, n=10), rec)
    assert own.json()["items"] != client.get("/users/1/recommendations?n=10").json()["items"]
    history = [50, 172]
    plain = post(client, {"history": history, "n": 10})
    for odd in ODD_INTEGERS:
        answer = client.get(f"/users/{quote(odd, safe='')}/recommendations?n=10")
        assert answer.status_code == 404, (odd, answer.text)
        assert answer.json()["detail"].startswith("user ") and "is not in ml-100k" in answer.text
        item = odd.replace("1", "5").replace("\uff11", "\uff15").replace("\u0661", "\u0665")
        assert client.get(f"/items/{quote(item, safe='')}/similar").status_code == 404, item
        # in a history: an unknown item, listed, not item 10 or 50
        mixed = post(client, {"history": [*history, odd, item], "n": 10})
        assert mixed["unknown_items"] == [odd, item]
        assert mixed["items"] == plain["items"]
        explained = client.get("/api/explain", params={"user": odd})
        assert explained.status_code == 422 and "is not in ml-100k" in explained.text
    for bad in [*CONTROL_IDS, "\ud800", "\udfff10"]:
        for answer in (
            client.post("/recommend", content=json.dumps({"history": [50, bad]}), headers=JSON),
            client.post("/api/explain", content=json.dumps({"user": bad}), headers=JSON),
            client.post("/api/explain", content=json.dumps({"items": [bad]}), headers=JSON),
        ):
            # a lone surrogate was a 500: the answer listing it could not be written as UTF-8
            assert answer.status_code == 422, (bad, answer.status_code, answer.text[:200])
            detail = answer.json()["detail"]
            assert " id " in detail and " holds " in detail and "\n" not in detail, detail
        if "\ud800" not in bad and "\udfff" not in bad:  # a URL cannot carry a surrogate
            answer = client.get(f"/users/{quote(bad, safe='')}/recommendations")
            assert answer.status_code == 422, (bad, answer.text)
    # a surrogate's UTF-8-like bytes in a URL are not UTF-8: replaced, then not found
    assert client.get("/users/%ED%A0%80/recommendations").status_code == 404
    assert client.get("/users/10/recommendations?n=10").json() == own.json()


@pytest.fixture(scope="module")
def text_id_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("text-ids")
    mirec.train(
        dataset=str(string_id_log(out / "log.txt")), format="sequences", model="comirec-sa",
        output_dir=out / "run", max_epochs=1, progress=False,
    )  # fmt: skip
    return out / "run"


def test_a_longer_text_id_is_not_cut_to_a_known_one(serve_process, text_id_run, tmp_path):
    # the ids were a fixed-width numpy array (<U8 for users): "user-1490" was cut to
    # "user-149" and answered as that user
    rec = Recommender.load(text_id_run)
    assert "user-149" in rec.info.user_ids and "sku-79" in rec.info.item_ids
    longer_users = ["user-1490", "user-149 ", "user-14900000", "user-1499"]
    longer_items = ["sku-790", "sku-79x", "sku-7999999"]
    for user in longer_users:
        with pytest.raises(UnknownIdError):
            rec.recommend(user=user)
    for item in longer_items:
        assert rec.recommend([item], n=5).unknown_items == [item]
    server = serve_process(["--checkpoint", str(text_id_run), "--workers", "1"], tmp_path)
    try:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            own = http.get("/users/user-149/recommendations", params={"n": 10})
            assert own.status_code == 200
            assert [r["item"] for r in own.json()["items"]] == [
                r.item for r in rec.recommend(user="user-149", n=10)
            ]
            for user in [*longer_users, "USER-149", "user-0149", "user-149\u200b"]:
                answer = http.get(f"/users/{quote(user, safe='')}/recommendations")
                assert answer.status_code == 404, (user, answer.text)
            for user in ["user-149\x00", "user-14\x079"]:
                answer = http.get(f"/users/{quote(user, safe='')}/recommendations")
                assert answer.status_code == 422, (user, answer.text)
            cold = http.post("/recommend", json={"history": longer_items, "n": 5}).json()
            assert cold["unknown_items"] == longer_items
            assert {row["interest"] for row in cold["items"]} == {None}  # the fallback
            for item in longer_items:
                assert http.get(f"/items/{quote(item)}/similar").status_code == 404
    finally:
        assert server.stop(signal.SIGINT) == 0, server.stderr.read_text()


# -- 5xx: settings the model lacks, and failures nobody foresaw ------------------------------

FAULT_INJECTION = '''\
"""Loaded at interpreter start (sitecustomize): a history holding "fault-injected" makes
the served model fail as a bug would, inside the compute thread."""
from mirec.recommender import Recommender

_recommend = Recommender.recommend


def recommend(self, history=None, *args, **kwargs):
    if "fault-injected" in repr(history):  # the server sends a list of histories
        raise RuntimeError("injected fault")
    return _recommend(self, history, *args, **kwargs)


Recommender.recommend = recommend
'''


def test_a_failure_is_a_logged_503_and_a_missing_setting_a_422(
    serve_process, shared_data, tmp_path, monkeypatch
):
    folder = tmp_path / "popular"
    mirec.train(
        dataset="ml-100k", model="most-popular", data_dir=shared_data, output_dir=folder,
        progress=False,
    )  # fmt: skip
    # a real server, with one fault planted in its model code at interpreter start
    (tmp_path / "inject").mkdir()
    (tmp_path / "inject" / "sitecustomize.py").write_text(FAULT_INJECTION)
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(tmp_path / "inject"), os.environ.get("PYTHONPATH", "")])
    )
    server = serve_process(["--checkpoint", str(folder), "--workers", "1"], tmp_path)
    try:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            # the popularity baseline has no diversity-controllable list: it failed in torch
            for answer in (
                http.post("/recommend", json={"history": [50, 172], "diversity_lambda": 0.5}),
                http.get("/users/1/recommendations", params={"diversity_lambda": 0.5}),
            ):
                assert answer.status_code == 422, answer.text
                assert answer.json() == {
                    "detail": "diversity_lambda: the popularity baseline has no "
                    "diversity-controllable list (the same items for everyone); leave it unset"
                }
            failed = http.post("/recommend", json={"history": [50, "fault-injected"]})
            assert failed.status_code == 503, failed.text
            assert failed.json() == {
                "detail": "the server failed to answer (RuntimeError); it is logged"
            }
            assert "Traceback" not in failed.text
            # and it goes on serving
            assert http.get("/health").json()["status"] == "ok"
            fine = http.post("/recommend", json={"history": [50, 172], "n": 5})
            assert fine.status_code == 200 and len(fine.json()["items"]) == 5
    finally:
        assert server.stop(signal.SIGINT) == 0, server.stderr.read_text()
    log = server.stderr.read_text()
    assert "POST /recommend failed: RuntimeError('injected fault')" in log
    assert "Traceback" in log and "RuntimeError: injected fault" in log
    # logged once, by the app: not re-raised to uvicorn, which dropped the connection
    assert log.count("failed: RuntimeError") == 1 and "Exception in ASGI" not in log
