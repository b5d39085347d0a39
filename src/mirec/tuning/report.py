"""What a search leaves in ``OUT``, written from the stored study (so every start rewrites
it with all the trials so far, other workers' included): ``best.yaml`` (the best trial's
settings, which ``mirec train --config`` trains again), ``report.md`` (every trial, the
history of the search and the settings' importances as PNG) and ``metrics.json``
(:class:`~mirec.results.TuningResult`)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from mirec.atomic import write_json_atomic, write_text_atomic
from mirec.core.layout import METRICS_FILE
from mirec.results import TuningResult
from mirec.tuning.study import OBJECTIVE, TuneSpec, shown_url, shown_value

if TYPE_CHECKING:
    import optuna

BEST_CONFIG, REPORT_FILE = "best.yaml", "report.md"
HISTORY_PLOT, IMPORTANCE_PLOT = "history.png", "importance.png"
IMPORTANCE_SEED = 0
"""Seeds fANOVA's random forest: the same trials give the same importances."""


def write_results(study: optuna.Study, spec: TuneSpec) -> TuningResult:
    """``best.yaml``, ``report.md`` with its plots, and ``metrics.json`` of ``study`` in
    ``spec.output_dir``; returns the record that ``metrics.json`` holds."""
    from optuna.trial import TrialState

    out = spec.output_dir
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = max(complete, key=lambda t: t.value) if complete else None
    # a trial added to the storage by other means than mirec tune records no run
    settings = None if best is None else best.user_attrs.get("config")
    if settings is not None:
        header = (
            f"# mirec tune: trial {best.number} of study {spec.name}, valid {OBJECTIVE} "
            f"{best.value:.4f}\n# train it again: mirec train --config {BEST_CONFIG} "
            "--output-dir DIR\n"
        )
        write_text_atomic(out / BEST_CONFIG, header + yaml.safe_dump(settings, sort_keys=False))
    identity = study.user_attrs.get("mirec", {})
    result = TuningResult(
        study_name=spec.name,
        storage=shown_url(spec.storage_url),
        model=identity.get("model", spec.model),
        dataset=identity.get("dataset", ""),
        objective=f"valid {OBJECTIVE}",
        direction="maximize",
        n_trials=len(trials),
        states=dict(sorted(Counter(t.state.name for t in trials).items())),
        best_trial=None if best is None else best.number,
        best_value=None if best is None else best.value,
        best_params=None if best is None else best.params,
        best_folder=None if best is None else best.user_attrs.get("folder"),
        best_config=None if settings is None else str(out / BEST_CONFIG),
    )
    plots = [_plot_history(trials, out / HISTORY_PLOT), _plot_importance(study, out)]
    write_text_atomic(out / REPORT_FILE, _markdown(result, trials, plots))
    write_json_atomic(out / METRICS_FILE, result.to_dict())
    return result


def trial_value(trial: optuna.trial.FrozenTrial) -> float | None:
    """A trial's validation figure: a complete one's value, a pruned one's at its last
    validation, None for one that failed or runs."""
    from optuna.trial import TrialState

    if trial.state == TrialState.COMPLETE:
        return trial.value
    if trial.state == TrialState.PRUNED and trial.intermediate_values:
        return trial.intermediate_values[max(trial.intermediate_values)]
    return None


def _markdown(
    result: TuningResult, trials: list[optuna.trial.FrozenTrial], plots: list[tuple[str, str]]
) -> str:
    """report.md: the study, its best trial, a table of every trial, the plots."""
    names = sorted({name for t in trials for name in t.params})
    states = ", ".join(f"{n} {state.lower()}" for state, n in result.states.items())
    lines = [
        f"# Tuning {result.model} on {result.dataset}",
        "",
        f"Study `{result.study_name}` in `{result.storage}`: {result.n_trials} trials "
        f"({states}). Each trial is ranked on its best validation Recall@50; no trial's test "
        "figures are read by the search.",
        "",
    ]
    if result.best_trial is None:
        lines += ["No trial has completed yet.", ""]
    else:
        again = (
            f"`mirec train --config {BEST_CONFIG} --output-dir DIR` trains it again"
            if result.best_config is not None
            else "it records no run (it was added to the study by other means than mirec tune)"
        )
        lines += [
            f"Best: trial {result.best_trial}, valid Recall@50 {result.best_value:.4f} "
            f"({result.best_folder}); {again}.",
            "",
        ]
    lines += [
        "| trial | state | valid Recall@50 | validations | seconds | " + " | ".join(names) + " |",
        "| ---: | --- | ---: | ---: | ---: |" + " ---: |" * len(names),
    ]
    for t in trials:
        value = trial_value(t)
        seconds = (
            f"{(t.datetime_complete - t.datetime_start).total_seconds():.1f}"
            if value is not None and t.datetime_complete and t.datetime_start
            else ""  # a failed trial's end is when it was found failed
        )
        cells = [
            str(t.number),
            t.state.name.lower(),
            "" if value is None else f"{value:.4f}",
            str(len(t.intermediate_values)),
            seconds,
            *(shown_value(t.params[name]) if name in t.params else "" for name in names),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for file, note in plots:
        lines += [f"![{note}]({file})" if file else note, ""]
    return "\n".join(lines)


def _plot_history(trials: list[optuna.trial.FrozenTrial], path: Path) -> tuple[str, str]:
    """Each trial's validation Recall@50 in trial order (pruned ones at their last
    validation) and the best so far."""
    from matplotlib import ticker
    from optuna.trial import TrialState

    from mirec.plotting import plt, save_figure

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for state, marker in ((TrialState.COMPLETE, "o"), (TrialState.PRUNED, "x")):
        points = [(t.number, trial_value(t)) for t in trials if t.state == state]
        points = [(n, v) for n, v in points if v is not None]
        if points:
            ax.scatter(*zip(*points, strict=True), marker=marker, label=state.name.lower())
    best, steps = float("-inf"), []
    for t in trials:
        if t.state == TrialState.COMPLETE:
            best = max(best, t.value)
        if best > float("-inf"):
            steps.append((t.number, best))
    if steps:
        ax.step(*zip(*steps, strict=True), where="post", color="black", label="best so far")
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel("valid Recall@50")
    ax.set_title("Search history")
    ax.legend(loc="best")
    save_figure(fig, path)
    return path.name, "valid Recall@50 of each trial, and the best so far"


def _plot_importance(study: optuna.Study, out: Path) -> tuple[str, str]:
    """fANOVA's share of the validation figure's variance that each setting explains, over
    the completed trials; a note instead where they are too few to say."""
    import optuna

    from mirec.core.extras import require
    from mirec.plotting import plt, save_figure

    require("sklearn", "the parameter importances of mirec tune")  # fANOVA's random forest
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=IMPORTANCE_SEED)
    try:
        importances = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (ValueError, RuntimeError) as err:  # fewer than two complete trials, and such
        return "", f"No parameter importances yet: {err}"
    if not importances:
        return "", "No parameter importances yet: no setting varied among the completed trials."
    names = list(importances)[::-1]
    fig, ax = plt.subplots(figsize=(6.4, 0.5 * len(names) + 1.4))
    ax.barh(names, [importances[name] for name in names])
    ax.set_xlabel("importance (fANOVA, share of the variance)")
    ax.set_title("What the validation Recall@50 depends on")
    fig.tight_layout()
    save_figure(fig, out / IMPORTANCE_PLOT)
    return IMPORTANCE_PLOT, "importance of each setting (fANOVA over the completed trials)"
