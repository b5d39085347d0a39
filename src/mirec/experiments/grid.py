"""An experiment: a grid of runs (datasets x models x settings x seeds) under docs/protocol.md.

The grid is a YAML file::

    name: results
    report: docs/results.md            # the generated report (results.csv beside it)
    runs_dir: runs/results             # one folder per cell: config, weights, metrics.json
    datasets: [amazon-beauty, ml-100k]
    models:                            # published configs, or a labelled row of settings
      - comirec-sa
      - mind
      - {label: mind + disagreement, model: mind, settings: {regularizer: "disagreement:1"}}
      - {model: gru4rec, datasets: [ml-100k]}   # a row on some of the datasets only
    settings: {max_train_minutes: 8}   # applied to every cell (``--set``)
    dataset_settings:                  # applied to one dataset's cells, over ``settings``
      taobao-sample: {patience: 10}
    grid: {num_interests: [1, 2, 4]}   # every combination is a variant of each model
    seeds: {default: [42], comirec-sa: [42, 7, 2026]}   # or a plain list
    columns: [effective_interests]     # extra table columns: diagnostics, Diversity@N, ...
    plots:                             # PNGs beside the report (see mirec.experiments.plots)
      - {x: num_interests, y: recall@50, mark: diminishing_returns}
    interest_map: {dataset: ml-100k, model: comirec-sa, user: 1}   # one user's interests in 2-D
    compare: {a: sasrec, b: comirec-sa, by: [categories, entropy]}   # mirec compare, per dataset
    choose: {setting: quota_alpha, metric: recall@50}   # a grid value per row, on validation

``choose`` picks, per dataset and row, the grid value of its setting (other than null, the
setting off) with the best mean validation figure; the report shows each row at it beside
the row with the setting unset. A side of ``compare`` (one mapping or a list of them) is a
row's name, or ``{row: NAME, variant: {KEY: VALUE}}`` (a value of every grid key), or
``{row: NAME, variant: chosen}``; two sides on one row compare the same weights under two
inference-time settings.

A grid over inference-time settings (``diversity_lambda``, ``adaptive_k``) trains once: the
cells that differ only in them share one trained checkpoint and each is a re-evaluation of
it, kept in its own ``evaluation-KEY=VALUE`` folder inside the checkpoint.

Relative paths are taken from the current directory. A cell is finished when its folder
holds a ``metrics.json`` written from the same resolved config; finished cells are never
rerun and an interrupted cell continues from its last finished epoch, so an interrupted
experiment resumes where it stopped.

A cell whose settings are impossible (``grid: {num_interests: [0, 4]}``: K = 0) is kept
aside as an :class:`ImpossibleCell` with its message, and the rest of the grid runs; the
runner reports it as failed. When no cell of a file can be configured at all (a misspelt
setting in ``settings``, an unknown model in the only row), the file itself is refused.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mirec.config import (
    AUTO_CANDIDATES,
    AUTO_CANDIDATES_DIR,
    AUTO_MODEL,
    load_config,
    load_yaml,
    yaml_problem,
)
from mirec.core.config import INFERENCE_SETTINGS, Config
from mirec.errors import ConfigError
from mirec.evaluation.compare import FEATURES as COMPARE_FEATURES
from mirec.evaluation.metrics import CUTOFFS
from mirec.models.build import check_components
from mirec.models.folder import EVALUATION_DIR

KEYS = {
    "name",
    "description",
    "report",
    "runs_dir",
    "datasets",
    "models",
    "settings",
    "dataset_settings",
    "grid",
    "seeds",
    "plots",
    "columns",
    "interest_map",
    "compare",
    "choose",
}


@dataclass(frozen=True)
class Cell:
    """One run of the grid."""

    dataset: str
    model: str
    """The row's label: the published config's name, or the label given in the file."""
    variant: tuple[tuple[str, Any], ...]
    """The grid settings of this cell, in grid order (empty without a grid)."""
    seed: int
    config: Config
    run_dir: Path
    """Where the cell's metrics.json is."""
    checkpoint: Path
    """The trained run the cell evaluates: ``run_dir`` itself, or, for a cell of
    inference-time settings, the shared training run they are evaluated on."""
    train_config: Config
    """The checkpoint's config: ``config`` without the inference-time grid settings."""
    candidates: tuple[tuple[Config, Path], ...] = ()
    """A row of model ``auto`` (:mod:`mirec.auto`): each candidate's config and folder, the
    folder of the grid's own row of that model when it has one with the same settings (so
    nothing trains twice); ``config`` is then the first candidate's."""

    @property
    def reevaluates(self) -> bool:
        """True when the cell re-evaluates a checkpoint shared with other cells."""
        return self.run_dir != self.checkpoint

    @property
    def inference_settings(self) -> dict[str, Any]:
        return {k: v for k, v in self.variant if k in INFERENCE_SETTINGS}

    @property
    def variant_label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.variant)


