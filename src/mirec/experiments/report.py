"""An experiment's report: ``results.csv`` (one row per finished cell) and a Markdown table
per dataset with the mean and sample standard deviation over seeds."""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mirec.atomic import write_text_atomic
from mirec.errors import MirecError
from mirec.experiments.grid import Cell, Experiment, slug
from mirec.experiments.plots import draw_plots, quantity
from mirec.experiments.runner import cell_result

RETRIEVAL_METRICS = ["recall@20", "recall@50", "ndcg@20", "ndcg@50", "hitrate@20", "hitrate@50"]
CTR_METRICS = ["auc", "gauc", "logloss"]
METRICS = RETRIEVAL_METRICS + CTR_METRICS
COLUMNS = [
    ("dataset", lambda c, m: c.dataset),
    ("model", lambda c, m: c.model),
    ("variant", lambda c, m: c.variant_label),
    ("seed", lambda c, m: c.seed),
    ("task", lambda c, m: m.get("task", "retrieval")),
    ("interests", lambda c, m: m["interests"]),
    *((f"test_{name}", (lambda key: lambda c, m: m["test"].get(key))(name)) for name in METRICS),
    ("collapse", lambda c, m: m.get("collapse")),
    ("epochs", lambda c, m: m["epochs"]),
    ("best_epoch", lambda c, m: m["best_epoch"]),
    ("stopped_by", lambda c, m: m["stopped_by"]),
    ("train_seconds", lambda c, m: train_seconds(m)),
    ("run_dir", lambda c, m: str(c.run_dir)),
    ("chosen", lambda c, m: (m.get("auto") or {}).get("chosen")),
]


def train_seconds(metrics: dict[str, Any]) -> float:
    """A run's training time; for model auto, every candidate's together (its cost)."""
    return (metrics.get("auto") or {}).get("train_seconds", metrics["train_seconds"])


def results_csv(experiment: Experiment) -> Path:
    """``results.csv`` beside a ``report.md`` in its own folder; ``NAME.csv`` beside any
    other ``NAME.md``, so two reports can share a folder (docs/results.md, docs/ctr.md)."""
    report = experiment.report
    return report.with_name("results.csv" if report.name == "report.md" else f"{report.stem}.csv")


def figure_dir(experiment: Experiment) -> Path:
    """Where the PNGs go: beside a ``report.md``; in a folder named after any other report
    (docs/ctr.md -> docs/ctr/)."""
    report = experiment.report
    return report.parent if report.name == "report.md" else report.parent / report.stem


def finished(experiment: Experiment) -> list[tuple[Cell, dict[str, Any]]]:
    """Each finished cell with its record as metrics.json lays it out: the report's columns,
    the ones an experiment file names included (``columns: [purity, ...]``), are the
    file's keys."""
    return [(c, r.to_dict()) for c in experiment.cells if (r := cell_result(c)) is not None]


def check_outputs(experiment: Experiment, source: Path) -> None:
    """A MirecError, before any cell runs, when the report, its CSV or the runs folder of
    ``experiment`` (from the file ``source``) cannot be written where the file puts them:
    a folder where the report goes, a file where a folder goes. Before, the grid trained
    every cell and then failed on a temp file's name."""
    for path, what in ((experiment.report, "report"), (results_csv(experiment), "results")):
        if path.is_dir():
            raise MirecError(f"{source}: {what} {path}: is a folder; name a file")
        for parent in path.parents:
            if parent.exists() and not parent.is_dir():
                raise MirecError(f"{source}: {what} {path}: {parent} is a file, not a folder")
    runs = experiment.runs_dir
    for folder in (runs, *runs.parents):
        if folder.exists() and not folder.is_dir():
            raise MirecError(f"{source}: runs_dir {runs}: {folder} is a file, not a folder")


def write_report(experiment: Experiment, command: str) -> tuple[int, int]:
    """Write ``results.csv`` and the Markdown report; returns (finished, total) cells."""
    done = finished(experiment)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([name for name, _ in COLUMNS])
    for cell, metrics in done:
        writer.writerow([get(cell, metrics) for _, get in COLUMNS])
    write_text_atomic(results_csv(experiment), out.getvalue())
    figures = draw_plots(experiment, done, figure_dir(experiment))
    if experiment.interest_map is not None:
        figures += _interest_map(experiment, done)
    # links relative to the report
    prefix = figure_dir(experiment).relative_to(experiment.report.parent)
    figures = [((prefix / name).as_posix(), note) for name, note in figures]
    text = render_markdown(experiment, done, command, figures)
    if experiment.compare is not None:
        text = text.rstrip("\n") + "\n\n" + "\n".join(_comparisons(experiment, done, prefix))
    write_text_atomic(experiment.report, text)
    return len(done), len(experiment.cells)


