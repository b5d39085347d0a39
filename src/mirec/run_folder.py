"""One owner per run folder, and a folder whose files always come from one run.

A training run's output folder ``DIR`` holds:

* ``DIR/.lock``: the run writing ``DIR`` holds an exclusive lock on it for as long as it
  runs (``flock`` on Unix, ``LockFileEx`` on Windows, through filelock); the operating
  system drops the lock when the process ends, however it ends (``kill -9`` included), so a
  lock is never stale. A second run into ``DIR`` is refused.
* ``DIR/.staging/``: the run in progress writes here only: its config, data tables, epoch
  checkpoint (:mod:`mirec.training.checkpoint`), and at the end its weights and
  ``metrics.json``.
* ``DIR/*``: the last finished run (``config.yaml``, ``model.safetensors``, ...,
  ``metrics.json``), untouched until a new run has finished.

A finished run is moved in by :meth:`RunFolder.commit`: the old run's files go first,
``metrics.json`` before the others (a folder without it is never taken for a finished run),
then the new files, ``metrics.json`` last. A kill during the commit leaves some files of
the new run and ``.staging/`` holding the rest, which ``--resume`` completes; files of two
runs are never side by side (a run killed before its first checkpoint used to leave its
``config.yaml`` beside the previous run's weights, which were then evaluated under it).

On NFS, Linux maps ``flock`` to NFS locks, which other machines see. A system with neither
native lock gets filelock's soft lock, a marker file that a killed run leaves behind.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import filelock

from mirec.atomic import fsync_folder
from mirec.core.config import INFERENCE_SETTINGS, Config, changed_setting, config_from_dict
from mirec.core.layout import LOCK_FILE, OPTIMIZER_FILE, SOFT_LOCK_FILE
from mirec.data.examples import training_item_counts
from mirec.data.prepare import PreparedData
from mirec.errors import MirecError
from mirec.models.folder import (
    CONFIG_FILE,
    EVALUATION_DIR,
    FOLDER_FILES,
    METRICS_FILE,
    read_config,
    read_metrics,
    write_folder_data,
)
from mirec.results import RunResult, read_result, write_result

STAGING_DIR = ".staging"
RUN_FILES = (*FOLDER_FILES, METRICS_FILE)
"""The files of a run in its folder (``metrics.json`` last: it says the run finished)."""
OPTIONAL_FILES = (OPTIMIZER_FILE,)
"""The files of a run that only some settings write (``keep_optimizer_state``)."""


class FolderInUse(MirecError):
    """Another process holds the run folder's lock."""


@contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Hold ``folder``'s run lock for the block; :class:`FolderInUse` at once when another
    process holds it (never a wait: two runs into one folder is a mistake to report)."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            held = filelock.lock_descriptor(fd, blocking=False)
        except OSError as err:
            if err.errno != errno.ENOSYS:
                raise
            os.close(fd)
            fd = -1
            with _soft_lock(folder):
                yield
            return
        if not held:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            raise FolderInUse(
                f"{folder}: another mirec run is writing to this folder"
                + (f" (process {holder})" if holder.isdigit() else "")
                + "; wait for it to end, or choose another output folder"
            )
        # who holds it, for the message above (the lock itself is what counts)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        if fd >= 0:
            os.close(fd)  # releases the lock


