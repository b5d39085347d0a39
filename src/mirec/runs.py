"""One training or evaluation run, end to end: data, model, fit, test, ``metrics.json``.

An output directory is a model folder (:mod:`mirec.models.folder`): ``config.yaml`` (the
resolved settings: training again from it repeats the run), ``model.safetensors`` (the best
weights on validation), ``model.json``, ``items.parquet`` and ``users.parquet`` (what loading
and recommending need, with no dataset present), and ``metrics.json`` (the figures,
machine-readable). A run owns its folder while it runs, writes to the folder's staging
area and moves in whole at its end (:mod:`mirec.run_folder`); a killed run resumes from
its last finished epoch.
"""

from __future__ import annotations

import shutil
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mirec.atomic import write_json_atomic
from mirec.core.config import INFERENCE_SETTINGS, Config
from mirec.core.device import resolve_device
from mirec.core.paths import cache_dir
from mirec.data.ctr_samples import prepare_ctr
from mirec.data.examples import EvaluationSet, training_item_counts
from mirec.data.prepare import PreparedData, prepare, split_sequences
from mirec.data.synthetic import planted_interest_counts
from mirec.errors import ConfigError, MirecError, WriteError
from mirec.evaluation import compare
from mirec.evaluation.diagnostics import Diagnostics
from mirec.evaluation.evaluator import EvaluationResult, evaluate
from mirec.models.build import build_ctr_model, build_model, check_components
from mirec.models.folder import (
    EVALUATION_DIR,
    METRICS_FILE,
    WEIGHTS_FILE,
    LoadedModel,
    load_model,
    read_folder_data,
)
from mirec.results import (
    Comparison,
    Evaluation,
    FitSummary,
    RunHeader,
    RunResult,
    TestFigures,
    TrainedCTRRun,
    TrainedRun,
    training_summary,
    write_result,
)
from mirec.run_folder import STAGING_DIR, RunFolder, check_output_folder, claim, folder_lock
from mirec.training.checkpoint import OptimizerState, read_optimizer_state
from mirec.training.ctr_trainer import RowBatches, evaluate_ctr, fit_ctr
from mirec.training.distributed import World, process_group
from mirec.training.progress import EpochHook, FitResult
from mirec.training.trainer import fit
from mirec.training.warm_start import carried_optimizer_state, warm_start
from mirec.version import __version__


def prepare_for(config: Config, data_dir: Path | None = None) -> PreparedData:
    """The data a run of ``config`` trains and tests on; a fine-tune that keeps the items
    its folder knows (``removed_items=keep``) has them in its catalogue."""
    keep = None
    if config.init_from is not None and config.removed_items == "keep":
        keep = read_folder_data(Path(config.init_from)).sequences
    return prepare(
        config.dataset,
        data_dir=data_dir,
        format=config.format,
        columns=config.columns,
        sep=config.sep,
        split_seed=config.split_seed,
        maxlen=config.maxlen,
        id_type=config.id_type,
        keep_items=keep,
    )


def train_run(
    config: Config,
    output_dir: Path,
    *,
    data_dir: Path | None = None,
    progress: bool = True,
    resume: bool = False,
    overwrite: bool = False,
    on_epoch: EpochHook | None = None,
) -> RunResult:
    """Train ``config`` into ``output_dir`` and test the best weights; returns the run's
    record, what ``metrics.json`` holds (:mod:`mirec.results`). ``on_epoch`` sees every
    finished epoch and may stop training (:data:`~mirec.training.progress.EpochHook`).

    The run holds ``output_dir``'s lock while it runs (:class:`~mirec.run_folder.FolderInUse`
    when another process does). A folder that holds a run already is refused unless
    ``overwrite`` (the new run replaces it once finished) or ``resume`` (an unfinished run
    with the same settings continues from its last finished epoch and ends exactly as an
    uninterrupted one would; a finished one is returned as is); the rules are
    :func:`~mirec.run_folder.claim`'s.

    Started by ``torchrun --nproc_per_node=N`` (N > 1), the processes train together and
    each returns rank 0's record (:func:`_train_ranks`)."""
    check_components(config)  # before the folder is claimed or any data read
    check_output_folder(output_dir, config, data_dir)
    with process_group(config.device) as world:
        if world is not None:
            return _train_ranks(
                config, output_dir, world, data_dir, progress, resume, overwrite, on_epoch
            )
    with folder_lock(output_dir):
        run = claim(output_dir, config, resume=resume, overwrite=overwrite)
        if not isinstance(run, RunFolder):
            return run
        try:
            return run.finish(_train(config, run, data_dir, progress, on_epoch=on_epoch))
        except WriteError as err:
            raise _after_write_failure(err, run) from err


