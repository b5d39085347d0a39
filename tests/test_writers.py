"""Writers that cannot destroy or half-write: what `--overwrite` may replace, a full or
failing disk during train, export and index (a real small file system where the machine
allows one, and failures raised through the file-system calls and library writers), and
refusals that depend on the output folder made before anything trains (`--model auto`)."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mirec import MirecError, Recommender
from mirec.errors import WriteError
from mirec.retrieval.ann import index_paths
from mirec.run_folder import folder_lock

TINY = "synthetic:n_users=200,n_items=80,n_clusters=4"
SMALL = ["max_epochs=2", "embedding_dim=16", "batch_size=64"]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones included) by its SHA-256."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != ".lock"
    }


def one_line_error(err: str, *parts: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mirec: error: "), err
    assert "Traceback" not in err
    for part in parts:
        assert part in lines[0], lines[0]
    return lines[0]


def mirec(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "mirec", *args],
        capture_output=True, text=True, timeout=timeout, env=env,
    )  # fmt: skip


@pytest.fixture
def parent_of_run(ml100k_run: Path, tmp_path: Path) -> Path:
    """P/run (a copy of the ml-100k model folder) with a file beside it, P/notes.txt."""
    parent = tmp_path / "P"
    shutil.copytree(ml100k_run, parent / "run")
    (parent / "notes.txt").write_text("keep me")
    return parent


# -- what --overwrite may replace ------------------------------------------------------------


def test_export_overwrite_never_takes_the_model_folder_or_its_neighbours(
    parent_of_run, tmp_path, mirec_main, monkeypatch
):
    before = snapshot(parent_of_run)
    run = parent_of_run / "run"
    cases = {
        # the parent of the model folder: exit 0 and everything in P deleted, before
        parent_of_run: f"{parent_of_run}: holds the model folder {run}; export somewhere else",
        run: f"{run}: holds the model folder {run}",
        run / "sub": f"{run / 'sub'}: is inside the model folder {run}",
        tmp_path: f"{tmp_path}: holds the model folder {run}",
    }
    for out, message in cases.items():
        code, _, err = mirec_main("export", "--checkpoint", str(run), "--out", str(out),
                                  "--overwrite")  # fmt: skip
        assert code == 2
        one_line_error(err, message)
    # the current folder, and mirec's cache folder (its prepared datasets)
    monkeypatch.chdir(tmp_path / "P")
    code, _, err = mirec_main("export", "--checkpoint", str(run), "--out", ".", "--overwrite")
    assert code == 2 and "holds the model folder" in err
    cache = Path(os.environ["MIREC_CACHE_DIR"])
    code, _, err = mirec_main("export", "--checkpoint", str(run), "--out", str(cache / "x"),
                              "--overwrite")  # fmt: skip
    assert code == 2
    one_line_error(err, f"{cache / 'x'}: is inside mirec's cache folder {cache}")
    assert snapshot(parent_of_run) == before
    assert sorted(p.name for p in parent_of_run.iterdir()) == ["notes.txt", "run"]


def test_an_output_that_is_a_symbolic_link_is_refused_and_left(parent_of_run, tmp_path, mirec_main):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "theirs.txt").write_text("not an export")
    link = tmp_path / "link"
    link.symlink_to(target)
    run = parent_of_run / "run"
    code, _, err = mirec_main("export", "--checkpoint", str(run), "--out", str(link),
                                "--overwrite")  # fmt: skip
    assert code == 2
    one_line_error(err, f"{link}: is a symbolic link (to {target})")
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert [p.name for p in target.iterdir()] == ["theirs.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["P", "elsewhere", "link"]
    with pytest.raises(MirecError, match="is a symbolic link"):
        Recommender.load(run).save(link, overwrite=True)


def test_recommender_save_never_replaces_its_own_folder(parent_of_run):
    before = snapshot(parent_of_run)
    rec = Recommender.load(parent_of_run / "run")
    for target in (parent_of_run, parent_of_run / "run", parent_of_run / "run" / "copy"):
        with pytest.raises(MirecError, match="the model folder"):
            rec.save(target, overwrite=True)
    assert snapshot(parent_of_run) == before
    saved = rec.save(parent_of_run / "copy")  # beside it is fine
    assert Recommender.load(saved).recommend([50, 172], 5) == rec.recommend([50, 172], 5)


def test_compare_and_evaluate_never_write_over_a_runs_metrics(parent_of_run, mirec_main):
    run = parent_of_run / "run"
    before = snapshot(parent_of_run)
    for args in (
        ("compare", str(run), str(run), "--out", str(run), "--quiet"),
        ("evaluate", "--checkpoint", str(run), "--output-dir", str(run), "--quiet"),
        ("diagnose", "--checkpoint", str(run), "--output-dir", str(run), "--quiet"),
    ):
        code, _, err = mirec_main(*args)
        assert code == 2
        one_line_error(err, f"{run}: holds a model folder (model.safetensors); its "
                       "metrics.json would be replaced")  # fmt: skip
    code, _, err = mirec_main("evaluate", "--checkpoint", str(run), "--output-dir",
                              str(parent_of_run / "notes.txt"), "--quiet")  # fmt: skip
    assert code == 2
    one_line_error(err, "notes.txt: exists and is not a folder")
    assert snapshot(parent_of_run) == before


def test_train_refuses_the_data_folder_and_a_file(shared_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(shared_data / "ml-100k", data / "ml-100k")
    before = snapshot(data)
    for out, message in (
        (data / "ml-100k", f"{data / 'ml-100k'}: holds the data of ml-100k (u.data)"),
        (data, f"{data}: is the data folder"),
    ):
        result = mirec("train", "--dataset", "ml-100k", "--model", "most-popular", "--data-dir",
                       str(data), "--output-dir", str(out), "--overwrite", "--quiet")  # fmt: skip
        assert result.returncode == 2
        one_line_error(result.stderr, message)
    assert snapshot(data) == before and not (data / "ml-100k" / ".lock").exists()
    afile = tmp_path / "afile"
    afile.write_text("x")
    result = mirec("train", "--dataset", TINY, "--model", "most-popular", "--output-dir",
                   str(afile), "--quiet")  # fmt: skip
    assert result.returncode == 2
    one_line_error(result.stderr, f"{afile}: exists and is not a folder")


# -- a full or failing disk ----------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path):
    """A real 3 MiB tmpfs mounted at tmp_path/disk (root, Linux), unmounted afterwards."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root on Linux")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)],
                             capture_output=True, text=True)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"mount -t tmpfs was refused: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path, leave: int) -> None:
    """Fill ``disk`` so that about ``leave`` bytes stay free."""
    (disk / "filler").unlink(missing_ok=True)
    stat = os.statvfs(disk)
    free = stat.f_bavail * stat.f_frsize
    with open(disk / "filler", "wb") as f:
        f.write(b"\0" * max(0, free - leave))


