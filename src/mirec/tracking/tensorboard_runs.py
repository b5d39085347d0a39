"""Tracking into TensorBoard event files, through ``torch.utils.tensorboard``.

A run is a folder of event files (TensorBoard's own notion of a run): the top-level run's
is the tracker's folder, a nested one's a subfolder named after it, so
``tensorboard --logdir OUT/tensorboard`` shows a grid's cells, or ``auto``'s candidates,
side by side. Scalars are the metrics at their step; the settings, the tags and the model
folder's path are text (TensorBoard's Text tab).

A resumed run writes a new event file into the same folder, its epochs at their steps
after the ones already there. A run that replaces its folder's run (``--overwrite``)
removes the replaced run's event files (and its nested runs' folders) when it logs its
first metrics, so the two runs' curves never mix: by its first epoch a run is past every
refusal, and a run refused or failed before it leaves the old run's files as they were.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from mirec.core.extras import require
from mirec.tracking.base import Status

_NOT_IN_A_FOLDER = re.compile(r"[^\w.=-]")


class TensorBoardBackend:
    """A folder of TensorBoard runs."""

    name = "tensorboard"

    def __init__(self, folder: Path) -> None:
        require("tensorboard", "--track tensorboard")
        self.folder = folder

    def start(self, name: str, fresh: bool = False) -> TensorBoardRun:
        """The top-level run: the folder itself (``name`` is the run's folder's already).
        ``fresh``: what the folder holds is the replaced run's (module docstring)."""
        return TensorBoardRun(self.folder, replaces=fresh)

    def reopen(self, name: str, key: str | None) -> TensorBoardRun:
        """The folder, whose event files the new ones join (TensorBoard reads them all)."""
        return TensorBoardRun(self.folder)


class TensorBoardRun:
    """One folder of event files, its writer opened at the first write and again after
    :meth:`end` (``auto`` tags the chosen candidate once every candidate has ended)."""

    key = None  # the folder is the run

    def __init__(self, folder: Path, replaces: bool = False) -> None:
        """``replaces``: what ``folder`` holds is a replaced run's, removed at this run's
        first metrics (its nested runs replace theirs too)."""
        self.folder = folder
        self._writer: Any = None
        self._replaces = replaces
        self._replaced: list[Path] | None = None
        self._children: set[Path] = set()

    def _writing(self) -> Any:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            if self._replaces and self._replaced is None:
                # before this run's own first event file joins them
                self._replaced = sorted(self.folder.iterdir()) if self.folder.is_dir() else []
            self._writer = SummaryWriter(log_dir=str(self.folder))
        return self._writer

    def _remove_replaced(self) -> None:
        """The replaced run's files and folders, but this run's nested runs' (each clears
        its own folder)."""
        for path in self._replaced or ():
            if path in self._children:
                continue
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        self._replaces, self._replaced = False, None

    def log_params(self, params: dict[str, str]) -> None:
        rows = "\n".join(f"| {key} | {value} |" for key, value in params.items())
        # a Markdown table, which TensorBoard's Text tab renders
        self._writing().add_text("settings", f"| setting | value |\n| --- | --- |\n{rows}")

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        writer = self._writing()
        if self._replaces:
            self._remove_replaced()
        for name, value in metrics.items():
            writer.add_scalar(name, value, global_step=step)

    def set_tags(self, tags: dict[str, str]) -> None:
        writer = self._writing()
        for key, value in tags.items():
            writer.add_text(f"tags/{key}", value)

    def log_folder(self, folder: Path) -> None:
        self._writing().add_text("model_folder", str(folder.resolve()))

    def child(self, name: str) -> TensorBoardRun:
        parts = [_NOT_IN_A_FOLDER.sub("_", part) for part in name.split("/")]
        parts = [part for part in parts if part.strip(".")]
        if parts:  # the nested run's folder is this run's to keep, not a replaced one
            self._children.add(self.folder / parts[0])
        return TensorBoardRun(self.folder.joinpath(*parts), replaces=self._replaces)

    def end(self, status: Status) -> None:
        writer = self._writing()
        writer.add_text("status", status)
        writer.close()
        self._writer = None