def _after_write_failure(err: WriteError, run: RunFolder) -> WriteError:
    """A disk that failed under a run (the previous run of the folder is whole: the new one
    wrote only to staging): a staging folder with an epoch checkpoint is kept for
    ``--resume``, and the message says so; one without is removed, as if the run had not
    started."""
    from mirec.training.checkpoint import CHECKPOINT_FILE

    if (run.staging / CHECKPOINT_FILE).is_file():
        return WriteError(
            f"{err}; the run's last epoch checkpoint is kept: --resume continues it",
            path=err.path,
            reason=err.reason,
        )
    shutil.rmtree(run.staging, ignore_errors=True)
    return err


def _train_ranks(
    config: Config,
    output_dir: Path,
    world: World,
    data_dir: Path | None,
    progress: bool,
    resume: bool,
    overwrite: bool,
    on_epoch: EpochHook | None,
) -> RunResult:
    """:func:`train_run` in one process of a torchrun job: rank 0 alone locks, claims and
    writes ``output_dir``, and shows progress; every rank trains
    (:mod:`mirec.training.distributed`) and returns rank 0's record."""
    if config.task != "retrieval":
        raise ConfigError(
            f"task={config.task}: trains in one process; torchrun trains retrieval models"
        )
    with ExitStack() as held:

        def take_folder() -> RunFolder | RunResult:
            held.enter_context(folder_lock(output_dir))
            return claim(output_dir, config, resume=resume, overwrite=overwrite)

        run = world.main_only(take_folder)
        if not isinstance(run, RunFolder):
            return run
        result = _train(config, run, data_dir, progress and world.is_main, world, on_epoch)
        return world.main_only(lambda: run.finish(result))


def _train(
    config: Config,
    run: RunFolder,
    data_dir: Path | None,
    progress: bool,
    world: World | None = None,
    on_epoch: EpochHook | None = None,
) -> RunResult:
    """Train and test ``config`` in ``run``'s staging folder; returns its record. In a
    torchrun job (``world``) only rank 0 writes and tests; the other ranks return None."""
    if world is None:
        data = prepare_for(config, data_dir)
    else:  # rank 0 first: the others find its preprocessing in the cache
        data = world.everywhere(lambda: prepare_for(config, data_dir), main_first=True)
    writes = world is None or world.is_main
    if writes:
        run.write_inputs(config, data)
    torch.manual_seed(config.seed)  # the initial weights are part of a repeatable run
    if config.task == "ctr":
        return _train_ctr(config, data, run, progress, on_epoch)
    model = build_model(config, data.sequences.n_items, data.maxlen, data.sequences.user_profiles())
    fine_tuned, known_positions, optimizer_start = _warm_start(config, model, data)
    result = fit(
        model,
        data,
        config,
        run.staging,
        progress=progress,
        resume=run.resuming,
        world=world,
        on_epoch=on_epoch,
        known_positions=known_positions,
        optimizer_start=optimizer_start,
    )
    if not writes:
        return None
    settings = _retrieval_settings(config, data)
    test = evaluate(
        model,
        data.test,
        device=resolve_device(config.device),
        progress=progress,
        diagnostics=diagnostics_for(config, data, data.test, settings["item_category"]),
        **settings,
    )
    return TrainedRun(
        header=_run_header(config, data, model, processes=1 if world is None else world.size),
        config=config.to_dict(),
        valid=result.best_valid,
        figures=test_figures(test),
        fit=_fit_summary(result),
        negatives=result.negatives,
        valid_users=result.valid_users,
        valid_every=config.valid_every,
        history=result.history,
        fine_tuned=fine_tuned,
    )


def _warm_start(
    config: Config, model: torch.nn.Module, data: PreparedData, retrieval: bool = True
) -> tuple[dict[str, Any] | None, np.ndarray | None, OptimizerState | None]:
    """With ``init_from``, the folder's learned weights in ``model`` (fine-tuning:
    :mod:`mirec.training.warm_start`): what they gave, as metrics.json records it, each
    user's known positions when training is on what is new (``fine_tune_on=new``, retrieval
    with a folder that stored histories), and with ``init_optimizer=carry`` the folder's
    optimizer state remapped to ``model``; (None, None, None) otherwise."""
    if config.init_from is None:
        return None, None, None
    folder = Path(config.init_from)
    start = warm_start(model, folder, data.sequences, data.split.train)
    known = start.known_positions if retrieval and config.fine_tune_on == "new" else None
    optimizer = None
    if config.init_optimizer == "carry":
        optimizer = carried_optimizer_state(read_optimizer_state(folder), start)
    record = {
        **start.to_dict(),
        "trained_on": "all" if known is None else "new",
        "optimizer": config.init_optimizer,
    }
    return record, known, optimizer


