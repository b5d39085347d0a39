"""What the command line prints of a run: its test table, auto's choice, the diagnostics.

Every table reads a run's typed record (:mod:`mirec.results`), never ``metrics.json``'s
keys.
"""

from __future__ import annotations

import typer

from mirec.results import Evaluation, RunResult, TrainedCTRRun, TrainedRun

RETRIEVAL_COLUMNS = ("recall@20", "recall@50", "ndcg@50", "hitrate@50")
CTR_COLUMNS = ("auc", "gauc", "logloss")


def print_training(result: RunResult) -> None:
    """A training run's test table, after auto's candidates and its choice when it chose."""
    if isinstance(result, TrainedRun) and result.auto is not None:
        print_auto_choice(result)
        print_results({result.auto.chosen: result})
    else:
        print_results({result.header.model: result})


def print_auto_choice(result: TrainedRun) -> None:
    """``--model auto``'s candidates, their validation figures, and the choice."""
    record = result.auto
    assert record is not None
    typer.echo(f"\nvalidation users ({result.header.dataset}), the choice of model auto:")
    typer.echo(f"{'candidate':<26}{'recall@50':>12}{'ndcg@50':>12}{'epochs':>8}{'train s':>10}")
    for name, candidate in record.candidates.items():
        valid = candidate["valid"]
        mark = " <- chosen" if name == record.chosen else ""
        typer.echo(
            f"{name:<26}{valid['recall@50']:>12.4f}{valid['ndcg@50']:>12.4f}"
            f"{candidate['epochs']:>8}{candidate['train_seconds']:>10.0f}{mark}"
        )
    typer.echo(f"default: {record.chosen}, {record.why}")


def print_results(runs: dict[str, RunResult]) -> None:
    """A metrics table, one row per run (test split; collapse on test users)."""
    dataset = next(iter(runs.values())).header.dataset
    if all(isinstance(r, TrainedCTRRun) for r in runs.values()):
        typer.echo(f"\ntest rows ({dataset}):")
        typer.echo(f"{'model':<16}" + "".join(f"{c:>10}" for c in CTR_COLUMNS))
        for name, r in runs.items():
            typer.echo(f"{name:<16}" + "".join(f"{r.test[c]:>10.4f}" for c in CTR_COLUMNS))
        return
    width = max(16, *(len(name) + 1 for name in runs))
    header = f"{'model':<{width}}" + "".join(f"{c:>12}" for c in RETRIEVAL_COLUMNS)
    typer.echo(f"\ntest users ({dataset}):")
    typer.echo(header + f"{'collapse':>10}")
    for name, r in runs.items():
        value = getattr(r, "figures", None)
        collapse = "-" if value is None or value.collapse is None else f"{value.collapse:.3f}"
        row = "".join(f"{r.test[c]:>12.4f}" for c in RETRIEVAL_COLUMNS)
        typer.echo(f"{name:<{width}}{row}{collapse:>10}")


def print_diagnostics(evaluation: Evaluation) -> None:
    """``mirec diagnose``: collapse, the interest diagnostics and Diversity@N on the test
    users, one a line."""
    header, figures = evaluation.header, evaluation.figures
    typer.echo(f"{header.model} on {header.dataset}, {header.n_test_users} test users")
    rows = {"collapse": figures.collapse, **(figures.diagnostics or {})}
    rows.update({k: v for k, v in figures.test.items() if k.startswith("diversity@")})
    for name, value in rows.items():
        if name == "k_confusion":
            typer.echo("  planted K -> K'_u users:")
            for planted, chosen in value.items():
                typer.echo(f"    {planted}: " + ", ".join(f"{c}: {n}" for c, n in chosen.items()))
        elif isinstance(value, float):
            typer.echo(f"  {name:<22}{value:>10.4f}")
        else:
            typer.echo(f"  {name:<22}{'-' if value is None else value!s:>10}")
    if figures.interest_counts:
        counts = ", ".join(f"{k}: {n}" for k, n in figures.interest_counts.items())
        typer.echo(f"  users by K'_u          {counts}")
