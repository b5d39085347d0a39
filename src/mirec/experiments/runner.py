"""Run an experiment's cells one after another, skipping the finished ones and resuming
interrupted ones from their last finished epoch.

Several workers may run the same experiment at once (``mirec experiment FILE`` started
twice, on one machine or on machines sharing the folder through a file system with
``flock``): a worker holds a cell's run lock (:func:`mirec.run_folder.folder_lock`) while it
trains it, and the others pass it by. The operating system drops the lock of a worker that
dies, so its cell is resumed by the next worker that comes to it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from mirec.auto import train_auto
from mirec.core.config import Config
from mirec.errors import DataError, MirecError
from mirec.experiments.grid import Cell, Experiment, ImpossibleCell
from mirec.models.folder import CONFIG_FILE, METRICS_FILE
from mirec.results import Evaluation, RunResult, TrainedRun, read_result
from mirec.run_folder import FolderInUse, folder_lock
from mirec.runs import evaluate_folder, train_run
from mirec.tracking import NO_TRACKING, TrackedRun, Tracker


def cell_result(cell: Cell) -> RunResult | None:
    """The cell's record when it finished with its current config, else None (a cell whose
    run used other settings is stale and runs again).

    The settings are those recorded inside metrics.json (``config.yaml`` for runs from
    before mirec recorded them there); settings added to mirec since count at their
    defaults."""
    metrics_path = cell.run_dir / METRICS_FILE
    if not metrics_path.is_file():
        return None
    try:
        metrics = json.loads(metrics_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(
            f"{metrics_path}: not valid JSON ({err}); delete it to run the cell again"
        ) from None
    if not isinstance(metrics, dict):
        raise DataError(f"{metrics_path}: expected a JSON object; delete it to run the cell again")
    result = read_result(metrics, str(metrics_path))
    if cell.candidates:  # auto: its choice stands while every candidate's settings do
        record = result.auto if isinstance(result, TrainedRun) else None
        chosen_from = {} if record is None else record.candidates or {}
        recorded = [c.get("config") for c in chosen_from.values()]
        wanted = [config for config, _ in cell.candidates]
        return result if list(map(_settings, recorded)) == list(map(_settings, wanted)) else None
    recorded = result.config
    if recorded is None:
        config_path = cell.run_dir / CONFIG_FILE
        if not config_path.is_file():
            return None
        try:
            recorded = yaml.safe_load(config_path.read_text()) or {}
        except (yaml.YAMLError, UnicodeDecodeError):
            raise DataError(
                f"{config_path}: not valid YAML; delete the cell's folder to run it again"
            ) from None
    return result if _settings(recorded) == _settings(cell.config) else None


def _settings(recorded: Any) -> dict[str, Any] | None:
    """A run's settings as a dict, with settings added to mirec since at their defaults;
    None for anything mirec did not write (the cell runs again)."""
    if isinstance(recorded, Config):
        return recorded.to_dict()
    return {**Config().to_dict(), **recorded} if isinstance(recorded, dict) else None


def run_experiment(
    experiment: Experiment,
    *,
    data_dir: Path | None = None,
    max_cells: int | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    tracker: Tracker = NO_TRACKING,
) -> list[tuple[Cell | ImpossibleCell, str]]:
    """Train every unfinished cell (at most ``max_cells`` of them); returns the failures.

    A cell that fails with a user error (bad data, bad setting) is reported and skipped so
    the rest of the grid still runs; so is every cell whose settings are impossible
    (``experiment.impossible``), reported first and never run.

    ``tracker`` logs the grid as one run named after the experiment, and each cell that
    runs now as a run nested in it, named after its folder under ``runs_dir``.
    """
    with tracker.run(experiment.name) as grid:
        grid.tag({"mirec.runs_dir": str(experiment.runs_dir.resolve())})
        return _run_cells(experiment, grid, data_dir, max_cells, progress, echo)


def _run_cells(
    experiment: Experiment,
    grid: TrackedRun,
    data_dir: Path | None,
    max_cells: int | None,
    progress: bool,
    echo: Callable[[str], None],
) -> list[tuple[Cell | ImpossibleCell, str]]:
    """:func:`run_experiment`'s cells, each tracked as a run nested in ``grid``."""
    todo = [cell for cell in experiment.cells if cell_result(cell) is None]
    total = len(experiment.cells)
    impossible = experiment.impossible
    echo(
        f"{experiment.name}: {total - len(todo)} of {total} cells finished, {len(todo)} to run"
        + (f", {len(impossible)} impossible" if impossible else "")
    )
    failures: list[tuple[Cell | ImpossibleCell, str]] = []
    for cell in impossible:
        label = f"{cell.dataset} / {cell.model}"
        if cell.variant:
            label += f" [{cell.variant_label}]"
        echo(f"    impossible: {label} seed {cell.seed}: {cell.error}")
        failures.append((cell, cell.error))
    ran = 0
    for i, cell in enumerate(todo, 1):
        if max_cells is not None and ran >= max_cells:
            break
        label = f"{cell.dataset} / {cell.model}"
        if cell.variant:
            label += f" [{cell.variant_label}]"
        if cell_result(cell) is not None:
            echo(f"[{i}/{len(todo)}] {label} seed {cell.seed}: done elsewhere")
            continue
        echo(f"[{i}/{len(todo)}] {label} seed {cell.seed} -> {cell.run_dir}")
        start = time.perf_counter()
        # an auto cell's settings are those of the candidate it keeps, logged once chosen
        settings = None if cell.candidates else cell.config
        try:
            with grid.child(_cell_name(cell, experiment.runs_dir), settings) as tracked:
                result = _run_cell(cell, data_dir, progress, tracked)
                if result is None:
                    tracked.tag({"mirec.outcome": "running elsewhere"})
        except MirecError as err:
            failures.append((cell, str(err)))
            echo(f"    failed: {err}")
            continue
        if result is None:
            echo("    running elsewhere")
            continue
        ran += 1
        headline = "auc" if result.task == "ctr" else "recall@50"
        epochs = (
            result.trained.get("epochs") if isinstance(result, Evaluation) else result.fit.epochs
        )
        echo(
            f"    test {headline} {result.test[headline]:.4f}, "
            f"{epochs} epochs, {time.perf_counter() - start:.0f} s"
        )
    return failures