def _comparisons(
    experiment: Experiment, done: list[tuple[Cell, dict[str, Any]]], prefix: Path
) -> list[str]:
    """The experiment's ``compare``: rows B against A on each dataset's test users, bucket
    by bucket (:func:`mirec.runs.compare_checkpoints_by`, as ``mirec compare`` scores it), on the
    first seed both rows finished; each comparison's compare.json and plot go into the
    figure folder."""
    from mirec.runs import compare_checkpoints_by

    spec = experiment.compare or {}
    lines = [
        f"## {spec['b']} against {spec['a']}, bucket by bucket",
        "",
        f"Each dataset's test users in quartile buckets of a feature of their history "
        f"(`mirec compare`, mirec.evaluation.compare); B = {spec['b']}, A = {spec['a']}, the "
        "first seed both rows finished. B - A is the mean per-user difference with a paired "
        "bootstrap 95% confidence interval (1,000 resamples); bold where the interval "
        "excludes 0.",
        "",
    ]
    for dataset in dict.fromkeys(c.dataset for c in experiment.cells):
        runs = {c.model: {} for c in experiment.cells}
        for cell, _ in done:
            if cell.dataset == dataset and not cell.variant:
                runs[cell.model].setdefault(cell.seed, cell)
        seeds = [s for s in runs.get(spec["a"], {}) if s in runs.get(spec["b"], {})]
        lines += [f"### {dataset}", ""]
        here = {c.model for c in experiment.cells if c.dataset == dataset}
        if not {spec["a"], spec["b"]} <= here:  # a row with datasets: that leave this one out
            lines += ["Not both rows run on this dataset.", ""]
            continue
        if not seeds:
            lines += ["Not both rows finished yet.", ""]
            continue
        a, b = runs[spec["a"]][seeds[0]], runs[spec["b"]][seeds[0]]
        lines += [f"Seed {seeds[0]}.", ""]
        outputs = {
            by: figure_dir(experiment) / slug(f"compare-{dataset}-{by}") for by in spec["by"]
        }
        compared = compare_checkpoints_by(a.checkpoint, b.checkpoint, outputs, progress=False)
        for by, (result, _) in compared.items():
            lines += _comparison_table(result["rows"], by)
            link = (prefix / outputs[by].name / "compare.png").as_posix()
            lines += [f"![{dataset} by {by}]({link})", ""]
    return lines


