"""Nothing lost: a run killed with ``kill -9`` at any point resumes (``mirec train --resume``)
to exactly the files of a run never interrupted; one run owns its folder at a time, and a
folder never holds files of two runs; output files follow the umask.

Training is deterministic for a given thread count, so every run here has one thread
(``OMP_NUM_THREADS=1``) and the comparisons are byte for byte.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from mirec import Recommender, train
from mirec.config import load_config
from mirec.errors import ConfigError, MirecError
from mirec.models.folder import FOLDER_FILES, METRICS_FILE, read_config
from mirec.run_folder import RUN_FILES, STAGING_DIR, claim, folder_lock
from mirec.runs import evaluate_folder, train_run

REPO = Path(__file__).resolve().parents[1]
# MIND: its routing draws from torch's global generator, its sampled negatives and the
# example order from the run's own; small sizes keep an epoch near a second on one thread
RETRIEVAL = ("--dataset", "ml-100k", "--model", "mind", "--set", "max_epochs=3",
             "--set", "embedding_dim=8", "--set", "maxlen=10", "--set", "batch_size=1024",
             "--set", "num_negatives=64", "--set", "negative_sampling=popularity")  # fmt: skip
# a CTR run draws its negatives from a numpy generator as well
CTR = ("--task", "ctr", "--dataset", "taobao-sample", "--model", "din", "--set", "max_epochs=3",
       "--set", "patience=10", "--set", "embedding_dim=16")  # fmt: skip
TIMINGS = ("train_seconds", "train_examples_per_second", "eval_users_per_second")
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


def command(out: Path, data: Path, run: tuple[str, ...], *extra: str) -> list[str]:
    return [sys.executable, "-m", "mirec", "train", *run, "--data-dir", str(data),
            "--output-dir", str(out), *extra]  # fmt: skip


def mirec(out: Path, data: Path, run: tuple[str, ...], *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        command(out, data, run, *extra), capture_output=True, text=True, env=ENV, timeout=300
    )


def start(out: Path, data: Path, run: tuple[str, ...], *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        command(out, data, run, "--quiet", *extra),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )


def kill_when(proc: subprocess.Popen, path: Path, delay: float = 0.0) -> None:
    """``kill -9`` the run ``delay`` seconds after ``path`` appears; the run must still be
    going then (the test is about an interrupted run)."""
    deadline = time.monotonic() + 240
    while not path.exists():
        assert proc.poll() is None, f"the run ended before {path} appeared: {proc.stderr.read()}"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL, f"the run ended before the kill ({delay} s)"


def folder_bytes(folder: Path) -> dict[str, bytes]:
    """A run folder's files, metrics.json without its timings."""
    files = {name: (folder / name).read_bytes() for name in FOLDER_FILES}
    metrics = json.loads((folder / METRICS_FILE).read_text())
    files[METRICS_FILE] = json.dumps({k: v for k, v in metrics.items() if k not in TIMINGS})
    return files


def assert_same_run(expected: Path, got: Path) -> None:
    want, have = folder_bytes(expected), folder_bytes(got)
    for name in want:
        assert have[name] == want[name], f"{name} differs from the uninterrupted run's"
    assert not (got / STAGING_DIR).exists()