def test_figures(test: EvaluationResult) -> TestFigures:
    """The test pass's figures, as metrics.json reports them."""
    return TestFigures(
        test=test.metrics,
        collapse=test.collapse,
        interest_counts=test.interest_counts,
        diagnostics=test.diagnostics,
        eval_users_per_second=round(test.users_per_second, 1),
    )


def _fit_summary(result: FitResult) -> FitSummary:
    """How training went, as metrics.json reports it."""
    return FitSummary(
        epochs=result.epochs,
        best_epoch=result.best_epoch,
        stopped_by=result.stopped_by,
        train_seconds=round(result.train_seconds, 3),
        train_examples_per_second=round(result.examples_per_second, 1),
        sparse_items=result.sparse_items,
    )


def _train_ctr(
    config: Config,
    data: PreparedData,
    run: RunFolder,
    progress: bool,
    on_epoch: EpochHook | None = None,
) -> TrainedCTRRun:
    """The CTR half of :func:`_train`: stored evaluation rows, BCE training, AUC/GAUC."""
    ctr = prepare_ctr(data, config.ctr_negatives, cache_dir())
    model = build_ctr_model(config, ctr.sequences, ctr.maxlen)
    fine_tuned, _, optimizer_start = _warm_start(config, model, data, retrieval=False)
    result = fit_ctr(  # CTR trains every row, fine-tuned or not
        model,
        ctr,
        config,
        run.staging,
        progress=progress,
        resume=run.resuming,
        on_epoch=on_epoch,
        optimizer_start=optimizer_start,
    )
    test = evaluate_ctr(model, ctr.test, RowBatches(ctr, resolve_device(config.device)))
    return TrainedCTRRun(
        header=_run_header(config, data, model),
        config=config.to_dict(),
        negatives_per_positive=ctr.negatives,
        n_valid_rows=len(ctr.valid),
        n_test_rows=len(ctr.test),
        valid=result.best_valid,
        test=test,
        fit=_fit_summary(result),
        history=result.history,
        fine_tuned=fine_tuned,
    )


def evaluate_folder(
    checkpoint: Path,
    output_dir: Path | None = None,
    *,
    mask_history: bool = False,
    overrides: dict[str, Any] | None = None,
    progress: bool = True,
) -> Evaluation:
    """Re-evaluate a trained run's best weights on its validation and test users.

    ``overrides`` changes inference-time settings only (``INFERENCE_SETTINGS``: adaptive K,
    the diversity-controllable aggregation, the diffusion sampler's steps, the device), so
    one trained model can be scored under several of them; the settings used are recorded
    in metrics.json."""
    if output_dir is not None:
        _refuse_run_folder(output_dir)
    loaded, data = load_run(checkpoint, overrides)
    config, model = loaded.config, loaded.model
    device = resolve_device(config.device)
    settings = _retrieval_settings(config, data)
    # diagnostics are reported for the test users only, so only that pass measures them
    diagnostics = {"test": diagnostics_for(config, data, data.test, settings["item_category"])}
    results: dict[str, EvaluationResult] = {
        split: evaluate(
            model,
            getattr(data, split),
            device=device,
            mask_history=mask_history,
            progress=progress,
            diagnostics=diagnostics.get(split),
            **settings,
        )
        for split in ("valid", "test")
    }
    evaluation = Evaluation(
        header=_run_header(config, data, model),
        config=config.to_dict(),
        history_masked=mask_history,
        inference_settings={key: getattr(config, key) for key in INFERENCE_SETTINGS},
        valid=results["valid"].metrics,
        figures=test_figures(results["test"]),
        trained=training_summary(loaded.metrics),
    )
    write_result((output_dir or checkpoint / EVALUATION_DIR) / METRICS_FILE, evaluation)
    return evaluation


COMPARE_FILE, COMPARE_PLOT = "compare.json", "compare.png"


def _refuse_run_folder(output_dir: Path) -> None:
    """A MirecError, before anything is computed, when ``output_dir`` (where a
    ``metrics.json`` of an evaluation or comparison goes) is a file or holds a model: its
    own ``metrics.json``, what marks its run finished and records its settings, would be
    replaced."""
    if output_dir.exists() and not output_dir.is_dir():
        raise MirecError(f"{output_dir}: exists and is not a folder")
    held = [name for name in (WEIGHTS_FILE, STAGING_DIR) if (output_dir / name).exists()]
    if held:
        raise MirecError(
            f"{output_dir}: holds a model folder ({held[0]}); its metrics.json would be "
            "replaced: choose another output folder"
        )