def _comparison_table(rows: list[dict[str, Any]], by: str) -> list[str]:
    header = f"| {by} | users | Recall@50 A | Recall@50 B | B - A | NDCG@50 A | NDCG@50 B | B - A |"
    lines = [header, "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        cells = [row["bucket"], str(row["users"])]
        for metric in ("recall@50", "ndcg@50"):
            d = row["difference"][metric]
            text = f"{d['mean']:+.4f} [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]"
            if d["ci_low"] > 0 or d["ci_high"] < 0:
                text = f"**{text}**"
            cells += [f"{row['a'][metric]:.4f}", f"{row['b'][metric]:.4f}", text]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def render_markdown(
    experiment: Experiment,
    done: list[tuple[Cell, dict[str, Any]]],
    command: str,
    figures: list[tuple[str, str]] = (),
) -> str:
    lines = [f"# {experiment.name}", ""]
    if experiment.description:
        lines += [experiment.description, ""]
    ctr = all(m.get("task") == "ctr" for _, m in done) and bool(done)
    how = (
        "test users' stored rows (every held-out positive with its sampled negatives, the "
        "same rows for every model; mirec.data.ctr_samples)"
        if ctr
        else "test users, exact scoring over the whole catalogue, interests aggregated as "
        "each model is configured (max over interests unless its config names another "
        "aggregator)"
    )
    lines += [
        f"Generated by `{command}` from the cells' `metrics.json` ({len(done)} of "
        f"{len(experiment.cells)} cells finished); every figure follows docs/protocol.md's user "
        f"split: {how}. Metric cells are the mean ± sample standard deviation over the seeds "
        "shown; † marks rows where at least one seed stopped at the training time limit "
        "instead of by early stopping.",
        "",
    ]
    metrics_shown, headline = (CTR_METRICS, "auc") if ctr else (RETRIEVAL_METRICS, "recall@50")
    header = ["model", *(["variant"] if experiment.grid_keys else []), "K", "seeds"]
    header += [_title(m) for m in metrics_shown]
    header += [*([] if ctr else ["collapse"]), *experiment.columns, "epochs", "train s"]
    for dataset in dict.fromkeys(c.dataset for c in experiment.cells):
        rows = _group([(c, m) for c, m in done if c.dataset == dataset])
        lines += [f"## {dataset}", ""]
        if not rows:
            lines += ["No finished cells yet.", ""]
            continue
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        best = max(_mean([m["test"][headline] for _, m in runs]) for runs in rows.values())
        for (model, variant), runs in rows.items():
            metrics = [m for _, m in runs]
            chosen = Counter(m["auto"]["chosen"] for m in metrics if m.get("auto"))
            picks = ", ".join(f"{name} on {count}" for name, count in chosen.items())
            label = f"{model} (chose {picks} of {len(metrics)} seeds)" if chosen else model
            row = [label, *([variant] if experiment.grid_keys else [])]
            row += [str(metrics[0]["interests"]), ",".join(str(c.seed) for c, _ in runs)]
            for name in metrics_shown:
                text = _spread([m["test"][name] for m in metrics])
                if name == headline and _mean([m["test"][name] for m in metrics]) == best:
                    text = f"**{text}**"
                row.append(text)
            if not ctr:
                collapses = [m["collapse"] for m in metrics if m["collapse"] is not None]
                row.append(_spread(collapses, 3) if collapses else "—")
            for name in experiment.columns:
                values = [float(v) for c, m in runs if (v := quantity(c, m, name)) is not None]
                row.append(_spread(values, 3) if values else "—")
            epochs = _spread([m["epochs"] for m in metrics], 1)
            capped = any(m.get("stopped_by") == "time_limit" for m in metrics)
            row.append(epochs + (" †" if capped else ""))
            row.append(_spread([train_seconds(m) for m in metrics], 0))
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    lines += _k_confusion(experiment, done)
    if figures:
        lines += ["## Figures", ""]
        for name, note in figures:
            lines += [f"![{name}]({name})", ""] + ([note, ""] if note else [])
    if experiment.impossible:
        lines += ["## Impossible cells", "", "Their settings fail validation; they never run.", ""]
        lines += [
            f"- {c.dataset} / {c.model}"
            + (f" [{c.variant_label}]" if c.variant else "")
            + f" seed {c.seed}: {c.error}"
            for c in experiment.impossible
        ]
        lines.append("")
    pending = [c for c in experiment.cells if all(c is not d for d, _ in done)]
    if pending:
        lines += ["## Not yet run", ""]
        lines += [
            f"- {c.dataset} / {c.model}"
            + (f" [{c.variant_label}]" if c.variant else "")
            + f" seed {c.seed}"
            for c in pending
        ]
        lines.append("")
    return "\n".join(lines)


def _k_confusion(experiment: Experiment, done: list[tuple[Cell, dict[str, Any]]]) -> list[str]:
    """Users by planted K (rows) and the K'_u the model kept (columns), first seed of each
    row, where the data has planted interests (synthetic)."""
    tables = [
        (cell, m["diagnostics"]["k_confusion"])
        for cell, m in done
        if (m.get("diagnostics") or {}).get("k_confusion")
    ]
    if not tables:
        return []
    chosen = sorted({int(c) for _, t in tables for row in t.values() for c in row})
    lines = [
        "## Planted number of interests against K'_u",
        "",
        "Users of the test split by their planted number of interests and the number of "
        "interests the model kept for them (first seed of each row).",
        "",
        "| dataset | model | variant | planted K | " + " | ".join(f"K'={c}" for c in chosen) + " |",
        "|" + "---|" * (4 + len(chosen)),
    ]
    seen: set[tuple[str, str, str]] = set()
    for cell, table in tables:
        key = (cell.dataset, cell.model, cell.variant_label)
        if key in seen:
            continue
        seen.add(key)
        for planted, row in sorted(table.items(), key=lambda kv: int(kv[0])):
            counts = {int(c): n for c, n in row.items()}
            cells = [str(counts.get(c, 0)) for c in chosen]
            lines.append(f"| {' | '.join(key)} | {planted} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _group(done: Sequence[tuple[Cell, dict]]) -> dict[tuple[str, str], list]:
    groups: dict[tuple[str, str], list] = {}
    for cell, metrics in done:
        groups.setdefault((cell.model, cell.variant_label), []).append((cell, metrics))
    return groups


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values))


def _spread(values: Sequence[float], digits: int = 4) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def _title(metric: str) -> str:
    if "@" not in metric:
        return {"auc": "AUC", "gauc": "GAUC", "logloss": "LogLoss"}.get(metric, metric)
    name, cutoff = metric.split("@")
    return {"recall": "Recall", "ndcg": "NDCG", "hitrate": "HitRate"}[name] + "@" + cutoff


def _interest_map(
    experiment: Experiment, done: list[tuple[Cell, dict[str, Any]]]
) -> list[tuple[str, str]]:
    """The experiment's ``interest_map``: one user's interests and history in 2-D, drawn from
    the first finished checkpoint of the named dataset and model."""
    from mirec.evaluation.inspection import inspect_checkpoint, plot_interest_map

    spec = experiment.interest_map or {}
    for cell, _ in done:
        if cell.dataset == spec["dataset"] and cell.model == spec["model"]:
            report = inspect_checkpoint(cell.checkpoint, user=str(spec["user"]))
            name = f"interest-map-{cell.dataset}-{cell.model}-user-{spec['user']}.png"
            plot_interest_map(report, figure_dir(experiment) / name)
            return [(name, report.summary())]
    return []