def assert_no_leftovers(folder: Path) -> None:
    hidden = [p.name for p in folder.rglob(".*") if p.name != ".lock"]
    assert hidden == [], f"left behind: {hidden}"


def test_a_full_disk_during_train_leaves_the_previous_run(small_disk, shared_data, tmp_path):
    run = small_disk / "run"
    first = mirec("train", "--dataset", "ml-100k", "--model", "most-popular", "--data-dir",
                  str(shared_data), "--output-dir", str(run), "--quiet")  # fmt: skip
    assert first.returncode == 0, first.stderr
    before = snapshot(run)
    fill(small_disk, 20_000)
    again = mirec("train", "--dataset", "ml-100k", "--model", "most-popular", "--data-dir",
                  str(shared_data), "--output-dir", str(run), "--overwrite", "--quiet",
                  "--set", "seed=7")  # fmt: skip
    assert again.returncode == 2
    line = one_line_error(again.stderr, "cannot be written (No space left on device)",
                          "nothing was replaced")  # fmt: skip
    assert f"{run}/.staging/" in line  # names the file that could not be written
    assert snapshot(run) == before
    assert_no_leftovers(run)  # nothing to resume: the staging folder is gone
    (small_disk / "filler").unlink()
    assert Recommender.load(run).recommend([50], 3)