def compare_folders(
    run_a: Path,
    run_b: Path,
    by: str,
    output_dir: Path | None = None,
    *,
    resamples: int = compare.RESAMPLES,
    seed: int = 0,
    progress: bool = True,
) -> tuple[dict[str, Any], str]:
    """Compare two trained runs on their (shared) test users, bucketed by ``by``
    (:mod:`mirec.evaluation.compare`); with ``output_dir``, write ``compare.json``,
    ``metrics.json`` and ``compare.png`` there. The buckets come from run A's histories
    (its ``maxlen``) and training popularity; the runs must share dataset, split and test
    users, and their per-user means are their metrics.json test figures. Returns what
    ``compare.json`` holds, and the text table."""
    return compare_folders_by(
        run_a, run_b, {by: output_dir}, resamples=resamples, seed=seed, progress=progress
    )[by]


def compare_folders_by(
    run_a: Path,
    run_b: Path,
    outputs: dict[str, Path | None],
    *,
    resamples: int = compare.RESAMPLES,
    seed: int = 0,
    overrides: tuple[dict[str, Any] | None, dict[str, Any] | None] = (None, None),
    progress: bool = True,
) -> dict[str, tuple[dict[str, Any], str]]:
    """:func:`compare_folders` by every feature of ``outputs`` (feature -> its output
    folder or None), loading and scoring the two runs once, each under its inference-time
    ``overrides`` (the same folder twice compares two of them: the max merge against the
    quota merge, for one)."""
    for output_dir in outputs.values():
        if output_dir is not None:
            _refuse_run_folder(output_dir)
    unknown = [by for by in outputs if by not in compare.FEATURES]
    if unknown:
        raise ConfigError(f"--by {unknown[0]!r}: expected one of {', '.join(compare.FEATURES)}")
    compare.check_bootstrap(resamples, seed)
    (loaded_a, data_a), (loaded_b, data_b) = (
        load_run(run, changes) for run, changes in zip((run_a, run_b), overrides, strict=True)
    )
    config_a, config_b = loaded_a.config, loaded_b.config
    _require_same_test_users(run_a, config_a, data_a, run_b, config_b, data_b)
    users_a, users_b = (
        _test_per_user(loaded, data, progress)
        for loaded, data in ((loaded_a, data_a), (loaded_b, data_b))
    )
    counts = training_item_counts(data_a.sequences, data_a.split.train)
    names = tuple(
        f"{config.model} ({run}" + "".join(f", {k}={v}" for k, v in (changes or {}).items()) + ")"
        for config, run, changes in zip(
            (config_a, config_b), (run_a, run_b), overrides, strict=True
        )
    )
    results = {}
    for by, output_dir in outputs.items():
        feature = compare.user_features(data_a.sequences, data_a.test, counts, by)
        rows = compare.compare_users(users_a, users_b, feature, resamples=resamples, seed=seed)
        result = {
            "dataset": config_a.dataset,
            "split_seed": config_a.split_seed,
            "n_test_users": len(data_a.test),
            "by": by,
            "run_a": _compared_run(run_a, config_a, data_a, overrides[0]),
            "run_b": _compared_run(run_b, config_b, data_b, overrides[1]),
            "buckets_from": f"run A's histories (maxlen {data_a.maxlen}) and training counts",
            "resamples": resamples,
            "seed": seed,
            "confidence": compare.CONFIDENCE,
            "rows": compare.rows_as_dicts(rows),
        }
        if output_dir is not None:
            overall = rows[0]
            write_json_atomic(output_dir / COMPARE_FILE, result)
            identity = ("dataset", "split_seed", "n_test_users", "by", "run_a", "run_b")
            summary = Comparison(
                **{key: result[key] for key in identity},
                test_a=overall.a,
                test_b=overall.b,
                difference=overall.difference,
            )
            write_result(output_dir / METRICS_FILE, summary)
            compare.plot_comparison(rows, by, names, output_dir / COMPARE_PLOT)
        results[by] = (result, compare.format_table(rows, by, names))
    return results


def _compared_run(
    run: Path, config: Config, data: PreparedData, overrides: dict[str, Any] | None
) -> dict[str, Any]:
    """One side of compare.json; its inference-time settings when any were changed."""
    side = {"path": str(run), "model": config.model, "maxlen": data.maxlen}
    return {**side, "inference_settings": overrides} if overrides else side


