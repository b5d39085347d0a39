"""PNG figures of an experiment, drawn with matplotlib from its finished cells.

Each entry of ``plots:`` in the experiment file gives one figure per dataset:

- ``x`` a numeric grid setting (``num_interests``): one line per model, the mean over seeds
  with the standard deviation as error bars. ``mark: diminishing_returns`` marks, on the
  first ``y``, each line's point of diminishing returns: the first x after which no step
  raises ``y`` by more than ``threshold`` of its value (default 0.02, i.e. 2%).
- ``x: model``: bars, one per row of the experiment, one panel per ``y``.
- ``x`` a quantity (``diversity@50``): one curve per model through its grid variants, each
  point labelled with its setting (the diversity-accuracy trade-off).

``y`` is a quantity or a list of them. A quantity is a grid setting, a test metric
(``recall@50``), a field of the run (``collapse``, ``train_seconds``) or a diagnostic
(``effective_interests``, ``nmi``), looked up in that order.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import ticker

from mirec.experiments.grid import Cell, Experiment, slug
from mirec.plotting import plt, save_figure

Done = Sequence[tuple[Cell, dict[str, Any]]]


def quantity(cell: Cell, metrics: dict[str, Any], name: str) -> Any:
    """The value of ``name`` for one finished cell (None when the run has none, such as the
    collapse of a single-interest model)."""
    if name == "model":
        return cell.model
    variant = dict(cell.variant)
    if name in variant:
        return variant[name]
    for source in (metrics.get("test") or {}, metrics, metrics.get("diagnostics") or {}):
        if name in source:
            return source[name]
    return None


def diminishing_returns(ys: Sequence[float], threshold: float) -> int:
    """Index of the first point after which no step gains more than ``threshold`` of the
    current value."""
    for i in range(len(ys)):
        if all(ys[j + 1] - ys[j] <= threshold * abs(ys[j]) for j in range(i, len(ys) - 1)):
            return i
    return len(ys) - 1


def draw_plots(experiment: Experiment, done: Done, folder: Path) -> list[tuple[str, str]]:
    """Draw every figure the experiment asks for into ``folder``; returns (file name, note)
    pairs for the report, the note saying what a marker shows."""
    out: list[tuple[str, str]] = []
    for spec in experiment.plots:
        ys = spec["y"] if isinstance(spec["y"], list) else [spec["y"]]
        for dataset in dict.fromkeys(c.dataset for c in experiment.cells):
            rows = [(c, m) for c, m in done if c.dataset == dataset]
            if not rows:
                continue
            name = f"{slug(dataset)}-{'-'.join(slug(y) for y in ys)}-vs-{slug(spec['x'])}.png"
            x_is_setting = spec["x"] in experiment.grid_keys
            if spec["x"] == "model":
                fig, note = _bars(rows, ys, dataset, experiment.grid_keys)
            elif x_is_setting:
                fig, note = _lines(rows, spec, ys, dataset, experiment.grid_keys)
            else:
                fig, note = _curve(rows, spec, ys[0], dataset, experiment.grid_keys)
            save_figure(fig, folder / name)
            out.append((name, note))
    return out


def _lines(
    rows: Done, spec: dict[str, Any], ys: list[str], dataset: str, keys: tuple[str, ...]
) -> tuple[plt.Figure, str]:
    x = spec["x"]
    fig, axes = plt.subplots(1, len(ys), figsize=(5 * len(ys), 3.8), squeeze=False)
    notes = []
    for ax, y in zip(axes[0], ys, strict=True):
        for label, runs in _series(rows, exclude=(x,), keys=keys).items():
            xs, means, stds = _by_value(runs, x, y)
            if not xs:
                continue
            line = ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=label)
            if spec.get("mark") == "diminishing_returns" and y == ys[0]:
                i = diminishing_returns(means, float(spec.get("threshold", 0.02)))
                ax.plot(xs[i], means[i], marker="*", markersize=16, color=line[0].get_color())
                notes.append(f"{label}: {x}={xs[i]:g} ({y} {means[i]:.4f})")
        if _doubling(rows, x):
            ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({float(quantity(c, m, x)) for c, m in rows}))
        ax.get_xaxis().set_major_formatter(ticker.ScalarFormatter())
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.set_title(f"{dataset}: {y}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    note = ""
    if notes:
        threshold = float(spec.get("threshold", 0.02))
        note = (
            f"★ point of diminishing returns (no later step gains more than {threshold:.0%}): "
            + "; ".join(notes)
        )
    fig.tight_layout()
    return fig, note


def _bars(rows: Done, ys: list[str], dataset: str, keys: tuple[str, ...]) -> tuple[plt.Figure, str]:
    groups = _series(rows, exclude=(), keys=keys)
    fig, axes = plt.subplots(1, len(ys), figsize=(4.5 * len(ys), 4), squeeze=False)
    for ax, y in zip(axes[0], ys, strict=True):
        labels, means, stds = [], [], []
        for label, runs in groups.items():
            values = [float(v) for c, m in runs if (v := quantity(c, m, y)) is not None]
            if values:
                labels.append(label)
                means.append(np.mean(values))
                stds.append(np.std(values, ddof=1) if len(values) > 1 else 0.0)
        ax.bar(range(len(labels)), means, yerr=stds, capsize=3, color="tab:blue", alpha=0.8)
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(y)
        ax.set_title(f"{dataset}: {y}")
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig, ""


def _curve(
    rows: Done, spec: dict[str, Any], y: str, dataset: str, keys: tuple[str, ...]
) -> tuple[plt.Figure, str]:
    x = spec["x"]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    lines = False
    # a curve goes through the first grid key's values; each value of the others (a
    # half-life beside an alpha) is a curve of its own, not a zigzag through them all
    first = keys[:1]
    for label, runs in _series(rows, exclude=first, keys=keys).items():
        variants: dict[str, list] = {}
        for c, m in runs:
            name = ", ".join(f"{k}={v}" for k, v in c.variant if k in first)
            variants.setdefault(name, []).append((c, m))
        points = []
        for variant, members in variants.items():
            xs = [float(v) for c, m in members if (v := quantity(c, m, x)) is not None]
            ys = [float(v) for c, m in members if (v := quantity(c, m, y)) is not None]
            if xs and ys:
                points.append((np.mean(xs), np.mean(ys), variant))
        if not points:
            continue
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
        lines |= len(points) > 1
        # a row of one point (no grid) is named beside it, not in a legend of many rows
        for px, py, variant in points:
            text = variant or label
            ax.annotate(text, (px, py), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(f"{dataset}: {y} against {x}")
    ax.grid(alpha=0.3)
    if lines:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig, ""


def _series(rows: Done, exclude: tuple[str, ...], keys: tuple[str, ...]) -> dict[str, list]:
    """Cells grouped into one series per model and per grid setting not in ``exclude``."""
    out: dict[str, list] = {}
    for cell, metrics in rows:
        rest = [f"{k}={v}" for k, v in cell.variant if k not in exclude and k in keys]
        label = cell.model + (f" ({', '.join(rest)})" if rest else "")
        out.setdefault(label, []).append((cell, metrics))
    return out


def _by_value(runs: list, x: str, y: str) -> tuple[list[float], list[float], list[float]]:
    values: dict[float, list[float]] = {}
    for c, m in runs:
        v = quantity(c, m, y)
        if v is not None:
            values.setdefault(float(quantity(c, m, x)), []).append(float(v))
    xs = sorted(values)
    means = [float(np.mean(values[v])) for v in xs]
    stds = [float(np.std(values[v], ddof=1)) if len(values[v]) > 1 else 0.0 for v in xs]
    return xs, means, stds


def _doubling(rows: Done, x: str) -> bool:
    """True when the x values are powers of two (K in 1, 2, 4, 8): a log2 axis spaces them."""
    values = {quantity(c, m, x) for c, m in rows}
    return all(isinstance(v, int) and v > 0 and v & (v - 1) == 0 for v in values)