def test_a_full_disk_during_export_and_index_keeps_the_old_files(small_disk, ml100k_run):
    folder = small_disk / "sa"
    shutil.copytree(ml100k_run, folder, ignore=shutil.ignore_patterns("index-*", "evaluation"))
    Recommender.load(folder).build_index("flat")
    old_index = snapshot(folder)
    out = small_disk / "export"
    out.mkdir()
    (out / "export.json").write_text("the previous export")
    fill(small_disk, 150_000)
    export = mirec("export", "--checkpoint", str(folder), "--out", str(out), "--overwrite")
    assert export.returncode == 2
    one_line_error(export.stderr, f"{out}", "No space left on device", "nothing was replaced")
    assert [p.name for p in out.iterdir()] == ["export.json"]
    assert sorted(p.name for p in small_disk.iterdir()) == ["export", "filler", "sa"]
    fill(small_disk, 5_000)
    index = mirec("index", "--checkpoint", str(folder), "--kind", "hnsw")
    assert index.returncode == 2
    one_line_error(index.stderr, "index-hnsw.faiss: cannot be written (No space left on device)")
    again = mirec("index", "--checkpoint", str(folder), "--kind", "flat")
    assert again.returncode == 2 and "No space left on device" in again.stderr
    assert snapshot(folder) == old_index
    assert_no_leftovers(folder)
    assert Recommender.load(folder).recommend([50], 3, index="flat")


