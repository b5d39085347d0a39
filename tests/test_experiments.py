"""Experiment grids: cells from a YAML file, resumable runs, and the generated report."""

from __future__ import annotations

import csv
import json

import pytest
import yaml

from mirec.errors import ConfigError
from mirec.experiments.grid import load_experiment, slug
from mirec.experiments.report import write_report
from mirec.experiments.runner import cell_result, run_experiment

DATASET = "synthetic:n_users=300,n_items=120,n_clusters=4"
OTHER = "synthetic:n_users=200,n_items=100,n_clusters=3,max_interests=3"


def write_spec(tmp_path, **changes):
    spec = {
        "name": "tiny",
        "report": str(tmp_path / "out" / "report.md"),
        "runs_dir": str(tmp_path / "runs"),
        "datasets": [DATASET],
        "models": ["most-popular", "youtube-dnn"],
        "settings": {"max_epochs": 1},
        "grid": {"embedding_dim": [8, 16]},
        "seeds": {"default": [1], "youtube-dnn": [1, 2]},
        **changes,
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_cells_cover_the_grid_first_seeds_first(tmp_path):
    experiment = load_experiment(write_spec(tmp_path))
    # 2 models x 2 variants, youtube-dnn with a second seed
    assert len(experiment.cells) == 6
    assert [c.seed for c in experiment.cells] == [1, 1, 1, 1, 2, 2]
    youtube = [c for c in experiment.cells if c.model == "youtube-dnn"]
    assert {c.config.embedding_dim for c in youtube} == {8, 16}
    assert all(c.config.max_epochs == 1 and c.config.dataset == DATASET for c in youtube)
    assert len({c.run_dir for c in experiment.cells}) == 6


def test_runs_resume_and_report(tmp_path):
    path = write_spec(tmp_path)
    experiment = load_experiment(path)
    messages: list[str] = []
    assert run_experiment(experiment, max_cells=2, progress=False, echo=messages.append) == []
    assert messages[0] == "tiny: 0 of 6 cells finished, 6 to run"
    assert sum(cell_result(c) is not None for c in experiment.cells) == 2
    run_experiment(experiment, progress=False, echo=messages.append)
    assert messages[5] == "tiny: 2 of 6 cells finished, 4 to run"
    # a finished grid runs nothing more
    again: list[str] = []
    run_experiment(load_experiment(path), progress=False, echo=again.append)
    assert again == ["tiny: 6 of 6 cells finished, 0 to run"]

    done, total = write_report(experiment, "mirec experiment tiny.yaml")
    assert (done, total) == (6, 6)
    rows = list(csv.DictReader((tmp_path / "out" / "results.csv").open()))
    assert len(rows) == 6
    report = (tmp_path / "out" / "report.md").read_text()
    # youtube-dnn rows have two seeds, hence mean ± std; the values come from metrics.json
    youtube = [c for c in experiment.cells if c.model == "youtube-dnn" and c.variant[0][1] == 8]
    recalls = [
        json.loads((c.run_dir / "metrics.json").read_text())["test"]["recall@50"] for c in youtube
    ]
    assert f"{sum(recalls) / 2:.4f} ± " in report
    assert "6 of 6 cells finished" in report


def test_a_changed_setting_makes_a_cell_stale(tmp_path):
    single = {"models": ["most-popular"], "grid": {}, "seeds": [1]}
    experiment = load_experiment(write_spec(tmp_path, **single))
    run_experiment(experiment, progress=False, echo=lambda _: None)
    assert cell_result(experiment.cells[0]) is not None
    changed = load_experiment(write_spec(tmp_path, **single, settings={"split_seed": 7}))
    assert cell_result(changed.cells[0]) is None
    # a run of the new settings that died after writing its config.yaml: the metrics.json
    # left from the old settings records those, so the cell is still not finished
    cell = changed.cells[0]
    (cell.run_dir / "config.yaml").write_text(yaml.safe_dump(cell.config.to_dict()))
    assert cell_result(cell) is None


def test_compare_puts_the_bucket_tables_of_b_against_a_in_the_report(tmp_path):
    spec = {
        "models": ["most-popular", "youtube-dnn"],
        "grid": {},
        "seeds": [1],
        "compare": {"a": "most-popular", "b": "youtube-dnn", "by": ["history_length"]},
    }
    experiment = load_experiment(write_spec(tmp_path, **spec))
    run_experiment(experiment, progress=False, echo=lambda _: None)
    write_report(experiment, "mirec experiment tiny.yaml")
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## youtube-dnn against most-popular, bucket by bucket" in report
    saved = json.loads(
        (tmp_path / "out" / slug(f"compare-{DATASET}-history_length") / "compare.json").read_text()
    )
    overall = saved["rows"][0]
    # the table's first row is all users: both runs' test figures, as metrics.json has them
    a, b = (json.loads((c.run_dir / "metrics.json").read_text()) for c in experiment.cells)
    assert overall["a"]["recall@50"] == pytest.approx(a["test"]["recall@50"])
    assert overall["b"]["recall@50"] == pytest.approx(b["test"]["recall@50"])
    row = f"| all users | {overall['users']} | {a['test']['recall@50']:.4f} | "
    assert row in report and "compare.png)" in report
    with pytest.raises(ConfigError, match=r"compare\.by: 'colour'"):
        load_experiment(
            write_spec(tmp_path, **{**spec, "compare": {**spec["compare"], "by": ["colour"]}})
        )
    with pytest.raises(ConfigError, match="a and b must be rows"):
        load_experiment(
            write_spec(tmp_path, **{**spec, "compare": {**spec["compare"], "a": "mind"}})
        )


def test_a_labelled_row_carries_its_own_settings(tmp_path):
    row = {"label": "wide youtube", "model": "youtube-dnn", "settings": {"embedding_dim": 32}}
    experiment = load_experiment(
        write_spec(tmp_path, models=["youtube-dnn", row], grid={}, seeds=[1])
    )
    plain, wide = experiment.cells
    assert (plain.model, plain.config.embedding_dim) == ("youtube-dnn", 64)
    assert (wide.model, wide.config.model, wide.config.embedding_dim) == (
        "wide youtube",
        "youtube-dnn",
        32,
    )
    assert wide.run_dir.parent.name == "wide_youtube"


def two_datasets(tmp_path, models, **changes):
    """The experiment of ``models`` on DATASET and OTHER, seed 1, no grid."""
    spec = {"datasets": [DATASET, OTHER], "models": models, "grid": {}, "seeds": [1], **changes}
    return load_experiment(write_spec(tmp_path, **spec))


def test_dataset_settings_apply_to_their_dataset_only(tmp_path):
    other = OTHER
    experiment = two_datasets(
        tmp_path,
        ["youtube-dnn", {"label": "own", "model": "youtube-dnn", "settings": {"patience": 5}}],
        dataset_settings={other: {"patience": 9, "max_epochs": 2}},
    )
    by_key = {(c.dataset, c.model): c.config for c in experiment.cells}
    assert (by_key[DATASET, "youtube-dnn"].patience, by_key[DATASET, "youtube-dnn"].max_epochs) == (
        3,
        1,
    )
    assert (by_key[other, "youtube-dnn"].patience, by_key[other, "youtube-dnn"].max_epochs) == (
        9,
        2,
    )
    # a row's own settings are more specific than a dataset's
    assert by_key[other, "own"].patience == 5


def test_a_row_with_datasets_runs_on_those_only(tmp_path):
    other = OTHER
    experiment = two_datasets(
        tmp_path, ["most-popular", {"model": "youtube-dnn", "datasets": [other]}]
    )
    assert [(c.dataset, c.model) for c in experiment.cells] == [
        (DATASET, "most-popular"),
        (other, "most-popular"),
        (other, "youtube-dnn"),
    ]
    write_report(experiment, "mirec experiment tiny.yaml")
    text = (tmp_path / "out" / "report.md").read_text()
    first, second = text.split(f"## {other}")
    # the row is pending on its dataset and absent from the other's table and pending list
    assert "youtube-dnn" not in first and f"{other} / youtube-dnn seed 1" in second
    # a comparison with it says, on the dataset it leaves out, that it does not run there
    compared = two_datasets(
        tmp_path,
        ["most-popular", {"model": "youtube-dnn", "datasets": [other]}],
        compare={"a": "most-popular", "b": "youtube-dnn", "by": ["categories"]},
    )
    write_report(compared, "mirec experiment tiny.yaml")
    text = (tmp_path / "out" / "report.md").read_text()
    assert text.count("Not both rows run on this dataset.") == 1
    assert text.count("Not both rows finished yet.") == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"modles": ["x"]}, "unknown key 'modles'"),
        (
            {"models": [{"label": "default", "model": "mind"}], "seeds": {"default": [1]}},
            "labelled 'default' cannot have seeds of its own",
        ),
        (
            {"models": [{"model": "mind", "datasets": ["ml-1m"]}], "seeds": [1]},
            "mind: datasets: expected a non-empty list of the grid's datasets",
        ),
        ({"models": []}, "models: expected a non-empty list"),
        ({"models": ["mind", {"model": "mind"}], "seeds": [1]}, "'mind' appears twice"),
        ({"models": [{"modle": "mind"}], "seeds": [1]}, "neither a name nor a mapping"),
        ({"models": ["nope"], "seeds": [1]}, "unknown model 'nope'"),
        ({"grid": {"embedding_dim": 8}}, "grid.embedding_dim: expected a non-empty list"),
        ({"seeds": {"sasrec": [1]}}, "'sasrec' is not one of the experiment's models"),
        ({"settings": {"lr": "fast"}}, "setting lr='fast'"),
        ({"dataset_settings": {"ml-100k": {"lr": 1}}}, "dataset_settings.ml-100k"),
    ],
)
def test_bad_experiment_files_name_the_problem(tmp_path, change, message):
    with pytest.raises(ConfigError, match=message):
        load_experiment(write_spec(tmp_path, **change))