@dataclass(frozen=True)
class ImpossibleCell:
    """A cell of the grid whose settings no run can have, and why."""

    dataset: str
    model: str
    variant: tuple[tuple[str, Any], ...]
    seed: int
    run_dir: Path
    error: str

    @property
    def variant_label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.variant)


@dataclass(frozen=True)
class Row:
    """One entry of ``models:``: a published config, the settings the row adds to it, and
    the datasets it runs on (None: all of the grid's)."""

    model: str
    settings: dict[str, Any]
    datasets: tuple[str, ...] | None = None


@dataclass
class Experiment:
    name: str
    report: Path
    runs_dir: Path
    cells: list[Cell] = field(default_factory=list)
    description: str = ""
    grid_keys: tuple[str, ...] = ()
    plots: list[dict[str, Any]] = field(default_factory=list)
    columns: tuple[str, ...] = ()
    """Quantities shown in the report's tables beside the standard metrics."""
    interest_map: dict[str, Any] | None = None
    compare: tuple[dict[str, Any], ...] = ()
    """Comparisons of side ``b`` against side ``a`` bucket by bucket on each dataset
    (``mirec compare``), by every feature of ``by``, on their first shared seed; a side is a
    row, or a row under one variant of the grid (:func:`_compare_side`)."""
    choose: dict[str, str] | None = None
    """``{"setting": KEY, "metric": METRIC}``: the report's "Chosen on validation" section (the
    grid value of KEY each row takes on each dataset by validation METRIC; :func:`_choose`)."""
    impossible: list[ImpossibleCell] = field(default_factory=list)
    """Cells whose settings failed validation; they are reported, never run."""


TEXT_KEYS = ("name", "description", "report", "runs_dir")
"""The keys whose value is one text (a path, for report and runs_dir)."""
MAX_CELLS = 10_000
"""The most cells one experiment file may have (docs/results.md's grid has 132)."""