def test_a_failing_fsync_during_index_keeps_the_old_index(ml100k_run, tmp_path, monkeypatch):
    folder = tmp_path / "sa"
    shutil.copytree(ml100k_run, folder, ignore=shutil.ignore_patterns("index-*"))
    rec = Recommender.load(folder)
    rec.build_index("flat")
    before = snapshot(folder)

    def eio(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fsync", eio)
    with pytest.raises(WriteError) as refused:
        rec.build_index("flat")
    # the first file flushed fails: the description (written inside the index's write)
    faiss_file, description = index_paths(folder, "flat")
    assert str(refused.value).startswith(
        (f"{faiss_file}: cannot be written (Input/output error)",
         f"{description}: cannot be written (Input/output error)")
    )  # fmt: skip
    monkeypatch.undo()
    assert snapshot(folder) == before
    assert_no_leftovers(folder)


def test_a_library_writer_that_fills_the_disk_during_export(ml100k_run, tmp_path, monkeypatch,
                                                             mirec_main):  # fmt: skip
    import pyarrow.parquet as pq

    out = tmp_path / "export"
    out.mkdir()
    (out / "export.json").write_text("the previous export")

    def full(table, where, *args, **kwargs):
        raise OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] "
                      "No space left on device")  # fmt: skip

    monkeypatch.setattr(pq, "write_table", full)
    code, _, err = mirec_main("export", "--checkpoint", str(ml100k_run), "--out", str(out),
                              "--overwrite")  # fmt: skip
    assert code == 2
    one_line_error(err, f"{out}: cannot be written (", "No space left on device")
    assert [p.name for p in out.iterdir()] == ["export.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_a_full_disk_at_an_epoch_checkpoint_keeps_it_for_resume(tmp_path, monkeypatch,
                                                                 mirec_main):  # fmt: skip
    from safetensors import SafetensorError

    from mirec.training import checkpoint

    real, saves = checkpoint.save_file, []

    def second_fails(*args, **kwargs):
        saves.append(1)
        if len(saves) == 2:  # safetensors' own error type, quoting the system's words
            raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: "
                                  'StorageFull, message: "No space left on device" })')  # fmt: skip
        return real(*args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_file", second_fails)
    out = tmp_path / "run"
    args = ["train", "--dataset", TINY, "--model", "comirec-sa", "--output-dir", str(out),
            "--quiet", *[a for s in SMALL for a in ("--set", s)]]  # fmt: skip
    code, _, err = mirec_main(*args)
    assert code == 2
    one_line_error(err, "checkpoint.safetensors: cannot be written (No space left on device)",
                   "--resume continues it")  # fmt: skip
    assert (out / ".staging" / "checkpoint.safetensors").is_file()  # epoch 1's, whole
    assert not (out / "metrics.json").exists()
    monkeypatch.setattr(checkpoint, "save_file", real)
    code, _, err = mirec_main(*args, "--resume")
    assert code == 0, err
    assert (out / "metrics.json").is_file() and not (out / ".staging").exists()


# -- refusals before work: --model auto ----------------------------------------------------


def auto_args(out: Path, *extra: str) -> list[str]:
    return ["train", "--dataset", TINY, "--output-dir", str(out), "--quiet", *extra,
            *[a for s in SMALL for a in ("--set", s)]]  # fmt: skip


def test_auto_resume_into_another_models_run_refuses_before_training(tmp_path, mirec_main):
    out = tmp_path / "run"
    code, _, err = mirec_main("train", "--dataset", TINY, "--model", "most-popular",
                              "--output-dir", str(out), "--quiet")  # fmt: skip
    assert code == 0, err
    before = snapshot(out)
    code, _, err = mirec_main(*auto_args(out, "--resume"))
    assert code == 2
    one_line_error(
        err,
        f"{out}: holds the finished run of most-popular, with settings of "
        "none of the candidates of auto (sasrec, comirec-sa-transformer, remi-plain)",
    )
    assert not (out / "candidates").exists()  # nothing trained
    assert snapshot(out) == before


def test_auto_resume_with_a_candidate_of_other_settings_refuses_before_training(
    tmp_path, mirec_main
):
    out = tmp_path / "run"
    sasrec = out / "candidates" / "sasrec"
    code, _, err = mirec_main("train", "--dataset", TINY, "--model", "sasrec", "--output-dir",
                              str(sasrec), "--quiet", *[a for s in SMALL for a in ("--set", s)],
                              "--set", "seed=9")  # fmt: skip
    assert code == 0, err
    code, _, err = mirec_main(*auto_args(out, "--resume"))
    assert code == 2
    one_line_error(err, f"{sasrec}: its finished run has seed=9, this one 42")
    assert sorted(p.name for p in (out / "candidates").iterdir()) == ["sasrec"]


def test_auto_with_a_candidate_folder_in_use_refuses_before_training(tmp_path, mirec_main):
    out = tmp_path / "run"
    busy = out / "candidates" / "remi-plain"
    with folder_lock(busy):  # another run writes the last candidate's folder
        code, _, err = mirec_main(*auto_args(out))
    assert code == 2
    one_line_error(err, f"{busy}: another mirec run is writing to this folder")
    assert sorted(p.name for p in (out / "candidates").iterdir()) == ["remi-plain"]


def test_an_experiment_whose_report_cannot_be_written_refuses_before_any_cell(tmp_path, mirec_main):
    (tmp_path / "report.md").mkdir()  # a folder where the report goes
    (tmp_path / "runs-file").write_text("x")
    for report, runs, message in (
        ("report.md", "runs", f"report {tmp_path / 'report.md'}: is a folder; name a file"),
        ("out.md", "runs-file/cells", f"runs_dir {tmp_path / 'runs-file/cells'}: "
         f"{tmp_path / 'runs-file'} is a file, not a folder"),
    ):  # fmt: skip
        grid = tmp_path / "grid.yaml"
        grid.write_text(
            f"name: t\nreport: {tmp_path / report}\nruns_dir: {tmp_path / runs}\n"
            f"datasets: ['{TINY}']\nmodels: [most-popular]\n"
        )
        code, printed, err = mirec_main("experiment", str(grid), "--quiet")
        assert code == 2 and printed == ""
        one_line_error(err, f"{grid}: {message}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.yaml", "report.md", "runs-file"]
