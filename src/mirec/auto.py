"""How a :class:`~mirec.config.TrainingPlan` trains (:func:`train_plan`, the one door of
``mirec train`` and ``mirec.train``): one model as a run, or ``--model auto``, the
retrieval default: train every candidate, keep the best on validation.

No published config leads on every dataset (docs/results.md): SASRec's single vector beats
every multi-interest config on ml-100k, and loses to ``remi-plain`` on the Amazon sets. So
the default trains each of :data:`mirec.config.AUTO_CANDIDATES` as an ordinary run in its
own folder, and the output folder becomes a copy of the one with the highest validation
Recall@50 (the figure early stopping already keeps; the test split is never looked at to
choose). Its ``metrics.json`` is the chosen run's, with an ``auto`` record: the choice, why,
and every candidate's validation figures and training time. docs/default.md measures it.

The output folder, ``OUT``::

    OUT/candidates/sasrec/ ...           one finished run per candidate (mirec train's folder)
    OUT/config.yaml, model.safetensors,  the chosen candidate's model folder (hard links
    ..., metrics.json                    where the file system allows), loadable as any run

Each candidate resumes on its own (``--resume`` continues the one a crash cut short and
keeps the finished ones), so the whole costs the sum of the candidates' training times.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from mirec.config import AUTO_MODEL, SELECTION_METRIC, TrainingPlan
from mirec.core.config import INFERENCE_SETTINGS, Config, changed_setting
from mirec.core.launch import world_size
from mirec.errors import ConfigError, MirecError
from mirec.models.build import check_components
from mirec.models.folder import CONFIG_FILE, FOLDER_FILES, METRICS_FILE, read_config, read_metrics
from mirec.results import AutoChoice, RunResult, TrainedRun, read_result
from mirec.run_folder import (
    OPTIONAL_FILES,
    RUN_FILES,
    STAGING_DIR,
    RunFolder,
    check_claim,
    check_output_folder,
    claim,
    folder_lock,
)
from mirec.runs import train_run
from mirec.tracking import NO_TRACKING, UNTRACKED, TrackedRun, Tracker
from mirec.training.checkpoint import CHECKPOINT_FILE


def train_plan(
    plan: TrainingPlan,
    output_dir: Path,
    *,
    data_dir: Path | None = None,
    progress: bool = True,
    resume: bool = False,
    overwrite: bool = False,
    echo: Callable[[str], None] = print,
    tracker: Tracker = NO_TRACKING,
) -> RunResult:
    """Train ``plan`` into ``output_dir``: its one config as a run
    (:func:`~mirec.runs.train_run`), or auto's candidates, each a run in its own folder,
    after which ``output_dir`` becomes the model folder of the best on the plan's validation
    metric (:func:`train_auto`). Returns the run's record; auto's carries the
    :class:`~mirec.results.AutoChoice`. Every candidate's settings are checked before
    anything is written. ``tracker`` logs the run (named after ``output_dir``); auto's
    candidates are its nested runs."""
    if plan.selected_on is None:
        config = plan.candidates[0]
        with tracker.run(
            output_dir.name, config, folder=output_dir, resume=resume, overwrite=overwrite
        ) as tracked:
            return _train_tracked(
                tracked, config, output_dir, data_dir, progress, resume, overwrite
            )
    if world_size() > 1:
        raise ConfigError(
            f"model {AUTO_MODEL}: trains its candidates one after another in one process; under "
            "torchrun, name one model (--model)"
        )
    with tracker.run(
        output_dir.name, folder=output_dir, resume=resume, overwrite=overwrite
    ) as tracked:
        return train_auto(
            plan.folders(output_dir),
            output_dir,
            data_dir=data_dir,
            progress=progress,
            resume=resume,
            overwrite=overwrite,
            echo=echo,
            selected_on=plan.selected_on,
            tracked=tracked,
        )


def train_auto(
    candidates: Sequence[tuple[Config, Path]],
    output_dir: Path,
    *,
    data_dir: Path | None = None,
    progress: bool = True,
    resume: bool = False,
    overwrite: bool = False,
    echo: Callable[[str], None] = print,
    selected_on: str = SELECTION_METRIC,
    tracked: TrackedRun = UNTRACKED,
) -> RunResult:
    """Train each ``(config, folder)`` of ``candidates`` (:func:`~mirec.runs.train_run`,
    with ``resume`` and ``overwrite`` as given), then make ``output_dir`` the model folder
    of the best on validation ``selected_on``. An experiment grid gives each candidate the
    folder it shares with the grid's plain row of that model (:mod:`mirec.experiments.grid`);
    :func:`train_plan` gives ``output_dir/candidates/NAME``.

    ``output_dir``'s lock is held throughout. Without ``resume`` or ``overwrite`` a folder
    holding a run (or candidates) is refused before anything trains; so, with ``resume``,
    is a candidate's folder holding a run of other settings, an output folder holding a run
    of none of the candidates (or an auto run of other candidates), and a folder another
    process holds.

    ``tracked`` is the run the choice is logged in: each candidate is a run nested in it,
    the chosen one tagged ``mirec.chosen``."""
    if not candidates:
        raise MirecError(f"model {AUTO_MODEL}: no candidates to train")
    for config, _ in candidates:  # every candidate's settings, before the first trains
        check_components(config)
    for config, folder in [(candidates[0][0], output_dir), *candidates]:
        check_output_folder(folder, config, data_dir)
    with folder_lock(output_dir):
        # every refusal that depends on the folders comes before the first candidate trains
        if not (resume or overwrite):
            _refuse_used(output_dir, [folder for _, folder in candidates])
        for config, folder in candidates:
            check_claim(folder, config, resume=resume, overwrite=overwrite)
        if resume and not overwrite:
            _refuse_foreign_run(output_dir, [config for config, _ in candidates])
        results: dict[str, tuple[Config, Path, RunResult]] = {}
        candidate_runs: dict[str, TrackedRun] = {}
        for i, (config, folder) in enumerate(candidates, 1):
            echo(f"{AUTO_MODEL}: candidate {i}/{len(candidates)}: {config.model} -> {folder}")
            with tracked.child(config.model, config) as candidate_run:
                result = _train_tracked(
                    candidate_run, config, folder, data_dir, progress, resume, overwrite
                )
            results[config.model] = (config, folder, result)
            candidate_runs[config.model] = candidate_run
        valid = {name: r.valid[selected_on] for name, (_, _, r) in results.items()}
        chosen = choose(valid)
        for name, candidate_run in candidate_runs.items():
            candidate_run.tag({"mirec.chosen": str(name == chosen).lower()})
        final = _keep(chosen, valid, results, output_dir, selected_on, resume, overwrite)
        tracked.log_config(results[chosen][0])
        tracked.log_result(final, output_dir)
        tracked.tag({"mirec.chosen": chosen})
        return final


def _train_tracked(
    tracked: TrackedRun,
    config: Config,
    folder: Path,
    data_dir: Path | None,
    progress: bool,
    resume: bool,
    overwrite: bool,
) -> RunResult:
    """:func:`~mirec.runs.train_run` with its epochs and its record logged in ``tracked``."""
    result = train_run(
        config,
        folder,
        data_dir=data_dir,
        progress=progress,
        resume=resume,
        overwrite=overwrite,
        on_epoch=tracked.on_epoch,
    )
    tracked.log_result(result, folder)
    return result


def _keep(
    chosen: str,
    valid: dict[str, float],
    results: dict[str, tuple[Config, Path, RunResult]],
    output_dir: Path,
    selected_on: str,
    resume: bool,
    overwrite: bool,
) -> RunResult:
    """``output_dir`` made the model folder of the ``chosen`` candidate, with the record
    of the choice; returns its record."""
    config, folder, result = results[chosen]
    run = claim(output_dir, config, resume=resume, overwrite=overwrite)
    if not isinstance(run, RunFolder):  # resumed: the folder holds the chosen model's run
        if isinstance(run, TrainedRun) and run.auto is not None:
            return run
        # a plain run of the same config (mirec train --model NAME): add the record
        run = claim(output_dir, config, resume=False, overwrite=True)
    for name in FOLDER_FILES:
        _link_or_copy(folder / name, run.staging / name)
    for name in OPTIONAL_FILES:
        if (folder / name).is_file():
            _link_or_copy(folder / name, run.staging / name)
    record = auto_record(chosen, valid, results, output_dir, selected_on)
    return run.finish(dataclasses.replace(result, auto=record))


def choose(valid: dict[str, float]) -> str:
    """The candidate with the highest validation figure; a tie goes to the earlier one
    (``max`` keeps the first of equal keys)."""
    return max(valid, key=valid.__getitem__)


def auto_record(
    chosen: str,
    valid: dict[str, float],
    results: dict[str, tuple[Config, Path, RunResult]],
    output_dir: Path,
    selected_on: str,
) -> AutoChoice:
    """What ``metrics.json`` says of the choice: which, why (``valid``: each candidate's
    figure), and every candidate's validation figures, training time and settings (the
    settings let an experiment grid tell a finished cell from a stale one)."""
    others = ", ".join(f"{name} {value:.4f}" for name, value in valid.items() if name != chosen)
    return AutoChoice(
        chosen=chosen,
        why=(
            f"the highest validation Recall@50 of {len(valid)} candidates: {chosen} "
            f"{valid[chosen]:.4f}" + (f" against {others}" if others else "")
        ),
        selected_on=f"valid {selected_on}",
        train_seconds=round(sum(r.fit.train_seconds for _, _, r in results.values()), 3),
        candidates={
            name: {
                "folder": os.path.relpath(folder, output_dir),
                "valid": result.valid,
                "epochs": result.fit.epochs,
                "best_epoch": result.fit.best_epoch,
                "stopped_by": result.fit.stopped_by,
                "train_seconds": result.fit.train_seconds,
                "config": config.to_dict(),
            }
            for name, (config, folder, result) in results.items()
        },
    )


def _refuse_used(output_dir: Path, folders: list[Path]) -> None:
    """A MirecError when ``output_dir`` or a candidate's folder holds a run, finished or
    not (a run that failed before writing anything, such as on bad data, leaves none)."""
    held = [
        path
        for folder in (output_dir, *folders)
        for path in (folder / name for name in RUN_FILES)
        if path.exists()
    ]
    held += [f for f in (output_dir, *folders) if (f / STAGING_DIR / CONFIG_FILE).exists()]
    if held:
        raise MirecError(
            f"{output_dir}: holds a run ({held[0]}, ...); --resume continues it, --overwrite "
            "replaces it, or choose another output folder"
        )


def _refuse_foreign_run(output_dir: Path, configs: list[Config]) -> None:
    """With ``--resume``: a MirecError when ``output_dir`` holds a run (finished, or a
    commit cut short) that this auto run could not end with: a run of none of the
    candidates' settings, or an auto run whose candidates had other settings."""
    staged = output_dir / STAGING_DIR
    if (staged / CONFIG_FILE).is_file():
        recorded, what, ignore = read_config(staged), "unfinished", INFERENCE_SETTINGS
        plain = (staged / CHECKPOINT_FILE).is_file()  # auto's own commit holds no checkpoint
    elif (output_dir / METRICS_FILE).is_file():
        recorded, what, ignore = read_config(output_dir), "finished", ("device",)
        metrics = read_metrics(output_dir) or {}
        record = read_result(metrics, str(output_dir / METRICS_FILE))
        plain = True
        if isinstance(record, TrainedRun) and record.auto is not None:
            candidates = record.auto.candidates
            settings = [c.get("config") for c in (candidates or {}).values()]
            if len(settings) != len(configs) or any(
                not isinstance(recorded_one, dict) or changed_setting(config, recorded_one, ignore)
                for config, recorded_one in zip(configs, settings, strict=False)
            ):
                raise MirecError(
                    f"{output_dir}: holds a finished {AUTO_MODEL} run of other candidates or "
                    "settings; --overwrite trains it again, or choose another output folder"
                )
            return
    else:
        return
    if not any(changed_setting(config, recorded.to_dict(), ignore) is None for config in configs):
        names = ", ".join(config.model for config in configs)
        raise MirecError(
            f"{output_dir}: holds the {what} run of {recorded.model}, with settings of none of "
            f"the candidates of {AUTO_MODEL} ({names}); --overwrite replaces it, or choose "
            "another output folder"
        )
    if plain:
        _refuse_plain_run(output_dir, recorded, what)


def _refuse_plain_run(output_dir: Path, recorded: Config, what: str) -> None:
    """With ``--resume``, before any candidate trains: ``output_dir`` holds a run of one
    model (``mirec train --model NAME``), not an auto run. Which candidate auto keeps is
    known only once all have trained, and keeping another would replace that run unasked
    (it trained all three, then refused)."""
    raise MirecError(
        f"{output_dir}: holds the {what} run of {recorded.model} alone (mirec train --model "
        f"{recorded.model}), not a run of {AUTO_MODEL}, which may keep another candidate; "
        "--overwrite replaces it, or choose another output folder"
    )


def _link_or_copy(source: Path, target: Path) -> None:
    """A hard link (no second copy of a large item table), else a copy."""
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