def _cell_name(cell: Cell, runs_dir: Path) -> str:
    """The cell's tracked run's name: its folder under ``runs_dir``."""
    return (
        cell.run_dir.relative_to(runs_dir).as_posix()
        if cell.run_dir.is_relative_to(runs_dir)
        else str(cell.run_dir)
    )


def _run_cell(
    cell: Cell, data_dir: Path | None, progress: bool, tracked: TrackedRun
) -> RunResult | None:
    """Train the cell (or, for a cell of inference-time settings, train its shared checkpoint
    if needed, then re-evaluate it), logged in ``tracked`` (the checkpoint's training as a
    run nested in it); None when another worker holds what it needs.

    A cell's folder holds a stale run (other settings) or an interrupted one: the first is
    replaced, the second continues from its last finished epoch."""
    if cell.reevaluates:
        trained = replace(cell, run_dir=cell.checkpoint, config=cell.train_config, variant=())
        if cell_result(trained) is None:
            with tracked.child("checkpoint", trained.config) as training:
                if _run_cell(trained, data_dir, progress, training) is None:
                    return None
    # a stale run is replaced, an interrupted one continues
    how = {"data_dir": data_dir, "progress": progress, "resume": True, "overwrite": True}
    try:
        if cell.candidates:  # auto logs its choice and its candidates itself
            return train_auto(cell.candidates, cell.run_dir, tracked=tracked, **how)
        if not cell.reevaluates:
            result = train_run(cell.config, cell.run_dir, on_epoch=tracked.on_epoch, **how)
        else:
            with folder_lock(cell.run_dir):
                result = evaluate_folder(
                    cell.checkpoint,
                    cell.run_dir,
                    overrides=cell.inference_settings,
                    progress=progress,
                )
    except FolderInUse:
        return None
    tracked.log_result(result, cell.run_dir)
    return result