def _test_per_user(
    loaded: LoadedModel, data: PreparedData, progress: bool
) -> dict[str, np.ndarray]:
    """A run's per-user test metrics, scored as its metrics.json's were."""
    config = loaded.config
    result = evaluate(
        loaded.model,
        data.test,
        device=resolve_device(config.device),
        per_user=True,
        progress=progress,
        **_retrieval_settings(config, data),
    )
    assert result.per_user is not None
    return result.per_user


def _require_same_test_users(
    run_a: Path, a: Config, data_a: PreparedData, run_b: Path, b: Config, data_b: PreparedData
) -> None:
    """Two runs are comparable user by user only on the same test users and targets."""
    for name in ("dataset", "split_seed"):
        if getattr(a, name) != getattr(b, name):
            raise ConfigError(
                f"{run_b}: trained with {name}={getattr(b, name)!r}, but {run_a} with "
                f"{getattr(a, name)!r}; compare needs two runs on the same test users"
            )
    users_a, users_b = (d.sequences.user_ids[d.test.users] for d in (data_a, data_b))
    targets_a, targets_b = (d.sequences.item_ids[d.test.target_items - 1] for d in (data_a, data_b))
    if not (
        np.array_equal(users_a, users_b)
        and np.array_equal(data_a.test.target_offsets, data_b.test.target_offsets)
        and np.array_equal(targets_a, targets_b)
    ):
        raise ConfigError(
            f"{run_b}: its test users or their targets differ from those of {run_a} (the "
            f"dataset {a.dataset!r} changed between the runs?); compare needs the same ones"
        )


def diagnostics_for(
    config: Config, data: PreparedData, split: EvaluationSet, item_category: torch.Tensor | None
) -> Diagnostics:
    """The interest diagnostics of ``split``: tail by training popularity, purity against
    ``item_category`` (the evaluator's), alignment against all the items' categories, and on
    synthetic data the users' planted numbers
    of interests."""
    categories = data.sequences.category_matrix()
    return Diagnostics(
        training_item_counts(data.sequences, data.split.train),
        item_category,
        planted_interest_counts(config.dataset, data.sequences.user_ids[split.users]),
        item_categories=None if categories is None else torch.from_numpy(categories),
    )


def load_run(
    checkpoint: Path, overrides: dict[str, Any] | None = None
) -> tuple[LoadedModel, PreparedData]:
    """A trained run (its config with inference-time ``overrides``, its best weights on the
    configured device in eval mode, its metrics) and its data: the protocol's split of the
    sequences stored in the model folder. No dataset is read."""
    changed = sorted(set(overrides or {}) - set(INFERENCE_SETTINGS))
    if changed:
        raise ConfigError(
            f"--set {changed[0]}: only inference-time settings can change at evaluation "
            f"({', '.join(INFERENCE_SETTINGS)}); retrain to change the others"
        )
    loaded = load_model(checkpoint, overrides)
    if loaded.config.task != "retrieval":
        raise ConfigError(
            f"{checkpoint}: a {loaded.config.task} run; evaluate, diagnose and inspect read "
            "retrieval checkpoints (a CTR run's test AUC, GAUC and LogLoss are in its "
            "metrics.json)"
        )
    config, folder = loaded.config, loaded.data
    folder.require_histories("re-scoring the protocol's validation and test users")
    data = split_sequences(config.dataset, folder.sequences, config.split_seed, folder.maxlen)
    return loaded, data


def _retrieval_settings(config: Config, data: PreparedData) -> dict[str, Any]:
    """Item categories (for Diversity@N), the diversity-controllable aggregation's lambda and
    the quota merge's alpha and half-life."""
    category = data.sequences.primary_category()
    return {
        "item_category": None if category is None else torch.from_numpy(category),
        "diversity_lambda": config.diversity_lambda,
        "quota_alpha": config.quota_alpha,
        "quota_half_life": config.quota_half_life,
    }


def _run_header(
    config: Config, data: PreparedData, model: torch.nn.Module, processes: int = 1
) -> RunHeader:
    """What was run, on what, and how (:class:`~mirec.results.RunHeader`)."""
    split = data.split
    return RunHeader(
        dataset=config.dataset,
        model=config.model,
        seed=config.seed,
        split_seed=config.split_seed,
        interests=model.num_interests,
        maxlen=data.maxlen,
        n_users=data.sequences.n_users,
        n_items=data.sequences.n_items,
        n_interactions=data.sequences.n_interactions,
        n_train_users=len(split.train),
        n_valid_users=len(split.valid),
        n_test_users=len(split.test),
        device=str(resolve_device(config.device)),
        processes=processes,
        threads=torch.get_num_threads(),
        mirec_version=__version__,
    )
