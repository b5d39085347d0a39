"""`mirec serve --workers N` is supervised: its workers die with it, all serve one model
version, and one that cannot start is not restarted forever. Real servers on loopback,
real signals, processes checked through /proc."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/stat").is_file(), reason="reads processes from /proc (Linux)"
)


def children(pid: int) -> list[int]:
    """The worker processes (multiprocessing's spawned children) of process ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue  # it ended meanwhile
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return sorted(found)


def running(pid: int) -> bool:
    """True while ``pid`` is a process that runs: gone, or a zombie (dead, holding no
    socket, waiting for init to reap it), is not running."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    pytest.fail(f"not within {timeout:.0f} s: {what}")


def workers_of(server, n: int) -> list[int]:
    """The ``n`` workers of a started server, once they all have loaded the model."""
    wait_for(lambda: f"all {n} workers ready" in server.stdout.read_text(), 60, "workers ready")
    pids = children(server.process.pid)
    assert len(pids) == n
    return pids


def health(url: str) -> httpx.Response:
    return httpx.get(f"{url}/health", timeout=10)


@pytest.fixture
def served_copy(ml100k_run: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "sa"
    shutil.copytree(ml100k_run, folder)
    return folder


def test_killing_the_supervisor_kills_its_workers(serve_process, served_copy, tmp_path):
    server = serve_process(["--checkpoint", str(served_copy), "--workers", "2"], tmp_path)
    workers = workers_of(server, 2)
    assert all(running(pid) for pid in workers)
    server.process.kill()  # SIGKILL: the supervisor gets no chance to stop them
    server.process.wait()
    wait_for(lambda: not any(running(pid) for pid in workers), 15, f"workers {workers} end")
    with pytest.raises(httpx.TransportError):  # nobody answers on the port
        health(server.url)


def test_a_killed_worker_is_restarted_and_serves(serve_process, served_copy, tmp_path):
    server = serve_process(["--checkpoint", str(served_copy), "--workers", "2"], tmp_path)
    try:
        first, _second = workers_of(server, 2)
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: "restarted" in server.stderr.read_text(), 60, "a restarted worker")
        log = server.stderr.read_text()
        number = re.search(rf"worker (\d) \(pid {first}\) was killed by SIGKILL; restarting it",
                           log)  # fmt: skip
        assert number, log
        (new,) = set(children(server.process.pid)) - {first, _second}
        assert f"mirec serve: worker {number.group(1)} (pid {new}) restarted" in log
        # both answer (several requests reach both workers of the one socket)
        for _ in range(8):
            assert health(server.url).status_code == 200
        workers = children(server.process.pid)
    finally:
        assert server.stop(signal.SIGTERM) == 0, server.stderr.read_text()
    assert not any(running(pid) for pid in workers)  # stopped and reaped with it
    assert "Traceback" not in server.stderr.read_text()


def test_a_folder_retrained_under_the_service_is_not_served_beside_it(
    serve_process, served_copy, shared_data, tmp_path
):
    server = serve_process(["--checkpoint", str(served_copy), "--workers", "2"], tmp_path)
    try:
        model = httpx.get(f"{server.url}/model", timeout=10).json()["model"]
        assert model == "comirec-sa"
        # another model trained into the served folder (a real mirec train --overwrite)
        retrain = subprocess.run(
            [sys.executable, "-m", "mirec", "train", "--dataset", "ml-100k", "--model",
             "most-popular", "--output-dir", str(served_copy), "--data-dir", str(shared_data),
             "--overwrite", "--quiet"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert retrain.returncode == 0, retrain.stderr
        first, second = workers_of(server, 2)
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: "refused to serve" in server.stderr.read_text(), 60, "the refusal")
        log = server.stderr.read_text()
        refusals = [line for line in log.splitlines() if "refused to serve" in line]
        assert len(refusals) == 1 and "Traceback" not in log
        assert f"{served_copy}: the model folder changed since the service started" in log
        assert "model.safetensors" in refusals[0] and "restart mirec serve" in refusals[0]
        # the place stays empty: one worker, the old model, and /health says degraded
        time.sleep(3)
        assert children(server.process.pid) == [second]
        for _ in range(4):
            assert httpx.get(f"{server.url}/model", timeout=10).json()["model"] == "comirec-sa"
            answer = health(server.url)
            assert answer.status_code == 503
            assert answer.json()["detail"].startswith("degraded: 1 of 2 workers stopped")
        # the last worker goes too: the service stops, with one line
        os.kill(second, signal.SIGKILL)
        assert server.process.wait(timeout=60) == 2
    finally:
        if server.process.poll() is None:
            server.stop(signal.SIGTERM)
    last = server.stderr.read_text().strip().splitlines()[-1]
    assert last.startswith("mirec: error: no worker of the service is left (worker 2 ")
    assert last.endswith("; mirec serve stopped")


def test_a_damaged_folder_stops_the_restarts(serve_process, served_copy, tmp_path):
    server = serve_process(["--checkpoint", str(served_copy), "--workers", "2"], tmp_path)
    try:
        workers = workers_of(server, 2)
        weights = served_copy / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:1000])  # truncated under the service
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        assert server.process.wait(timeout=60) == 2
    finally:
        if server.process.poll() is None:
            server.stop(signal.SIGTERM)
    log = server.stderr.read_text()
    assert "Traceback" not in log
    refusals = [line for line in log.splitlines() if line.startswith("mirec serve: worker")
                and "refused to serve" in line]  # fmt: skip
    assert len(refusals) == 2  # each refused once, not restarted again
    assert all("model.safetensors" in line for line in refusals)
    assert log.strip().splitlines()[-1].startswith("mirec: error: no worker of the service")


# a worker that crashes while loading (not a refusal: an error nobody foresaw), once the
# file FLAG exists; at interpreter start, as the spawned workers import it too
CRASH_ON_LOAD = """\
import os

import mirec.recommender

_load = mirec.recommender.load


def load(*args, **kwargs):
    if os.path.exists(os.environ["MIREC_TEST_CRASH_FLAG"]):
        raise RuntimeError("injected crash while loading")
    return _load(*args, **kwargs)


mirec.recommender.load = load  # what mirec serve loads a folder with
"""


def test_a_worker_that_cannot_start_is_tried_a_bounded_number_of_times(
    serve_process, served_copy, tmp_path, monkeypatch
):
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(CRASH_ON_LOAD)
    flag = tmp_path / "crash"
    monkeypatch.setenv("MIREC_TEST_CRASH_FLAG", str(flag))
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(inject), os.environ.get("PYTHONPATH", "")])
    )
    server = serve_process(["--checkpoint", str(served_copy), "--workers", "2"], tmp_path)
    try:
        first, second = workers_of(server, 2)
        flag.touch()
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: "3 times in a row" in server.stderr.read_text(), 120, "giving up")
        time.sleep(2)  # no fourth start
        log = server.stderr.read_text()
        assert log.count("RuntimeError: injected crash while loading") == 3
        assert log.count("before its model was loaded; restarting it in") == 2
        assert children(server.process.pid) == [second]
        answer = health(server.url)
        assert answer.status_code == 503 and "degraded: 1 of 2" in answer.json()["detail"]
    finally:
        assert server.stop(signal.SIGTERM) == 0, server.stderr.read_text()
    assert not running(second)