def test_a_run_killed_anywhere_resumes_to_the_uninterrupted_files(shared_data, tmp_path):
    # the uninterrupted run, beside the interrupted one (on the second core)
    reference = start(tmp_path / "reference", shared_data, RETRIEVAL)
    out = tmp_path / "run"
    # the folder holds an older run with other settings: --overwrite replaces it at its end
    train_run(load_config("most-popular", dataset="ml-100k"), out, data_dir=shared_data,
              progress=False)  # fmt: skip
    old = {name: (out / name).read_bytes() for name in RUN_FILES}

    # killed before its first epoch checkpoint, while it writes its staging folder
    proc = start(out, shared_data, RETRIEVAL, "--overwrite")
    kill_when(proc, out / STAGING_DIR / "model.json")
    assert not (out / STAGING_DIR / "checkpoint.safetensors").exists()
    assert {name: (out / name).read_bytes() for name in RUN_FILES} == old
    assert Recommender.load(out).info.name == "most-popular"  # whole, and the older run's
    config = read_config(out / STAGING_DIR)
    with pytest.raises(MirecError, match=f"{out}: holds an unfinished run; --resume continues"):
        train_run(config, out)

    # resumed (from the start: it had no checkpoint), then killed at a random point of its
    # second epoch: an epoch is near a second, and a later kill could land after the run's
    # final swap (the folder then holds the finished run, which is not what this tests)
    delay = random.uniform(0.0, 0.5)
    proc = start(out, shared_data, RETRIEVAL, "--resume")
    kill_when(proc, out / STAGING_DIR / "checkpoint.safetensors", delay)
    assert {name: (out / name).read_bytes() for name in RUN_FILES} == old

    # other settings cannot resume it: the setting and both values are named
    longer = replace(config, max_epochs=4)
    with pytest.raises(MirecError, match=f"{out}: its unfinished run has max_epochs=3, this one 4"):
        train_run(longer, out, resume=True)

    resumed = mirec(out, shared_data, RETRIEVAL, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    after = re.search(r"resuming after epoch (\d+)", resumed.stdout)
    assert after is not None and int(after[1]) >= 1, (delay, resumed.stdout)
    trained = [int(n) for n in re.findall(r"^epoch (\d+):", resumed.stdout, re.MULTILINE)]
    assert trained == list(range(int(after[1]) + 1, 4)), (delay, resumed.stdout)
    assert reference.wait(timeout=300) == 0, reference.stderr.read()
    assert_same_run(tmp_path / "reference", out)

    # a finished run: --resume has nothing to do and changes nothing
    before = folder_bytes(out)
    resumed = train_run(config, out, resume=True)
    assert resumed.to_dict() == json.loads((out / METRICS_FILE).read_text())
    assert folder_bytes(out) == before


def test_a_killed_ctr_run_resumes_to_the_uninterrupted_files(shared_data, tmp_path):
    reference = start(tmp_path / "reference", shared_data, CTR)
    out = tmp_path / "run"
    proc = start(out, shared_data, CTR)
    kill_when(proc, out / STAGING_DIR / "checkpoint.safetensors", random.uniform(0.0, 0.5))
    resumed = mirec(out, shared_data, CTR, "--resume", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert reference.wait(timeout=300) == 0, reference.stderr.read()
    assert_same_run(tmp_path / "reference", out)


def test_a_killed_run_with_a_sparse_item_table_resumes_to_the_uninterrupted_files(
    shared_data, tmp_path
):
    # the row-wise Adam's moments and step count go through the checkpoint too
    run = (*RETRIEVAL, "--set", "sparse_items=true")
    reference = start(tmp_path / "reference", shared_data, run)
    out = tmp_path / "run"
    proc = start(out, shared_data, run)
    kill_when(proc, out / STAGING_DIR / "checkpoint.safetensors", random.uniform(0.0, 0.5))
    resumed = mirec(out, shared_data, run, "--resume", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert reference.wait(timeout=300) == 0, reference.stderr.read()
    assert_same_run(tmp_path / "reference", out)
    assert json.loads((out / METRICS_FILE).read_text())["sparse_items"] is True


def test_two_runs_into_one_folder_at_once(shared_data, tmp_path):
    out = tmp_path / "run"
    seeds = (1, 2)
    quick = ("--dataset", "ml-100k", "--model", "youtube-dnn", "--set", "max_epochs=2")
    procs = [start(out, shared_data, quick, "--set", f"seed={seed}") for seed in seeds]
    codes = [proc.wait(timeout=300) for proc in procs]
    assert sorted(codes) == [0, 2], codes
    loser = procs[codes.index(2)].stderr.read()
    assert loser.startswith(f"mirec: error: {out}: another mirec run is writing"), loser
    assert len(loser.strip().splitlines()) == 1
    winner = seeds[codes.index(0)]
    # every file is the winner's: loading checks config, model.json and metrics.json agree
    rec = Recommender.load(out)
    assert rec.info.config.seed == winner and rec.info.metrics.header.seed == winner
    assert read_config(out).seed == winner
    assert sorted(p.name for p in out.iterdir()) == sorted([*RUN_FILES, ".lock"])


def test_a_held_folder_is_refused_at_once(tmp_path):
    out = tmp_path / "run"
    config = load_config("most-popular", dataset="synthetic:n_users=150,n_items=70")
    with folder_lock(out):
        start_time = time.monotonic()
        with pytest.raises(MirecError, match=f"{out}: another mirec run is writing .*process"):
            train_run(config, out, progress=False)
        assert time.monotonic() - start_time < 5
    train_run(config, out, progress=False)  # released: the folder is free again
    with pytest.raises(MirecError, match="holds a finished run; --overwrite replaces it"):
        train_run(config, out, progress=False)
    train_run(config, out, progress=False, overwrite=True)
    # the Python API: a finished run with the same settings is loaded as it is
    rec = train(
        model="most-popular", dataset=config.dataset, output_dir=out, resume=True, progress=False
    )
    assert rec.info.metrics.to_dict() == json.loads((out / METRICS_FILE).read_text())


def test_a_commit_cut_short_mixes_nothing_and_resume_completes_it(tmp_path):
    """A run killed while moving its files in: the folder holds some of the new run's files
    and none of the old run's; loading it fails naming a missing file; --resume finishes."""
    old, new = (
        load_config("most-popular", dataset="synthetic:n_users=150,n_items=70", split_seed=seed)
        for seed in (1, 2)
    )
    out, finished = tmp_path / "run", tmp_path / "finished"
    train_run(old, out, progress=False)
    train_run(new, finished, progress=False)
    staging = out / STAGING_DIR
    shutil.copytree(finished, staging, ignore=shutil.ignore_patterns(".*"))
    # the state a kill leaves after the old files went and the first new ones moved in
    for name in RUN_FILES:
        (out / name).unlink()
    for name in ("config.yaml", "model.safetensors"):
        (staging / name).rename(out / name)
    with pytest.raises(ConfigError, match=r"no model\.json"):
        Recommender.load(out)
    with pytest.raises(MirecError, match="holds an unfinished run"):
        claim(out, new, resume=False, overwrite=False)
    with pytest.raises(MirecError, match="its unfinished run has split_seed=2, this one 1"):
        claim(out, old, resume=True, overwrite=False)
    metrics = train_run(new, out, resume=True)
    assert metrics.to_dict() == json.loads((finished / METRICS_FILE).read_text())
    for name in RUN_FILES:
        assert (out / name).read_bytes() == (finished / name).read_bytes(), name
    assert not staging.exists()


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_output_files_follow_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        out = tmp_path / "run"
        config = load_config(
            "youtube-dnn", dataset="synthetic:n_users=150,n_items=70", max_epochs=2
        )
        train_run(config, out, progress=False)
        evaluate_folder(out, progress=False)
        Recommender.load(out).save(tmp_path / "saved")
    finally:
        os.umask(previous)
    paths = [p for root in (out, tmp_path / "saved") for p in [root, *root.rglob("*")]]
    assert len(paths) > 10
    for path in paths:
        expected = (0o777 if path.is_dir() else 0o666) & ~umask
        assert stat.S_IMODE(path.stat().st_mode) == expected, (path, oct(path.stat().st_mode))


def test_an_epoch_hook_sees_every_epoch_and_can_stop_the_run(tmp_path):
    """The hook that tracking and a search's pruning use: each finished epoch's record,
    validated or not, and True ends training there, recorded as stopped by the hook."""
    config = replace(
        load_config("mind", dataset="synthetic:n_users=300,n_items=200,seed=3"),
        max_epochs=5, embedding_dim=8, maxlen=10, valid_every=1, patience=10,
    )  # fmt: skip
    seen: list[dict[str, float]] = []

    def hook(record: dict[str, float]) -> bool:
        seen.append(record)
        return record["epoch"] == 2

    result = train_run(config, tmp_path / "run", progress=False, on_epoch=hook)
    assert [r["epoch"] for r in seen] == [1, 2]
    assert all({"loss", "seconds", "examples_per_second", "recall@50"} <= set(r) for r in seen)
    assert result.fit.epochs == 2 and result.fit.stopped_by == "hook"
    assert seen[-1]["loss"] == result.history[-1]["loss"]
