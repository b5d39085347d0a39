"""One training or evaluation run, end to end: data, model, fit, test, ``metrics.json``.

An output directory is a model folder (:mod:`mirec.models.folder`): ``config.yaml`` (the
resolved settings: training again from it repeats the run), ``model.safetensors`` (the best
weights on validation), ``model.json``, ``items.parquet`` and ``users.parquet`` (what loading
and recommending need, with no dataset present), and ``metrics.json`` (the figures,
machine-readable).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from mirec import __version__
from mirec.atomic import write_json_atomic
from mirec.config import Config
from mirec.core.device import resolve_device
from mirec.data.ctr_samples import prepare_ctr
from mirec.data.examples import EvaluationSet, training_item_counts
from mirec.data.prepare import PreparedData, cache_dir, prepare, split_sequences
from mirec.data.synthetic import planted_interest_counts
from mirec.errors import ConfigError
from mirec.evaluation.diagnostics import Diagnostics
from mirec.evaluation.evaluator import EvaluationResult, evaluate
from mirec.models.folder import load_model, write_config, write_folder_data
from mirec.models.registry import build_ctr_model, build_model
from mirec.training.ctr_trainer import RowBatches, evaluate_ctr, fit_ctr
from mirec.training.trainer import FitResult, fit

METRICS_FILE = "metrics.json"
INFERENCE_SETTINGS = ("adaptive_k", "diversity_lambda", "device")
"""Settings ``mirec evaluate --set`` may change: they act at inference, not in training."""
EVALUATION_DIR = "evaluation"
"""Where ``mirec evaluate`` writes inside the checkpoint when no output folder is given."""


def prepare_for(config: Config, data_dir: Path | None = None) -> PreparedData:
    return prepare(
        config.dataset,
        data_dir=data_dir,
        format=config.format,
        columns=config.columns,
        sep=config.sep,
        split_seed=config.split_seed,
        maxlen=config.maxlen,
        id_type=config.id_type,
    )


def train_run(
    config: Config, output_dir: Path, *, data_dir: Path | None = None, progress: bool = True
) -> dict[str, Any]:
    """Train ``config`` and test the best checkpoint; returns what ``metrics.json`` holds."""
    if config.task not in TASKS:
        raise ConfigError(f"unknown task {config.task!r}; known: {', '.join(TASKS)}")
    data = prepare_for(config, data_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    # results of an earlier run in this folder must never pass for this one's
    (output_dir / METRICS_FILE).unlink(missing_ok=True)
    write_config(output_dir, config)
    counts = training_item_counts(data.sequences, data.split.train)
    write_folder_data(output_dir, config, data.sequences, counts, data.maxlen)
    torch.manual_seed(config.seed)  # the initial weights are part of a repeatable run
    if config.task == "ctr":
        return _train_ctr(config, data, output_dir, progress)
    model = build_model(config, data.sequences.n_items, data.maxlen, data.sequences.user_profiles())
    result = fit(model, data, config, output_dir, progress=progress)
    settings = _retrieval_settings(config, data)
    test = evaluate(
        model,
        data.test,
        device=resolve_device(config.device),
        progress=progress,
        diagnostics=diagnostics_for(config, data, data.test, settings["item_category"]),
        **settings,
    )
    metrics = {
        **_run_header(config, data, model),
        "valid": result.best_valid,
        "test": test.metrics,
        "collapse": test.collapse,
        "interest_counts": test.interest_counts,
        "diagnostics": test.diagnostics,
        **_fit_fields(result),
        "negatives": result.negatives,
        "eval_users_per_second": round(test.users_per_second, 1),
        "history": result.history,
        "config": config.to_dict(),
    }
    write_json_atomic(output_dir / METRICS_FILE, metrics)
    return metrics


TASKS = ("retrieval", "ctr")


def _fit_fields(result: FitResult) -> dict[str, Any]:
    """How training went, as metrics.json reports it."""
    return {
        "epochs": result.epochs,
        "best_epoch": result.best_epoch,
        "stopped_by": result.stopped_by,
        "train_seconds": round(result.train_seconds, 3),
        "train_examples_per_second": round(result.examples_per_second, 1),
    }


def _train_ctr(
    config: Config, data: PreparedData, output_dir: Path, progress: bool
) -> dict[str, Any]:
    """The CTR half of :func:`train_run`: stored evaluation rows, BCE training, AUC/GAUC."""
    ctr = prepare_ctr(data, config.ctr_negatives, cache_dir())
    model = build_ctr_model(config, ctr.sequences, ctr.maxlen)
    result = fit_ctr(model, ctr, config, output_dir, progress=progress)
    test = evaluate_ctr(model, ctr.test, RowBatches(ctr, resolve_device(config.device)))
    metrics = {
        "task": "ctr",
        **_run_header(config, data, model),
        "negatives_per_positive": ctr.negatives,
        "n_valid_rows": len(ctr.valid),
        "n_test_rows": len(ctr.test),
        "valid": result.best_valid,
        "test": test,
        **_fit_fields(result),
        "history": result.history,
        "config": config.to_dict(),
    }
    write_json_atomic(output_dir / METRICS_FILE, metrics)
    return metrics


def evaluate_checkpoint(
    checkpoint: Path,
    output_dir: Path | None = None,
    *,
    mask_history: bool = False,
    overrides: dict[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Re-evaluate a trained run's best weights on its validation and test users.

    ``overrides`` changes inference-time settings only (``INFERENCE_SETTINGS``: adaptive K,
    the diversity-controllable aggregation, the device), so one trained model can be
    scored under several of them; the settings used are recorded in metrics.json."""
    config, data, model = load_checkpoint(checkpoint, overrides)
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
    metrics = {
        **_run_header(config, data, model),
        "history_masked": mask_history,
        "inference_settings": {key: getattr(config, key) for key in INFERENCE_SETTINGS},
        "valid": results["valid"].metrics,
        "test": results["test"].metrics,
        "collapse": results["test"].collapse,
        "interest_counts": results["test"].interest_counts,
        "diagnostics": results["test"].diagnostics,
        "eval_users_per_second": round(results["test"].users_per_second, 1),
        **_training_summary(checkpoint),
        "config": config.to_dict(),
    }
    write_json_atomic((output_dir or checkpoint / EVALUATION_DIR) / METRICS_FILE, metrics)
    return metrics