def load_experiment(path: Path) -> Experiment:
    """Parse an experiment file into its cells; every cell's config is resolved (and so
    checked) before anything runs."""
    if not path.is_file():
        raise ConfigError(f"{path}: experiment file does not exist")
    try:
        spec = load_yaml(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: {yaml_problem(err)}") from err
    if not isinstance(spec, dict):
        raise ConfigError(f"{path}: expected a mapping")
    unknown = sorted(set(spec) - KEYS)
    if unknown:
        raise ConfigError(
            f"{path}: unknown key {unknown[0]!r}; keys are: {', '.join(sorted(KEYS))}"
        )
    for key in TEXT_KEYS:  # a list or a mapping here was a TypeError from pathlib
        if spec.get(key) is not None and not isinstance(spec[key], str):
            raise ConfigError(f"{path}: {key}: expected a text, got {type(spec[key]).__name__}")
    name = str(spec.get("name") or path.stem)
    datasets = _string_list(spec, "datasets", path)
    rows = _model_rows(spec.get("models"), datasets, path)
    models = list(rows)
    settings = _mapping(spec, "settings", path)
    per_dataset = _mapping(spec, "dataset_settings", path)
    for dataset, values in per_dataset.items():
        if dataset not in datasets or not isinstance(values, dict):
            raise ConfigError(
                f"{path}: dataset_settings.{dataset}: expected settings of a dataset of the grid"
            )
    grid = _mapping(spec, "grid", path)
    if grid and any(row.model == AUTO_MODEL for row in rows.values()):
        raise ConfigError(f"{path}: models: {AUTO_MODEL} takes no grid (it picks among runs)")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{path}: grid.{key}: expected a non-empty list of values")
        _refuse_repeats(values, f"grid.{key}", path)
    seeds = _seeds(spec.get("seeds", [42]), models, path)
    # counted before any cell's config is built (a million cells took longer than an hour
    # to build, then would have trained for years)
    cells = len(datasets) * len(models) * math.prod(len(v) for v in grid.values())
    cells *= max(len(s) for s in seeds.values())
    if cells > MAX_CELLS:
        raise ConfigError(
            f"{path}: {cells:,} cells (datasets x models x grid x seeds); at most "
            f"{MAX_CELLS:,} in one file: split the grid into several files"
        )
    runs_dir = Path(spec.get("runs_dir") or f"runs/{name}")
    choose = _choose(spec.get("choose"), grid, path)
    experiment = Experiment(
        name=name,
        report=Path(spec.get("report") or runs_dir / "report.md"),
        runs_dir=runs_dir,
        description=str(spec.get("description") or "").strip(),
        grid_keys=tuple(grid),
        plots=_plots(spec.get("plots"), path),
        columns=tuple(_string_list(spec, "columns", path)) if "columns" in spec else (),
        interest_map=_interest_map(spec.get("interest_map"), datasets, models, path),
        compare=_compare(spec.get("compare"), models, grid, choose, path),
        choose=choose,
    )
    combos = list(itertools.product(*grid.values())) or [()]
    # the first seed of every (dataset, model, variant) runs before anyone's second seed, so
    # an interrupted grid has one figure for each row before it has spreads
    rounds = max(len(s) for s in seeds.values())
    for rank in range(rounds):
        for dataset, model, combo in itertools.product(datasets, models, combos):
            row = rows[model]
            if rank >= len(seeds[model]) or dataset not in (row.datasets or datasets):
                continue
            seed, variant = seeds[model][rank], tuple(zip(grid, combo, strict=True))
            published, own = row.model, row.settings
            trained = tuple((k, v) for k, v in variant if k not in INFERENCE_SETTINGS)
            base = {**settings, **per_dataset.get(dataset, {}), **own}
            base.update(dataset=dataset, seed=seed)
            folder = runs_dir / slug(dataset) / slug(model)
            for key, value in trained:
                folder = folder / slug(f"{key}={value}")
            checkpoint = folder / f"seed-{seed}"
            run_dir = checkpoint
            if len(trained) < len(variant):
                label = ",".join(f"{k}={v}" for k, v in variant if k in INFERENCE_SETTINGS)
                run_dir = checkpoint / slug(f"{EVALUATION_DIR}-{label}")
            candidates: tuple[tuple[Config, Path], ...] = ()
            try:
                if published == AUTO_MODEL:
                    candidates = _auto_candidates(rows, model, base, runs_dir / slug(dataset), seed)
                    config = train_config = candidates[0][0]
                else:
                    config = load_config(published, fixed={**base, **dict(variant)})
                    train_config = load_config(published, fixed={**base, **dict(trained)})
                for checked, _ in candidates or ((config, run_dir),):
                    check_components(checked)
            except ConfigError as err:
                experiment.impossible.append(
                    ImpossibleCell(dataset, model, variant, seed, run_dir, str(err))
                )
                continue
            experiment.cells.append(
                Cell(
                    dataset,
                    model,
                    variant,
                    seed,
                    config,
                    run_dir,
                    checkpoint,
                    train_config,
                    candidates,
                )
            )
    if not experiment.cells:
        first = experiment.impossible[0]
        raise ConfigError(f"{path}: cell {first.dataset}/{first.model}: {first.error}")
    return experiment


def _auto_candidates(
    rows: dict[str, Row],
    label: str,
    settings: dict[str, Any],
    dataset_dir: Path,
    seed: int,
) -> tuple[tuple[Config, Path], ...]:
    """The candidates of the ``auto`` row ``label``: a candidate trains in the folder of the
    grid's row of the same name when that row is the plain published config and the auto
    row adds no settings of its own, else in the row's own ``candidates/NAME``."""
    candidates = []
    own = rows[label].settings
    for name in AUTO_CANDIDATES:
        plain = rows.get(name)
        shared = not own and plain is not None and (plain.model, plain.settings) == (name, {})
        own_folder = dataset_dir / slug(label) / AUTO_CANDIDATES_DIR / slug(name)
        folder = dataset_dir / slug(name) if shared else own_folder
        candidates.append((load_config(name, fixed=settings), folder / f"seed-{seed}"))
    return tuple(candidates)


def _plots(value: Any, path: Path) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(
        isinstance(p, dict) and "x" in p and "y" in p for p in value
    ):
        raise ConfigError(f"{path}: plots: expected a list of mappings with x: and y:")
    return value


def _interest_map(
    value: Any, datasets: list[str], models: list[str], path: Path
) -> dict[str, Any] | None:
    value = _keyed(value, "interest_map", {"dataset", "model", "user"}, path)
    if value is None:
        return None
    if value["dataset"] not in datasets or value["model"] not in models:
        raise ConfigError(f"{path}: interest_map: dataset and model must be in the grid")
    return value


def _keyed(value: Any, key: str, keys: set[str], path: Path) -> dict[str, Any] | None:
    """``value`` of the file's ``key``: None, or a mapping of exactly ``keys``."""
    if value is not None and (not isinstance(value, dict) or set(value) != keys):
        raise ConfigError(f"{path}: {key}: expected {{{', '.join(sorted(keys))}}}")
    return value


def _compare(
    value: Any, models: list[str], grid: dict[str, list], choose: dict[str, str] | None, path: Path
) -> tuple[dict[str, Any], ...]:
    """``compare:``, one comparison or a list of them, each side normalised to
    ``{"row": label, "variant": None | "chosen" | ((key, value), ...)}`` (:class:`Experiment`)."""
    if value is None:
        return ()
    specs = []
    for item in value if isinstance(value, list) else [value]:
        item = _keyed(item, "compare", {"a", "b", "by"}, path)
        assert item is not None
        by = item["by"] if isinstance(item["by"], list) else [item["by"]]
        unknown = [name for name in by if name not in COMPARE_FEATURES]
        if unknown or not by:
            raise ConfigError(
                f"{path}: compare.by: {unknown[0] if unknown else '[]'!r}; expected some of "
                f"{', '.join(COMPARE_FEATURES)}"
            )
        sides = {side: _compare_side(item[side], models, grid, choose, path) for side in "ab"}
        specs.append({**sides, "by": by})
    return tuple(specs)


def _compare_side(
    value: Any, models: list[str], grid: dict[str, list], choose: dict[str, str] | None, path: Path
) -> dict[str, Any]:
    """One side of a comparison: a row's name (its cells without grid settings), or
    ``{row: NAME, variant: {KEY: VALUE, ...}}`` naming a value of every grid key, or
    ``{row: NAME, variant: chosen}``: the row's variant chosen on validation (``choose:``)."""
    if not isinstance(value, dict):
        if value not in models:
            raise ConfigError(f"{path}: compare: a and b must be rows of the experiment's models")
        return {"row": value, "variant": None}
    value = _keyed(value, "compare side", {"row", "variant"}, path)
    assert value is not None
    if value["row"] not in models:
        raise ConfigError(f"{path}: compare: a and b must be rows of the experiment's models")
    variant = value["variant"]
    if variant == "chosen":
        if choose is None:
            raise ConfigError(f"{path}: compare: variant chosen needs a choose: key")
        return {"row": value["row"], "variant": "chosen"}
    if not isinstance(variant, dict) or set(variant) != set(grid):
        raise ConfigError(
            f"{path}: compare: variant: expected chosen or a value of each grid key "
            f"({', '.join(grid) or 'none'})"
        )
    for key, chosen in variant.items():
        if chosen not in grid[key]:
            raise ConfigError(f"{path}: compare: variant {key}={chosen!r} is not in the grid")
    return {"row": value["row"], "variant": tuple((key, variant[key]) for key in grid)}


def _choose(value: Any, grid: dict[str, list], path: Path) -> dict[str, str] | None:
    """``choose: {setting: KEY, metric: METRIC}``: per dataset and row, the report picks the value
    of the grid key ``KEY`` (its null value aside: the setting off, the baseline) with the
    highest mean validation ``METRIC`` over the seeds (:class:`Experiment`)."""
    value = _keyed(value, "choose", {"setting", "metric"}, path)
    if value is None:
        return None
    if value["setting"] not in grid:
        raise ConfigError(f"{path}: choose.setting: {value['setting']!r} is not a grid key")
    if not any(v is not None for v in grid[value["setting"]]):
        raise ConfigError(f"{path}: choose.setting: grid.{value['setting']} has no value to choose")
    # higher is better for each of these (not for a CTR log loss, say)
    chosen_on = [f"{name}@{n}" for name in ("recall", "ndcg", "hitrate") for n in CUTOFFS]
    if value["metric"] not in chosen_on:
        raise ConfigError(
            f"{path}: choose.metric: {value['metric']!r}; expected one of {', '.join(chosen_on)}"
        )
    return {"setting": value["setting"], "metric": value["metric"]}


def slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.=" else "_" for c in text)


def _string_list(spec: dict, key: str, path: Path) -> list[str]:
    values = spec.get(key)
    if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
        raise ConfigError(f"{path}: {key}: expected a non-empty list of names")
    _refuse_repeats(values, key, path)
    return values


def _refuse_repeats(values: list, where: str, path: Path) -> None:
    """A ConfigError naming the first value ``values`` holds twice: two cells of one
    folder (the second a rerun of the first), or a dataset's rows twice in the report."""
    seen: set[str] = set()
    for value in values:
        key = repr(value)
        if key in seen:
            raise ConfigError(f"{path}: {where}: {value!r} appears twice")
        seen.add(key)


def _model_rows(entries: Any, datasets: list[str], path: Path) -> dict[str, Row]:
    """``models:`` -> {label: its row}, in file order."""
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: models: expected a non-empty list of names")
    rows: dict[str, Row] = {}
    for entry in entries:
        if isinstance(entry, str):
            label, row = entry, Row(entry, {})
        elif isinstance(entry, dict) and set(entry) <= {"label", "model", "settings", "datasets"}:
            model, own = entry.get("model"), entry.get("settings") or {}
            if not isinstance(model, str) or not isinstance(own, dict):
                raise ConfigError(f"{path}: models: {entry!r} needs model: NAME, settings: {{}}")
            label = str(entry.get("label") or model)
            row = Row(model, own, _row_datasets(entry.get("datasets"), datasets, label, path))
        else:
            raise ConfigError(
                f"{path}: models: {entry!r} is neither a name nor a mapping of label, model, "
                "settings, datasets"
            )
        if label in rows:
            raise ConfigError(f"{path}: models: the row {label!r} appears twice")
        rows[label] = row
    return rows


def _row_datasets(
    value: Any, datasets: list[str], label: str, path: Path
) -> tuple[str, ...] | None:
    """A row's ``datasets:``: None (all of the grid's), or some of the grid's datasets."""
    if value is None:
        return None
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(v, str) and v in datasets for v in value)
    ):
        raise ConfigError(
            f"{path}: models: {label}: datasets: expected a non-empty list of the grid's "
            f"datasets ({', '.join(datasets)})"
        )
    return tuple(value)


def _mapping(spec: dict, key: str, path: Path) -> dict[str, Any]:
    value = spec.get(key) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: {key}: expected a mapping of setting -> value")
    return value


def _seeds(value: Any, models: list[str], path: Path) -> dict[str, list[int]]:
    def check(seeds: Any, where: str) -> list[int]:
        if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
            raise ConfigError(f"{path}: {where}: expected a non-empty list of integer seeds")
        _refuse_repeats(seeds, where, path)
        return seeds

    if isinstance(value, list):
        return dict.fromkeys(models, check(value, "seeds"))
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: seeds: expected a list or a mapping model -> list")
    if "default" in models:
        raise ConfigError(
            f"{path}: seeds: a row labelled 'default' cannot have seeds of its own, since "
            "seeds.default means every other row; give the row another label"
        )
    extra = sorted(set(value) - {"default", *models})
    if extra:
        raise ConfigError(f"{path}: seeds: {extra[0]!r} is not one of the experiment's models")
    default = check(value.get("default", [42]), "seeds.default")
    return {m: check(value[m], f"seeds.{m}") if m in value else default for m in models}