@contextmanager
def _soft_lock(folder: Path) -> Iterator[None]:
    """Where the system has no native file lock (a Unix without ``flock``): a marker file
    that exists while a run writes. Unlike the native lock, a killed run leaves it behind,
    so the refusal says how to clear it."""
    marker = folder / SOFT_LOCK_FILE
    lock = filelock.SoftFileLock(str(marker), timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise FolderInUse(
            f"{folder}: another mirec run is writing to this folder (this system has no "
            f"native file lock: if no run is, remove {marker})"
        ) from None
    try:
        yield
    finally:
        lock.release()


@dataclass(frozen=True)
class RunFolder:
    """A run folder this process holds the lock of (see :func:`claim`)."""

    path: Path
    resuming: bool
    """True when ``staging`` holds this run's earlier start to continue."""

    @property
    def staging(self) -> Path:
        return self.path / STAGING_DIR

    def write_inputs(self, config: Config, data: PreparedData) -> None:
        """The run's settings and what loading the model needs of its data (``config.yaml``,
        ``model.json``, ``items.parquet``, ``users.parquet``), written before it trains."""
        counts = training_item_counts(data.sequences, data.split.train)
        write_folder_data(self.staging, config, data.sequences, counts, data.maxlen)

    def finish(self, result: RunResult) -> RunResult:
        """Write the run's ``metrics.json`` into staging, then move the run in
        (:meth:`commit`); returns ``result``."""
        write_result(self.staging / METRICS_FILE, result)
        self.commit()
        return result

    def commit(self) -> None:
        """Move the finished run in ``staging`` (its ``metrics.json`` written last) into
        the folder, replacing the previous run's files (module docstring). Completes a
        commit that was killed: the files already moved are the new run's, and stay."""
        names = (*FOLDER_FILES, *OPTIONAL_FILES, METRICS_FILE)
        to_move = [name for name in names if (self.staging / name).is_file()]
        old_files = list(to_move)
        if (self.path / METRICS_FILE).is_file():
            # the previous run is whole while its metrics.json is there: a file that only it
            # wrote goes too (an optimizer state belongs to the old weights)
            old_files.extend(OPTIONAL_FILES)
        # every old file goes before any new one arrives, metrics.json first
        for name in sorted(set(old_files), key=lambda name: name != METRICS_FILE):
            (self.path / name).unlink(missing_ok=True)
        # re-evaluations of the old weights (`mirec evaluate`'s, a grid's evaluation-KEY=VALUE
        # cells) would describe another model
        for old in self.path.iterdir():
            if old.is_dir() and old.name.split("-", 1)[0] == EVALUATION_DIR:
                shutil.rmtree(old, ignore_errors=True)
        fsync_folder(self.path)
        for name in to_move:
            os.replace(self.staging / name, self.path / name)
        fsync_folder(self.path)
        shutil.rmtree(self.staging)


def check_output_folder(folder: Path, config: Config, data_dir: Path | None) -> None:
    """A MirecError, before anything is written, when ``folder`` cannot hold a run of
    ``config``: it is a file, or it is the data folder or the folder of the dataset's own
    files (a run's ``config.yaml``, ``items.parquet`` ... would sit among them, and a
    file of the log that bears one of those names would be replaced)."""
    from mirec.core.paths import default_data_dir
    from mirec.data import locate
    from mirec.data.catalogue import DATASETS

    if folder.exists() and not folder.is_dir():
        raise MirecError(f"{folder}: exists and is not a folder; choose a folder for the run")
    where = folder.resolve()
    base = (data_dir or default_data_dir()).resolve()
    if where == base:
        raise MirecError(f"{folder}: is the data folder; choose another output folder")
    if config.init_from is not None:
        start = Path(config.init_from).resolve()
        if where == start or start in where.parents or where in start.parents:
            raise MirecError(
                f"{folder}: holds, or is inside, the folder --init-from reads "
                f"({config.init_from}), which fine-tuning leaves as it is: choose another "
                "output folder"
            )
    try:
        sources = locate.source_files(config.dataset, data_dir=data_dir, format=config.format)
    except MirecError:
        sources = []  # the run reports it where it reads the data, as before
    for source in sources:
        if where in (source.resolve(), source.resolve().parent):
            raise MirecError(
                f"{folder}: holds the data of {config.dataset} ({source.name}); a run's files "
                "go in a folder of their own: choose another output folder"
            )
    # any named dataset's folder (through a symbolic link too), not only this run's
    for spec in DATASETS.values():
        if spec.files and where.is_relative_to(base / spec.folder):
            raise MirecError(
                f"{folder}: lies in the folder of dataset {spec.name} ({base / spec.folder}); "
                "a run's files go in a folder of their own: choose another output folder"
            )


def check_claim(folder: Path, config: Config, *, resume: bool, overwrite: bool) -> None:
    """What :func:`claim` would refuse, refused now, without changing ``folder``: for a
    command that trains several runs (``--model auto``) to refuse before the first trains.
    The folder's lock is tried too: held by another process, :class:`FolderInUse`."""
    if not folder.is_dir():
        return
    with folder_lock(folder):
        _decide(folder, config, resume=resume, overwrite=overwrite)


def planned_claim(folder: Path, config: Config, *, resume: bool, overwrite: bool) -> str | None:
    """What :func:`claim` will do with ``folder``, decided now without changing it: for
    tracking to know, before the run starts, whether it continues an unfinished run
    ("continue", or "commit" for a commit cut short), returns a finished one ("finished")
    or starts anew ("new"). None when the claim would be refused, ``folder`` cannot hold
    a run, or another process holds its lock (the run itself reports why)."""
    if not folder.is_dir():
        return None if folder.exists() else "new"
    try:
        if not (folder / STAGING_DIR).is_dir():
            # nothing to continue (the run's own claim, under the lock, settles the
            # rest): no lock, so no lock file in a folder the run may yet refuse (the
            # data folder, say)
            return _decide(folder, config, resume=resume, overwrite=overwrite)
        with folder_lock(folder):  # a run may be writing it: then it is not ours
            return _decide(folder, config, resume=resume, overwrite=overwrite)
    except MirecError:  # FolderInUse among them
        return None


def _decide(folder: Path, config: Config, *, resume: bool, overwrite: bool) -> str:
    """:func:`claim`'s decision, its refusals raised: "continue" (the unfinished run),
    "commit" (finish a commit cut short, then return the run), "finished" (return the
    finished run) or "new"."""
    staging = folder / STAGING_DIR
    staged = _staged_config(staging)
    if resume and staged is not None:
        differs = _differing(config, staged, folder, "unfinished", INFERENCE_SETTINGS)
        if differs is None:
            return "commit" if (staging / METRICS_FILE).is_file() else "continue"
        if not overwrite:
            raise MirecError(f"{differs}; resume with the same settings, or --overwrite")
    elif resume and (folder / METRICS_FILE).is_file():
        # a finished run is returned only when it is exactly this run: its figures
        # depend on the inference-time settings too (the device aside)
        differs = _differing(config, read_config(folder), folder, "finished", ("device",))
        if differs is None:
            return "finished"
        if not overwrite:
            raise MirecError(
                f"{differs}; this run finished: `mirec evaluate --set` scores it with other "
                "inference-time settings, --overwrite trains it again"
            )
    elif not overwrite:
        if staged is not None:
            raise MirecError(
                f"{folder}: holds an unfinished run; --resume continues it, --overwrite "
                "starts again"
            )
        held = [name for name in RUN_FILES if (folder / name).exists()]
        if held:
            what = "a finished run" if METRICS_FILE in held else f"a model ({held[0]}, ...)"
            raise MirecError(
                f"{folder}: holds {what}; --overwrite replaces it, or choose another output folder"
            )
    return "new"


def claim(folder: Path, config: Config, *, resume: bool, overwrite: bool) -> RunFolder | RunResult:
    """Decide what a run of ``config`` does with ``folder``, whose lock the caller holds:
    a :class:`RunFolder` to train into, or the record of a finished run to return as is.

    * an empty folder (or one without a run): a new run;
    * a finished run (``metrics.json``): refused, unless ``overwrite`` (a new run replaces
      it at its end) or ``resume`` with the same settings (nothing to do: its metrics);
    * an unfinished run (``.staging/``): refused, unless ``resume`` with the same settings
      but inference-time ones (it continues from its last epoch checkpoint) or
      ``overwrite`` (it starts again).

    With both ``resume`` and ``overwrite`` (an experiment grid's cells), a run with other
    settings is replaced instead of refused.
    """
    decision = _decide(folder, config, resume=resume, overwrite=overwrite)
    if decision == "continue":
        return RunFolder(folder, resuming=True)
    if decision == "commit":  # killed while committing
        RunFolder(folder, resuming=True).commit()
        return _finished(folder)
    if decision == "finished":
        return _finished(folder)
    staging = folder / STAGING_DIR
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    return RunFolder(folder, resuming=False)


def _staged_config(staging: Path) -> Config | None:
    """The settings of the unfinished run in ``staging``: its ``config.yaml``, or once
    that has moved into the folder in a commit cut short, the record in its
    ``metrics.json`` (moved last); None when ``staging`` holds no run."""
    if (staging / CONFIG_FILE).is_file():
        return read_config(staging)
    metrics = read_metrics(staging)
    if metrics is None:
        return None
    return config_from_dict(metrics.get("config") or {}, source=str(staging / METRICS_FILE))


def _differing(
    config: Config, recorded: Config, folder: Path, what: str, ignore: tuple[str, ...]
) -> str | None:
    """None when ``recorded`` (the settings of ``folder``'s ``what`` run) is ``config``
    outside ``ignore``, else a message naming the first setting that differs and both
    values."""
    name = changed_setting(config, recorded.to_dict(), ignore)
    if name is None:
        return None
    return (
        f"{folder}: its {what} run has {name}={getattr(recorded, name)!r}, this one "
        f"{getattr(config, name)!r}"
    )


def _finished(folder: Path) -> RunResult:
    metrics = read_metrics(folder)
    assert metrics is not None
    return read_result(metrics, str(folder / METRICS_FILE))
