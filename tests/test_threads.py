"""PyTorch's thread count: --threads, else OMP_NUM_THREADS, else the usable cores; every
computing command sets it and metrics.json records it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mirec.core.threads import thread_count, usable_cores, usable_cpus
from mirec.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
TINY = "synthetic:n_users=150,n_items=70,n_clusters=4"


def test_the_option_then_omp_num_threads_then_the_usable_cores(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert thread_count(5) == 5
    assert thread_count() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "4,2")  # OpenMP's nested form: the outer level
    assert thread_count() == 4
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert thread_count() == usable_cores()
    assert 1 <= usable_cores() <= usable_cpus() == len(os.sched_getaffinity(0))


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_a_bad_omp_num_threads_is_a_config_error(monkeypatch, value):
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    with pytest.raises(ConfigError, match="OMP_NUM_THREADS"):
        thread_count()


def test_the_affinity_mask_limits_the_default():
    """A process allowed one CPU (taskset's share, a container's cpuset) computes with one
    thread, however many cores the machine has."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["PYTHONPATH"] = str(REPO / "src")
    code = (
        "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
        "from mirec.core.threads import use_threads; print(use_threads())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"


def test_metrics_json_records_the_threads_used(tmp_path):
    """A training run under OMP_NUM_THREADS=1 records 1; `mirec evaluate --threads 2`
    overrides the variable and records 2."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    env["MKL_NUM_THREADS"] = "1"
    out = tmp_path / "run"
    train = [sys.executable, "-m", "mirec", "train", "--dataset", TINY, "--model", "comirec-sa",
             "--output-dir", str(out), "--set", "max_epochs=1", "--set", "embedding_dim=8",
             "--quiet"]  # fmt: skip
    done = subprocess.run(train, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "metrics.json").read_text())["threads"] == 1
    evaluate = [sys.executable, "-m", "mirec", "evaluate", "--checkpoint", str(out),
                "--threads", "2", "--quiet"]  # fmt: skip
    done = subprocess.run(evaluate, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "evaluation" / "metrics.json").read_text())["threads"] == 2


def test_bad_thread_counts_are_one_line_errors(mirec_main, monkeypatch, tmp_path):
    args = ("train", "--dataset", TINY, "--output-dir", str(tmp_path / "run"), "--quiet")
    code, _, err = mirec_main(*args, "--threads", "0")
    assert code == 2
    assert err.startswith("mirec: error: ") and "--threads" in err and len(err.splitlines()) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "many")
    code, _, err = mirec_main(*args)
    assert code == 2
    assert err == "mirec: error: OMP_NUM_THREADS='many': must be a positive integer, or unset\n"
    assert not (tmp_path / "run").exists()