TRAINING_FIELDS = ("epochs", "best_epoch", "stopped_by", "train_seconds", "negatives")


def _training_summary(checkpoint: Path) -> dict[str, Any]:
    """How the checkpoint was trained, from its own metrics.json (empty when it has none),
    so a re-evaluation's metrics.json describes the model it scored."""
    path = checkpoint / METRICS_FILE
    if not path.is_file():
        return {}
    trained = json.loads(path.read_text())
    return {key: trained[key] for key in TRAINING_FIELDS if key in trained}


def diagnostics_for(
    config: Config, data: PreparedData, split: EvaluationSet, item_category: torch.Tensor | None
) -> Diagnostics:
    """The interest diagnostics of ``split``: tail by training popularity, purity against
    ``item_category`` (the evaluator's), and on synthetic data the users' planted numbers
    of interests."""
    return Diagnostics(
        training_item_counts(data.sequences, data.split.train),
        item_category,
        planted_interest_counts(config.dataset, data.sequences.user_ids[split.users]),
    )


def load_checkpoint(
    checkpoint: Path, overrides: dict[str, Any] | None = None
) -> tuple[Config, PreparedData, torch.nn.Module]:
    """A trained run's config (with inference-time ``overrides``), its data (the protocol's
    split of the sequences stored in the model folder) and its best weights, on the
    configured device in eval mode. No dataset is read."""
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
    data = split_sequences(config.dataset, folder.sequences, config.split_seed, folder.maxlen)
    return config, data, loaded.model


def _retrieval_settings(config: Config, data: PreparedData) -> dict[str, Any]:
    """Item categories (for Diversity@N) and the diversity-controllable aggregation's lambda."""
    category = data.sequences.primary_category()
    return {
        "item_category": None if category is None else torch.from_numpy(category),
        "diversity_lambda": config.diversity_lambda,
    }


def _run_header(config: Config, data: PreparedData, model: torch.nn.Module) -> dict[str, Any]:
    split = data.split
    return {
        "dataset": config.dataset,
        "model": config.model,
        "seed": config.seed,
        "split_seed": config.split_seed,
        # K as built: single-interest models have 1 (DIN: one target-attended vector)
        "interests": model.num_interests,
        "maxlen": data.maxlen,
        "n_users": data.sequences.n_users,
        "n_items": data.sequences.n_items,
        "n_interactions": data.sequences.n_interactions,
        "n_train_users": len(split.train),
        "n_valid_users": len(split.valid),
        "n_test_users": len(split.test),
        "device": str(resolve_device(config.device)),
        "mirec_version": __version__,
    }
