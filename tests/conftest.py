"""Shared fixtures: the real datasets in ../shared/data, a private preprocessing cache, a
trained ml-100k model folder and a real `mirec serve` of it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

DATA_VAR, REQUIRE_VAR = "MIREC_TEST_DATA", "MIREC_REQUIRE_DATA"
"""The folder of real datasets the tests read (default: ../shared/data beside the checkout,
where the developers and CI have it), and the variable (set by .ci/run) that makes a
missing dataset a failure instead of a skip."""
TEST_DATASETS = (
    "ml-100k", "ml-1m", "ml-latest-small", "amazon-beauty", "amazon-toys", "lastfm",
    "taobao-sample",
)  # fmt: skip
"""The catalogue's datasets that some test reads."""


def data_folder() -> Path:
    """$MIREC_TEST_DATA, else ../shared/data beside the checkout."""
    env = os.environ.get(DATA_VAR)
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


def missing_datasets(folder: Path) -> list[str]:
    """The test datasets that ``folder`` lacks (all of them when it cannot be read)."""
    from mirec.data import locate
    from mirec.errors import MirecError

    try:
        present = {spec.name for spec, here in locate.status(folder) if here}
    except (MirecError, OSError):
        present = set()
    return [name for name in TEST_DATASETS if name not in present]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real datasets. Where it lacks one the suite reads, every test that
    reads real data is skipped, for one reason (pytest's -ra summary folds them into one
    line), or fails under $MIREC_REQUIRE_DATA (CI)."""
    folder = data_folder()
    missing = missing_datasets(folder)
    if missing:
        message = (
            f"{DATA_SKIP}{folder}: {', '.join(missing)}; set {DATA_VAR} to a "
            "folder that holds them (`mirec datasets --data-dir FOLDER` lists what it has, "
            "`mirec download NAME --data-dir FOLDER` fetches the public ones)"
        )
        if os.environ.get(REQUIRE_VAR):
            pytest.fail(f"{message}; {REQUIRE_VAR} is set, so this is a failure", pytrace=False)
        pytest.skip(message)
    return folder


DATA_SKIP = "real datasets missing from "


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """Every skip for missing data reported at one place, so -ra's summary folds them into
    one line (pytest folds skips of one location and reason)."""
    outcome = yield
    report = outcome.get_result()
    longrepr = report.longrepr
    if report.skipped and isinstance(longrepr, tuple) and DATA_SKIP in str(longrepr[2]):
        report.longrepr = (__file__, 0, longrepr[2])


@pytest.fixture(autouse=True, scope="session")
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Preprocessed datasets go to a temp folder, not the user's ~/.cache."""
    path = tmp_path_factory.mktemp("mirec-cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("MIREC_CACHE_DIR", str(path))
    yield path
    mp.undo()


@pytest.fixture(scope="session")
def ml100k_run(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ComiRec-SA trained 2 epochs on ml-100k: a model folder for inspect and Recommender."""
    from typer.testing import CliRunner

    from mirec.cli.main import app

    out = tmp_path_factory.mktemp("ml100k") / "sa"
    args = ["train", "--dataset", "ml-100k", "--model", "comirec-sa", "--output-dir", str(out),
            "--data-dir", str(shared_data), "--set", "max_epochs=2", "--quiet"]  # fmt: skip
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="session")
def ml100k_server(ml100k_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `mirec serve` of ml100k_run (one worker) on a free port of 127.0.0.1: its base
    URL. At the end it is stopped with SIGINT, and must stop cleanly."""
    args = ["--checkpoint", str(ml100k_run), "--workers", "1"]
    server = start_server(args, tmp_path_factory.mktemp("serve"))
    try:
        yield server.url
    finally:
        code = server.stop(signal.SIGINT)
    assert code == 0, server.stderr.read_text()
    assert "stopped (SIGINT)" in server.stdout.read_text()


@pytest.fixture(scope="session")
def serve_process() -> Callable[[list[str], Path], Server]:
    """Starts `mirec serve ARGS --host 127.0.0.1 --port 0` (logs in a folder) once its
    /health answers; the test stops it."""
    return start_server


@dataclass
class Server:
    """A `mirec serve` subprocess, its base URL and the files its output goes to."""

    process: subprocess.Popen
    url: str
    stdout: Path
    stderr: Path

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        """Send ``sig`` and wait: the exit code (it fails the test after ``timeout``)."""
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"mirec serve did not stop within {timeout:.0f} s of {sig!r}")


def start_server(args: list[str], logs: Path, timeout: float = 120.0) -> Server:
    """`mirec serve ARGS` on a free port of 127.0.0.1, once its /health answers; fails with
    the server's stderr if it exits or does not answer in time."""
    import httpx

    stdout, stderr = logs / "stdout.txt", logs / "stderr.txt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # imports, loading
    command = [sys.executable, "-m", "mirec", "serve", *args, "--host", "127.0.0.1", "--port", "0"]
    with open(stdout, "w") as out, open(stderr, "w") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, env=env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"mirec serve exited with {process.returncode}:\n{stderr.read_text()}")
        found = re.search(r"http://127\.0\.0\.1:\d+", stdout.read_text())
        if found:
            try:
                if httpx.get(f"{found.group(0)}/health", timeout=5).status_code == 200:
                    return Server(process, found.group(0), stdout, stderr)
            except httpx.TransportError:
                pass
        time.sleep(0.2)
    process.kill()
    process.wait()
    pytest.fail(f"mirec serve did not answer /health in {timeout:.0f} s:\n{stderr.read_text()}")


@pytest.fixture
def mirec_main(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, str, str]]:
    """Runs `mirec ARGS` through the console entry point in this process (faster than a
    subprocess): the exit code, stdout and stderr."""
    from mirec.cli.main import main

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["mirec", *args])
        with pytest.raises(SystemExit) as stopped:
            main()
        captured = capsys.readouterr()
        return stopped.value.code, captured.out, captured.err

    return run


def string_id_log(path: Path) -> Path:
    """A sequences file with text ids: 150 users ``user-0`` to ``user-149`` (the widest: 8
    characters) of 12 items each among ``sku-0`` to ``sku-79`` (6 characters)."""
    import numpy as np

    rng = np.random.default_rng(0)
    lines = [
        f"user-{u} " + " ".join(f"sku-{i}" for i in rng.choice(80, 12, replace=False))
        for u in range(150)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def user_error(result, *fragments: str) -> str:
    """Exit 2, one stderr line ``mirec: error: ...`` holding every fragment, no traceback."""
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert result.returncode == 2, output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mirec: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]