def test_a_key_given_twice_is_refused_with_its_line(tmp_path):
    path = write_spec(tmp_path)
    path.write_text(path.read_text() + "seeds: [3]\n")
    with pytest.raises(
        ConfigError, match=r"line \d+: not valid YAML \(the key 'seeds' is given twice\)"
    ):
        load_experiment(path)


def test_the_experiment_command_runs_cells_and_reports(tmp_path):
    from typer.testing import CliRunner

    from mirec.cli.main import app

    path = write_spec(tmp_path, models=["most-popular"], grid={}, seeds=[1, 2])
    result = CliRunner().invoke(app, ["experiment", str(path), "--max-cells", "1", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "(1 of 2 cells finished)" in result.output
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Not yet run" in report and "most-popular seed 2" in report
    result = CliRunner().invoke(app, ["experiment", str(path), "--report-only"])
    assert "(1 of 2 cells finished)" in result.output


def test_a_cell_held_by_a_live_worker_is_left_to_it(tmp_path):
    from mirec.run_folder import LOCK_FILE, folder_lock

    experiment = load_experiment(
        write_spec(tmp_path, models=["most-popular"], grid={}, seeds=[1, 2])
    )
    first, second = experiment.cells
    # a dead worker's lock file is no lock: the system released it when the worker died
    second.run_dir.mkdir(parents=True)
    (second.run_dir / LOCK_FILE).write_text("999999999")
    messages: list[str] = []
    with folder_lock(first.run_dir):  # a live worker holds the first cell
        run_experiment(experiment, progress=False, echo=messages.append)
    assert cell_result(first) is None and messages[2] == "    running elsewhere"
    assert cell_result(second) is not None


def test_an_interrupted_cell_resumes(tmp_path, capsys):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from mirec.run_folder import STAGING_DIR
    from mirec.training.checkpoint import CHECKPOINT_FILE

    settings = {"max_epochs": 5, "patience": 10}
    path = write_spec(tmp_path, models=["youtube-dnn"], grid={}, seeds=[1], settings=settings)
    (cell,) = load_experiment(path).cells
    src = Path(__file__).resolve().parents[1] / "src"
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    worker = subprocess.Popen(
        [sys.executable, "-m", "mirec", "experiment", str(path), "--quiet"], env=env
    )
    checkpoint = cell.run_dir / STAGING_DIR / CHECKPOINT_FILE
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and worker.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    worker.send_signal(signal.SIGKILL)
    assert worker.wait() == -signal.SIGKILL, "the cell finished before the kill"
    capsys.readouterr()
    assert run_experiment(load_experiment(path), progress=True, echo=print) == []
    assert "resuming after epoch" in capsys.readouterr().out
    assert cell_result(cell).fit.epochs == 5


def test_a_grid_of_inference_settings_trains_once_and_reevaluates(tmp_path):
    path = write_spec(
        tmp_path, models=["youtube-dnn"], grid={"diversity_lambda": [0.0, 100.0]}, seeds=[1]
    )
    experiment = load_experiment(path)
    low, high = experiment.cells
    assert low.checkpoint == high.checkpoint and low.run_dir != high.run_dir
    assert low.train_config == high.train_config and low.train_config.diversity_lambda is None
    assert run_experiment(experiment, progress=False, echo=lambda _: None) == []
    trained = json.loads((low.checkpoint / "metrics.json").read_text())
    metrics = [cell_result(c) for c in (low, high)]
    assert all(m is not None and m.trained["epochs"] == trained["epochs"] for m in metrics)
    assert [m.config["diversity_lambda"] for m in metrics] == [0.0, 100.0]
    # lambda = 0 is the plain ranking; a large lambda buys category diversity (with K = 1
    # the candidates are the top 50 itself, so the greedy merge reorders within it)
    assert metrics[0].test["recall@50"] == pytest.approx(trained["test"]["recall@50"])
    assert metrics[1].test["diversity@20"] > metrics[0].test["diversity@20"]


def test_diminishing_returns_is_the_first_point_after_which_gains_stay_small():
    from mirec.experiments.plots import diminishing_returns

    # gains: +50%, +10%, +1%: with a 2% threshold the curve flattens from the third point
    assert diminishing_returns([0.10, 0.15, 0.165, 0.1667], 0.02) == 2
    assert diminishing_returns([0.10, 0.101, 0.2], 0.02) == 2  # a late jump counts
    assert diminishing_returns([0.3, 0.2, 0.1], 0.02) == 0  # falling from the start


def test_report_draws_labelled_plots(tmp_path):
    from matplotlib.image import imread

    path = write_spec(
        tmp_path,
        plots=[
            {"x": "embedding_dim", "y": "recall@50", "mark": "diminishing_returns"},
            {"x": "model", "y": ["recall@50", "coverage@50"]},
            {"x": "diversity@50", "y": "recall@50"},
        ],
        columns=["coverage@50", "effective_interests"],
    )
    experiment = load_experiment(path)
    run_experiment(experiment, progress=False, echo=lambda _: None)
    write_report(experiment, "mirec experiment tiny.yaml")
    report = experiment.report.read_text()
    pngs = sorted(experiment.report.parent.glob("*.png"))
    assert len(pngs) == 3
    for png in pngs:
        assert f"![{png.name}]({png.name})" in report
        image = imread(png)
        assert image.shape[0] > 200 and image.std() > 0.01  # drawn, not blank
    assert "point of diminishing returns" in report
    # the extra columns come after collapse, in the order the file gives them
    assert "| collapse | coverage@50 | effective_interests | epochs |" in report


def test_a_ctr_grid_reports_auc(tmp_path):
    path = write_spec(
        tmp_path,
        models=[
            {"label": "popularity", "model": "most-popular", "settings": {"task": "ctr"}},
            "din",
        ],
        grid={},
        seeds=[1],
    )
    experiment = load_experiment(path)
    assert run_experiment(experiment, progress=False, echo=lambda _: None) == []
    write_report(experiment, "mirec experiment tiny.yaml")
    report = experiment.report.read_text()
    assert "| model | K | seeds | AUC | GAUC | LogLoss | epochs | train s |" in report
    rows = list(csv.DictReader(experiment.report.with_name("results.csv").open()))
    assert {r["task"] for r in rows} == {"ctr"}
    assert all(0.0 <= float(r["test_auc"]) <= 1.0 for r in rows)


def test_reports_named_otherwise_keep_their_own_csv_and_figures(tmp_path):
    from mirec.experiments.report import figure_dir, results_csv

    path = write_spec(
        tmp_path,
        report=str(tmp_path / "docs" / "ctr.md"),
        grid={},
        seeds=[1],
        models=["most-popular"],
        plots=[{"x": "model", "y": "recall@50"}],
    )
    experiment = load_experiment(path)
    assert results_csv(experiment) == tmp_path / "docs" / "ctr.csv"
    assert figure_dir(experiment) == tmp_path / "docs" / "ctr"
    run_experiment(experiment, progress=False, echo=lambda _: None)
    write_report(experiment, "mirec experiment tiny.yaml")
    pngs = list((tmp_path / "docs" / "ctr").glob("*.png"))
    assert len(pngs) == 1 and f"](ctr/{pngs[0].name})" in experiment.report.read_text()
    assert not (tmp_path / "docs" / "results.csv").exists()


def test_a_setting_chosen_on_validation_is_reported_and_compared_with_it_unset(tmp_path):
    unset = {"quota_alpha": None, "quota_half_life": None}
    compare = {
        "a": {"row": "comirec-sa", "variant": unset},
        "b": {"row": "comirec-sa", "variant": "chosen"},
        "by": ["history_length"],
    }
    spec = {
        "models": ["comirec-sa"],
        "grid": {"quota_alpha": [None, 0.0, 2.0], "quota_half_life": [None, 2.0]},
        "seeds": [1, 2],
        "choose": {"setting": "quota_alpha", "metric": "recall@50"},
        "compare": compare,
        "columns": ["leading_share@50", "diversity@50"],
    }
    experiment = load_experiment(write_spec(tmp_path, **spec))
    # a half-life without a quota is refused; the rest share one training per seed
    assert len(experiment.impossible) == 2 and len(experiment.cells) == 10
    assert len({c.checkpoint for c in experiment.cells}) == 2
    failed = run_experiment(experiment, progress=False, echo=lambda _: None)
    assert [cell for cell, _ in failed] == experiment.impossible
    write_report(experiment, "mirec experiment tiny.yaml")
    report = (tmp_path / "out" / "report.md").read_text()

    # the choice: the variant with a quota and the best mean validation Recall@50, from the
    # cells' own files
    valid: dict[str, list[float]] = {}
    for cell in experiment.cells:
        metrics = json.loads((cell.run_dir / "metrics.json").read_text())
        valid.setdefault(cell.variant_label, []).append(metrics["valid"]["recall@50"])
    means = {label: sum(v) / len(v) for label, v in valid.items() if "alpha=None" not in label}
    chosen = max(means, key=lambda label: (means[label], -list(means).index(label)))
    assert "## Chosen on validation" in report
    header = (
        "| model | variant | seeds | valid Recall@50 | Recall@50 | NDCG@50 | leading_share@50 |"
    )
    assert header in report
    assert f"| comirec-sa | **{chosen}** | 1,2 | {means[chosen]:.4f} ± " in report
    base = "quota_alpha=None, quota_half_life=None"
    assert f"| comirec-sa | {base} | 1,2 | " in report

    # the comparison scores the same weights twice, each side under its own settings
    heading = f"## comirec-sa [quota_alpha chosen on validation] against comirec-sa [{base}]"
    assert heading in report and f"B: {chosen} (chosen)." in report
    folders = list((tmp_path / "out").glob("compare-*history_length"))
    assert len(folders) == 1
    saved = json.loads((folders[0] / "compare.json").read_text())
    picked = next(c for c in experiment.cells if c.variant_label == chosen and c.seed == 1)
    plain = next(c for c in experiment.cells if c.variant_label == base and c.seed == 1)
    assert saved["run_b"]["inference_settings"] == dict(picked.variant)
    assert saved["run_a"]["inference_settings"] == unset
    overall = saved["rows"][0]
    for side, cell in (("a", plain), ("b", picked)):
        test = json.loads((cell.run_dir / "metrics.json").read_text())["test"]
        assert overall[side]["recall@50"] == pytest.approx(test["recall@50"])

    with pytest.raises(ConfigError, match="variant chosen needs a choose: key"):
        load_experiment(write_spec(tmp_path, **{**spec, "choose": None}))
    bad = {**compare, "a": {"row": "comirec-sa", "variant": {**unset, "quota_alpha": 9.0}}}
    with pytest.raises(ConfigError, match=r"variant quota_alpha=9\.0 is not in the grid"):
        load_experiment(write_spec(tmp_path, **{**spec, "compare": bad}))
    unknown = {"setting": "quota_alpha", "metric": "recall@5"}
    with pytest.raises(ConfigError, match=r"choose\.metric: 'recall@5'; expected one of recall@20"):
        load_experiment(write_spec(tmp_path, **{**spec, "choose": unknown}))
    wrong = {"setting": "diversity_lambda", "metric": "recall@50"}
    with pytest.raises(ConfigError, match=r"choose\.setting: 'diversity_lambda' is not a grid"):
        load_experiment(write_spec(tmp_path, **{**spec, "choose": wrong}))
