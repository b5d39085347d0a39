"""Tracking into TensorBoard event files, through ``torch.utils.tensorboard``.

A run is a folder of event files (TensorBoard's own notion of a run): the top-level run's
is the tracker's folder, a nested one's a subfolder named after it, so
``tensorboard --logdir OUT/tensorboard`` shows a grid's cells, or ``auto``'s candidates,
side by side. Scalars are the metrics at their step; the settings, the tags and the model
folder's path are text (TensorBoard's Text tab).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mirec.core.extras import require
from mirec.tracking.base import Status

_NOT_IN_A_FOLDER = re.compile(r"[^\w.=-]")


class TensorBoardBackend:
    """A folder of TensorBoard runs."""

    def __init__(self, folder: Path) -> None:
        require("tensorboard", "--track tensorboard")
        self.folder = folder

    def start(self, name: str) -> TensorBoardRun:
        """The top-level run: the folder itself (``name`` is the run's folder's already)."""
        return TensorBoardRun(self.folder)


class TensorBoardRun:
    """One folder of event files, its writer opened at the first write and again after
    :meth:`end` (``auto`` tags the chosen candidate once every candidate has ended)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._writer: Any = None

    def _writing(self) -> Any:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.folder))
        return self._writer

    def log_params(self, params: dict[str, str]) -> None:
        rows = "\n".join(f"| {key} | {value} |" for key, value in params.items())
        # a Markdown table, which TensorBoard's Text tab renders
        self._writing().add_text("settings", f"| setting | value |\n| --- | --- |\n{rows}")

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        writer = self._writing()
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
        return TensorBoardRun(self.folder.joinpath(*[p for p in parts if p.strip(".")]))

    def end(self, status: Status) -> None:
        writer = self._writing()
        writer.add_text("status", status)
        writer.close()
        self._writer = None
