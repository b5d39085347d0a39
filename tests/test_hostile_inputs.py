"""Hostile input: impossible settings, malformed or adversarial data files, unreadable folders.

The contract (docs/reliability.md): every problem a user can cause ends in one line on
stderr, ``mirec: error: ...``, and exit code 2, in seconds; never a traceback, a hang, or a
silently different result. The cases run through the real command line (``python -m mirec``
in a subprocess), and a property-based fuzz test feeds arbitrary bytes to every reader.
"""

from __future__ import annotations

import gzip
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest
import yaml
from conftest import user_error
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mirec.config import load_config
from mirec.core.config import FIELD_NAMES, Config, config_from_dict
from mirec.data import readers
from mirec.data.log import RawLog
from mirec.errors import ConfigError, DataError, MirecError
from mirec.models.build import build_model, check_components

REPO = Path(__file__).resolve().parents[1]
TINY = "synthetic:n_users=150,n_items=70,n_clusters=4"
MiB = 1 << 20


# --------------------------------------------------------------------------- helpers


def cli(*args: str, env: dict[str, str] | None = None, prefix: tuple[str, ...] = ()):
    """``python -m mirec ARGS`` in a subprocess, importing this checkout's mirec."""
    environ = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        **(env or {}),
    }
    start = time.monotonic()
    result = subprocess.run(
        [*prefix, sys.executable, "-m", "mirec", *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=120,
    )
    result.seconds = time.monotonic() - start  # type: ignore[attr-defined]
    return result


def train(tmp_path: Path, *args: str, **kw):
    return cli("train", "--output-dir", str(tmp_path / "run"), "--quiet", *args, **kw)


def train_file(tmp_path: Path, path: Path, fmt: str, *args: str, **kw):
    return train(tmp_path, "--dataset", str(path), "--format", fmt, *args, **kw)


# --------------------------------------------------------------------------- settings

BAD_VALUES: dict[str, list[object]] = {
    "task": ["ranking", "", 3.5, []],
    "model": ["", "   ", [], True],
    "extractor": ["transformer", "behaviors", "", None],
    "embedding_dim": [0, -8, 2**40, 1.5, "big", True],
    "num_interests": [0, -1, "four", None],
    "hidden_dim": [0, -1, 2.5],
    "maxlen": [0, -1, "50"],
    "encoder_layers": [-1, 10_000, 0.5],
    "dropout": [-0.1, 1.0, 1.5, math.nan, "half"],
    "interest_tower": ["yes", 1, None],
    "routing_iterations": [0, -3],
    "routing_sigma": [-1.0, math.inf, math.nan],
    "dynamic_interests": [0, "no"],
    "user_features": [1, "true"],
    "selector": ["softmax", ""],
    "label_aware_power": [-1.0, math.nan, math.inf],
    "aggregator": ["sum", "target", ""],
    "diversity_lambda": [-0.5, math.nan, "lots", math.inf, 1e300, 1000.5],
    "quota_alpha": [-0.5, math.nan, "lots", math.inf, 1e300, 100.5],
    "quota_half_life": [0.0, -1.0, math.nan, "soon", math.inf, 2e6, 3.0],
    "adaptive_k": ["mass", "mass:x", "mass:1.5", "share:-0.1", "merge:nan", "drop:0.1", ""],
    "num_concepts": [0, -1],
    "intention_temperature": [0.0, -1.0, math.inf],
    "regularizer": ["collapse:1", "covariance:abc", "covariance:-1", "contrastive:nan", ",:"],
    "contrastive_temperature": [0.0, math.nan],
    "ctr_negatives": [0, -1],
    "aux_loss_weight": [-1.0, math.nan],
    "sequence_training": ["maybe", 2],
    "dataset": ["", "  ", None, [], "synthetic:n_users=-1", "synthetic:mean_length=1e9"],
    "format": ["csv", "parquet", ""],
    "columns": ["", ["user", "item"]],
    "sep": ["", {"tab": 1}],
    "id_type": ["float", "integer", ""],
    "init_from": ["", "  "],
    "fine_tune_on": ["old", "", "New"],
    "removed_items": ["forget", "", "Keep", 1, "keep"],
    "init_optimizer": ["warm", "", "Carry", "carry"],
    "keep_optimizer_state": [1, "true"],
    "split_seed": [-1, 2**64, 1.5],
    "seed": [-1, 2**64, "x"],
    "batch_size": [0, -5, 2**40, 64.0],
    "lr": [0.0, -1e-3, math.nan, math.inf, "nan", ".inf", "fast", 10**400],
    "weight_decay": [-0.1, math.nan],
    "sparse_items": ["sometimes", 1, ""],
    "precision": ["fp16", "", 16, None],
    "stored_users": ["all", "", 1, None, True],
    "diffusion_timesteps": [0, -1, 10**6, "many"],
    "diffusion_steps": [0, 10**6],
    "diffusion_signal": [-1.0, math.nan],
    "noise_schedule": ["quadratic", ""],
    "num_negatives": [-1, 2**40, 0.5],
    "negative_sampling": ["hard", ""],
    "hard_negative_beta": [-1.0, math.nan],
    "temperature": [0.0, -1.0, math.inf],
    "max_epochs": [0, -1, None],
    "patience": [0, -2],
    "valid_every": [0, -1, 1.5, None],
    "valid_users": [0, -5, 2**40, "all"],
    "max_train_minutes": [0.0, -5.0, math.nan, math.inf],
    "device": ["gpu", "cuda:x", "cuda:-1", "CUDA", "tpu", "", "cpu:0"],
}


def test_the_bad_value_table_covers_every_setting():
    assert set(BAD_VALUES) == set(FIELD_NAMES), set(FIELD_NAMES) ^ set(BAD_VALUES)


@pytest.mark.parametrize(
    ("name", "value"), [(name, value) for name, values in BAD_VALUES.items() for value in values]
)
def test_every_setting_refuses_impossible_values(name: str, value: object):
    """The schema refuses a value out of the setting's own range; a value that no component
    takes (an unknown extractor, a malformed regularizer) passes the schema and is refused by
    the builder's rules, which every command and every model build checks first."""
    with pytest.raises(ConfigError) as exc:
        check_components(config_from_dict({name: value}, source="test"))
    message = str(exc.value)
    assert message.startswith(f"setting {name}="), message
    assert "\n" not in message and len(message) < 400
    with pytest.raises(ConfigError):  # the Python API checks too
        build_model(Config(**{name: value}), n_items=50, maxlen=10)


def _as_yaml(value: object) -> str:
    """``value`` as ``--set`` writes it (YAML; nothing after ``=`` means None)."""
    if value is None:
        return ""
    return yaml.safe_dump(value, default_flow_style=True).removesuffix("\n...\n").strip()


@pytest.mark.parametrize("name", FIELD_NAMES)
def test_every_setting_through_the_command_line_entry_point(tmp_path, monkeypatch, capsys, name):
    """``mirec train --set NAME=BAD`` for every setting, through the console entry point in
    this process (the subprocess cases below cover the interpreter around it)."""
    from mirec.cli.main import main

    value = next(v for v in BAD_VALUES[name] if not isinstance(v, dict))
    argv = ["mirec", "train", "--dataset", TINY, "--output-dir", str(tmp_path / "run")]
    monkeypatch.setattr(sys, "argv", [*argv, "--set", f"{name}={_as_yaml(value)}"])
    with pytest.raises(SystemExit) as exc:
        main()
    err = capsys.readouterr().err
    assert exc.value.code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"mirec: error: setting {name}="), err
    assert not (tmp_path / "run").exists()


def test_every_published_config_and_edge_value_is_accepted():
    for name in ("comirec-sa", "din", "mind", "sasrec", "sine", "dmin", "most-popular"):
        load_config(name)
    good = {
        "maxlen": 1,
        "dropout": 0.0,
        "num_negatives": 0,
        "encoder_layers": 0,
        "seed": 0,
        "lr": 1e-9,
        "label_aware_power": 0.0,
        "adaptive_k": "merge:-0.5",
        "regularizer": "covariance:100,contrastive",
        "device": "cuda:1",  # the syntax; whether the machine has it is checked at training
        "id_type": "str",
    }
    config = config_from_dict(good, source="test")
    assert all(getattr(config, key) == value for key, value in good.items())


def test_cross_setting_checks_name_the_setting():
    with pytest.raises(ConfigError, match=r"batch_size=1: must be >= 2 with negative_sampling"):
        load_config("comirec-sa", overrides=["negative_sampling=in_batch", "batch_size=1"])
    with pytest.raises(ConfigError, match=r"embedding_dim=6: must be a multiple of 4"):
        check_components(load_config("dmin", overrides=["embedding_dim=6", "num_interests=2"]))
    with pytest.raises(ConfigError, match=r"num_concepts=1: SINE activates num_interests=4"):
        check_components(load_config("sine", overrides=["num_concepts=1"]))
    with pytest.raises(ConfigError, match=r"diversity_lambda=0.5: the popularity baseline"):
        load_config("most-popular", overrides=["diversity_lambda=0.5"])


def test_config_names_come_from_the_registries():
    """The builder's rules ask the registries, so they accept exactly the names the
    builders know, for each task."""
    from mirec.extractors import EXTRACTORS
    from mirec.models.build import component_names
    from mirec.regularizers import parse_regularizers
    from mirec.retrieval.adaptive_k import parse_adaptive_k

    retrieval = set(component_names("extractor", "retrieval"))
    assert {"self_attentive", "dynamic_routing", "popularity"} <= retrieval
    assert set(component_names("extractor", "ctr")) == retrieval | {"behaviors", "dmin"}
    # a component that registers itself is a valid setting with no change to mirec.config
    planted = config_from_dict({"extractor": "planted"}, "t")
    with pytest.raises(ConfigError, match="extractor='planted'"):
        check_components(planted)
    EXTRACTORS.register("planted")(type("Planted", (EXTRACTORS.lookup("gru"),), {}))
    try:
        check_components(planted)
    finally:
        del EXTRACTORS._entries["planted"]
    assert "target" in component_names("aggregator", "ctr")
    assert "target" not in component_names("aggregator", "retrieval")
    assert "intention" not in component_names("aggregator", "ctr")
    for spec in ("covariance:100", "disagreement:0.1,contrastive:0.05", "concept_covariance"):
        check_components(config_from_dict({"regularizer": spec}, "t"))
        assert parse_regularizers(spec)
    for spec in ("mass:0.2", "share:0.1", "merge:0.8"):
        check_components(config_from_dict({"adaptive_k": spec}, "t"))
        assert parse_adaptive_k(spec)


def test_a_device_this_machine_lacks_is_a_config_error():
    import torch

    from mirec.core.device import resolve_device

    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"device='cuda': CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(ConfigError, match=r"device='cuda:99'"):
        resolve_device("cuda:99")
    if not torch.backends.mps.is_available():
        with pytest.raises(ConfigError, match=r"device='mps': MPS"):
            resolve_device("mps")
    assert resolve_device("cpu").type == "cpu"


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("num_interests=0", "setting num_interests=0: must be an integer >= 1"),
        ("num_interests=-1", "setting num_interests=-1: must be an integer >= 1"),
        ("batch_size=0", "setting batch_size=0: must be an integer >= 1"),
        ("batch_size=-5", "setting batch_size=-5: must be an integer >= 1"),
        ("embedding_dim=0", "setting embedding_dim=0: must be an integer >= 1"),
        ("maxlen=-1", "setting maxlen=-1: must be an integer >= 1, or unset"),
        ("maxlen=0", "setting maxlen=0: must be an integer >= 1, or unset"),
        ("lr=nan", "setting lr=nan: must be a finite number > 0"),
        ("device=gpu", "setting device='gpu': must be auto, cpu, cuda"),
        ("max_epochs=0", "setting max_epochs=0: must be an integer >= 1"),
        ("extractor=transformer", "setting extractor='transformer': must be one of"),
    ],
)
def test_impossible_settings_through_the_command_line(tmp_path, setting, message):
    result = train(tmp_path, "--dataset", TINY, "--set", setting)
    user_error(result, message)
    assert not (tmp_path / "run").exists()  # refused before anything is written


EARLY_REFUSALS = [
    (["--dataset", "synthetic:n_users=-1"],
     "setting dataset='synthetic:n_users=-1': synthetic dataset option n_users=-1: must be "
     "an integer >= 1 and <= 100,000,000"),
    (["--dataset", "synthetic:n_users=0"], "option n_users=0: must be an integer >= 1"),
    (["--dataset", "synthetic:n_items=-3"], "option n_items=-3: must be an integer >= 1"),
    # numpy was asked for terabytes
    (["--dataset", "synthetic:mean_length=1e9"],
     "option mean_length=1000000000.0: must be a finite number >= 5 and <= 100000"),
    (["--dataset", "synthetic:n_users=100000000"],
     "synthetic dataset: n_users=100000000 x mean_length=20 is 2e+09 events, more than "
     "the 5e+08"),
    (["--dataset", "synthetic:mean_length=nan"], "option mean_length=nan: must be a finite"),
    (["--dataset", "synthetic:mean_length=3"], "option mean_length=3.0: must be a finite "
     "number >= 5"),
    (["--dataset", "synthetic:stickiness=1.5"], "option stickiness=1.5: must be a finite"),
    (["--dataset", "synthetic:popularity_skew=0"], "option popularity_skew=0.0: must be a "
     "finite number > 0"),
    (["--dataset", "synthetic:seed=-1"], "option seed=-1: must be an integer >= 0"),
    (["--dataset", "synthetic:max_interests=500,n_clusters=600,n_items=700"],
     "option max_interests=500: must be an integer >= 1 and <= 64"),
    (["--dataset", "synthetic:mean_len=1e9"], "option 'mean_len=1e9': expected key=value"),
    (["--dataset", TINY, "--model", "most-popular", "--set", "diversity_lambda=0.5"],
     "setting diversity_lambda=0.5: the popularity baseline (extractor=popularity) has no "
     "diversity-controllable list; leave it unset"),
    (["--dataset", TINY, "--set", "diversity_lambda=1e300"],
     "setting diversity_lambda=1e+300: must be a finite number in [0, 1000], or unset"),
    (["--dataset", TINY, "--model", "most-popular", "--set", "quota_alpha=0.5"],
     "setting quota_alpha=0.5: the popularity baseline (extractor=popularity) has no "
     "interests to give quotas to; leave it unset"),
    (["--dataset", TINY, "--set", "quota_alpha=1", "--set", "diversity_lambda=1"],
     "setting quota_alpha=1.0: the quota merge and diversity_lambda=1 are two ways"),
]  # fmt: skip
"""``mirec train`` arguments refused before any work, and the words of each message."""


@pytest.mark.parametrize(("args", "message"), EARLY_REFUSALS)
def test_settings_of_the_data_and_the_model_are_checked_before_any_work(tmp_path, args, message):
    result = train(tmp_path, *args)
    user_error(result, message)
    assert result.seconds < 30
    assert not (tmp_path / "run").exists()  # refused before the run folder is locked


COMPARE_REFUSALS = [
    (["--seed", "-5"], "--seed -5: expected an integer from 0 to 9,223,372,036,854,775,807"),
    (["--seed", str(2**64)], f"--seed {2**64}: expected an integer from 0"),
    (["--resamples", "1000000000000"],
     "--resamples 1000000000000: expected an integer from 1 to 100,000"),
    (["--resamples", "0"], "--resamples"),
    (["--by", "age"], "--by 'age': expected one of history_length"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "message"), COMPARE_REFUSALS)
def test_compare_options_are_checked_before_the_runs_are_read(tmp_path, args, message):
    # the two folders do not even exist: the options are refused first (a negative seed was
    # a numpy traceback after both runs had been scored; 10^12 resamples ran for days)
    result = cli("compare", str(tmp_path / "a"), str(tmp_path / "b"), "--quiet", *args)
    user_error(result, message)
    assert result.seconds < 30
    from mirec.runs import compare_folders

    if args[0] != "--resamples" or args[1] != "0":
        value = int(args[1]) if args[0] != "--by" else args[1]
        options = {args[0].removeprefix("--"): value}
        by = options.pop("by", "history_length")
        with pytest.raises(ConfigError, match=re.escape(message)):
            compare_folders(tmp_path / "a", tmp_path / "b", by, **options)


def test_a_set_value_that_is_not_yaml(tmp_path):
    user_error(train(tmp_path, "--dataset", TINY, "--set", "lr=[1"), "--set 'lr=[1'", "not valid")
    for bad in ("lr=*x", "lr=!!python/object:os.system x", "=5", "lr"):
        with pytest.raises(ConfigError):
            load_config(overrides=[bad])


def test_impossible_settings_from_a_yaml_file_and_a_flag(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("model: youtube-dnn\nbatch_size: -5\n")
    user_error(train(tmp_path, "--dataset", TINY, "--config", str(config)), "batch_size=-5")
    user_error(train(tmp_path, "--dataset", TINY, "--id-type", "float"), "id_type='float'")


def test_a_cuda_device_that_is_not_there(tmp_path):
    result = train(tmp_path, "--dataset", TINY, "--model", "youtube-dnn", "--set", "device=cuda:99")
    user_error(result, "setting device='cuda:99'")


# --------------------------------------------------------------------------- experiment grids


def grid_file(tmp_path: Path, grid: dict, **extra) -> Path:
    spec = {
        "name": "hostile",
        "report": str(tmp_path / "out" / "report.md"),
        "runs_dir": str(tmp_path / "runs"),
        "datasets": [TINY],
        "models": ["most-popular"],
        "settings": {"max_epochs": 1},
        "grid": grid,
        "seeds": [1],
        **extra,
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_an_impossible_grid_cell_fails_alone_and_the_rest_runs(tmp_path):
    from mirec.experiments.grid import load_experiment
    from mirec.experiments.runner import cell_result

    path = grid_file(tmp_path, {"num_interests": [0, 1]})
    experiment = load_experiment(path)
    assert [c.variant for c in experiment.cells] == [(("num_interests", 1),)]
    (impossible,) = experiment.impossible
    assert "setting num_interests=0: must be an integer >= 1" in impossible.error
    result = cli("experiment", str(path), "--quiet")
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    assert result.returncode == 1, output  # the grid ran, but one cell failed
    assert "impossible: " in result.stdout and "num_interests=0" in result.stdout
    failed = [line for line in result.stderr.splitlines() if line.startswith("failed: ")]
    assert len(failed) == 1 and "setting num_interests=0" in failed[0]
    assert cell_result(experiment.cells[0]) is not None  # the possible cell finished
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Impossible cells" in report and "num_interests=0" in report


def test_a_damaged_metrics_file_in_a_grid_is_named(tmp_path):
    from mirec.experiments.grid import load_experiment
    from mirec.experiments.runner import cell_result

    (cell,) = load_experiment(grid_file(tmp_path, {})).cells
    cell.run_dir.mkdir(parents=True)
    (cell.run_dir / "metrics.json").write_text('{"test": {"recall@50": 0.3')
    with pytest.raises(DataError, match=r"metrics.json: not valid JSON .* delete it"):
        cell_result(cell)
    (cell.run_dir / "metrics.json").write_text('{"config": 5}')
    assert cell_result(cell) is None


def test_a_grid_with_no_possible_cell_is_refused(tmp_path):
    path = grid_file(tmp_path, {"batch_size": [0, -5]})
    user_error(cli("experiment", str(path), "--quiet"), "grid.yaml", "batch_size=0")
    assert not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------- data files


def log_rows(n: int = 3000, users: int = 60, items: int = 60) -> list[str]:
    """A small interaction log with integer ids (deterministic)."""
    return [f"{1 + (7 * k) % users},{1 + (11 * k + k // 7) % items},{k}" for k in range(n)]


def write_log(path: Path, rows: list[str], header: str = "user,item,ts") -> Path:
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def one_huge_line(tmp_path: Path, fmt: str) -> tuple[Path, list[str], int]:
    """A file of ``fmt`` whose second line is 10 MB of 5M fields; (path, args, its line)."""
    seps = {"sequences": " ", "movielens-sequences": " ", "interactions": ",", "movielens": "::"}
    huge = seps.get(fmt, ",")
    line = huge.join(["1"] * 5_000_000)
    if fmt == "sequences":
        path = tmp_path / "seq.txt"
        path.write_text("1 2 3\n" + line + "\n")
        return path, [], 2
    if fmt == "interactions":
        path = tmp_path / "log.csv"
        path.write_text("u,i,t\n1,2,3\n" + line + "\n")
        return path, ["--columns", "u,i,t"], 3
    if fmt == "movielens":
        path = tmp_path / "ml"
        path.mkdir()
        (path / "ratings.dat").write_text("1::2::5::10\n" + line + "\n")
        return path, [], 2
    if fmt == "movielens-sequences":
        path = tmp_path / "ml" / "ml-1m.txt"
        path.parent.mkdir()
        path.write_text("1 2\n" + line + "\n")
        return path, [], 2
    if fmt == "movielens-100k":
        path = tmp_path / "ml-100k"
        path.mkdir()
        (path / "u.data").write_text("1\t2\t5\t10\n" + "\t".join(["1"] * 5_000_000) + "\n")
        return path, [], 2
    path = tmp_path / "UserBehavior.csv"
    path.write_text("1,2,3,pv,5\n" + line + "\n")
    return path, [], 2


@pytest.mark.parametrize("fmt", readers.FORMATS)
def test_a_10_mb_line_is_refused_in_seconds(tmp_path, fmt):
    path, args, number = one_huge_line(tmp_path, fmt)
    result = train_file(tmp_path, path, fmt, *args)
    message = user_error(result, f"line {number}: longer than 1,048,576 bytes")
    assert "MIREC_MAX_LINE_BYTES" in message
    assert result.seconds < 30  # interpreter and torch start included; the check is ~10 ms


def test_the_line_limit_can_be_raised(tmp_path, monkeypatch):
    path = tmp_path / "seq.txt"
    path.write_text("1 2 3\n7 " + " ".join(str(100 + i % 500) for i in range(300_000)) + "\n")
    assert path.stat().st_size > MiB
    with pytest.raises(DataError, match=r"seq.txt: line 2: longer than 1,048,576 bytes"):
        readers.read_sequences(path)
    monkeypatch.setenv(readers.MAX_LINE_ENV, str(4 * MiB))
    assert readers.read_sequences(path).interactions.num_rows == 300_002
    monkeypatch.setenv(readers.MAX_LINE_ENV, "lots")
    with pytest.raises(ConfigError, match=r"MIREC_MAX_LINE_BYTES='lots': expected a number"):
        readers.read_sequences(path)


def test_a_line_with_many_fields_under_the_limit_is_refused_at_once(tmp_path):
    # 400,000 fields in 800 KB: DuckDB alone would take minutes over it
    path = tmp_path / "UserBehavior.csv"
    path.write_text("1,2,3,pv,5\n" * 2000 + ",".join(["1"] * 400_000) + "\n")
    start = time.monotonic()
    with pytest.raises(DataError, match=r"line 2001: expected 5 fields separated by ',', found"):
        readers.read_taobao(path)
    assert time.monotonic() - start < 5
    quoted = tmp_path / "q.csv"
    quoted.write_text('u,i\n1,2\n"' + ",".join(["x"] * 5000) + '",3\n')
    with pytest.raises(DataError, match=r"q.csv: line 3: holds 5,000 ',' separators"):
        readers.read_interactions(quoted, "u,i")


def test_a_repeated_header_line_is_an_error_not_string_ids(tmp_path):
    rows = [row.rsplit(",", 1)[0] for row in log_rows()]
    rows.insert(1500, "user,item")  # two files joined with `cat`: a header in the middle
    path = write_log(tmp_path / "log.csv", rows, "user,item")
    result = train_file(tmp_path, path, "interactions", "--columns", "user,item")
    user_error(result, "log.csv: line 1502: user column 'user' is not an integer: 'user'")
    assert "--id-type str" in result.stderr


def test_a_20_digit_id_is_an_error_naming_its_line(tmp_path):
    rows = log_rows()
    rows[700] = "12345678901234567890,5,700"
    path = write_log(tmp_path / "log.csv", rows)
    result = train_file(tmp_path, path, "interactions", "--columns", "user,item,ts")
    user_error(result, "line 702: user column 'user' is too large for a 64-bit integer")


def test_a_nul_byte_is_an_error_naming_its_line(tmp_path):
    rows = log_rows()
    rows[2900] = "7\x00,5,2900"
    path = write_log(tmp_path / "log.csv", rows)
    result = train_file(tmp_path, path, "interactions", "--columns", "user,item,ts")
    user_error(result, "log.csv: line 2902: contains a NUL byte")


def test_a_string_in_an_integer_sequence_log_is_an_error(tmp_path):
    path = tmp_path / "seq.txt"
    lines = [f"{u} " + " ".join(str(1 + (u * 3 + k) % 40) for k in range(8)) for u in range(200)]
    lines[150] = "150 3 7 n/a 9"
    path.write_text("\n".join(lines) + "\n")
    result = train_file(tmp_path, path, "sequences")
    user_error(result, "seq.txt: line 151: item id is not an integer: 'n/a'")


def test_a_mostly_text_id_column_stays_text(tmp_path):
    # ids that are text, a few of which look like numbers: strings, as before, no error
    path = tmp_path / "seq.txt"
    path.write_text("u1 a b 17\nu2 c 5 d\n3 e f g\n")
    log = readers.read_sequences(path)
    assert log.interactions.schema.field("user").type == pa.string()
    assert log.interactions["user"].to_pylist()[-1] == "3"


def test_id_type_says_how_ids_are_read(tmp_path):
    rows = log_rows(200)
    rows[10] = "user7,5,10"
    path = write_log(tmp_path / "log.csv", rows)
    with pytest.raises(DataError, match=r"line 12: user column 'user' is not an integer"):
        readers.read_interactions(path, "user,item,ts")
    as_text = readers.read_interactions(path, "user,item,ts", id_type="str")
    assert as_text.interactions["user"].to_pylist()[10] == "user7"
    assert as_text.interactions["item"].type == pa.string()
    with pytest.raises(DataError, match=r"line 12: .* is not an integer: 'user7' \(id_type=int\)"):
        readers.read_interactions(path, "user,item,ts", id_type="int")
    padded = write_log(tmp_path / "p.csv", ["1,007,1", "2,7,2"])
    assert readers.read_interactions(padded, "user,item,ts").interactions["item"].to_pylist() == [
        "007",
        "7",
    ]
    ints = readers.read_interactions(padded, "user,item,ts", id_type="int")
    assert ints.interactions["item"].to_pylist() == [7, 7]
    # a format whose ids are integers reads them as text only when asked
    ml = tmp_path / "u.data"
    ml.write_text("1\t2\t5\t10\nx\t3\t4\t11\n")
    with pytest.raises(DataError, match=r"u.data: line 2: user .* 'x'; set id_type=str"):
        readers.read_movielens_100k(ml)
    assert readers.read_movielens_100k(ml, id_type="str").interactions["user"].to_pylist() == [
        "1",
        "x",
    ]
    with pytest.raises(ConfigError, match="id_type 'float'"):
        readers.read_log(ml, "movielens-100k", id_type="float")


def test_id_type_reaches_the_prepared_sequences(tmp_path):
    from mirec.data.prepare import load_sequences

    rows = log_rows()
    rows[10] = "user7,5,10"
    path = str(write_log(tmp_path / "log.csv", rows))
    kw = {"format": "interactions", "columns": "user,item,ts"}
    with pytest.raises(DataError, match="line 12"):
        load_sequences(path, **kw)
    seqs = load_sequences(path, id_type="str", **kw)
    assert seqs.user_ids.dtype.kind in "OU"  # text ids ("user7" itself is filtered: 1 event)
    assert load_sequences(path, id_type="str", **kw).n_users == seqs.n_users  # cached


def test_id_type_str_through_the_command_line(tmp_path):
    rows = log_rows()
    rows[10] = "user7,5,10"
    path = write_log(tmp_path / "log.csv", rows)
    result = train_file(
        tmp_path, path, "interactions", "--columns", "user,item,ts", "--id-type", "str"
    )
    assert result.returncode == 0, result.stderr


def test_a_hexadecimal_id_is_not_read_as_a_number(tmp_path):
    path = tmp_path / "ratings.csv"
    path.write_text("userId,movieId,rating,timestamp\n1,2,3,4\n1,0x10,3,5\n")
    with pytest.raises(DataError, match=r"line 3: .*movieId.* is not an integer: '0x10'"):
        readers.read_movielens(path)


def test_gzip_content_says_so(tmp_path):
    path = tmp_path / "UserBehavior.csv"
    path.write_bytes(gzip.compress(b"1,2,3,pv,5\n" * 100))
    result = train_file(tmp_path, path, "taobao")
    user_error(result, "UserBehavior.csv: is gzip-compressed data, not text; decompress it")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"PK\x03\x04" + bytes(100), "is a zip archive"),
        (b"PAR1" + bytes(100), "is a Parquet file"),
        (b"\xff\xfeu\x00,\x00i\x00", "is UTF-16 text"),
        (bytes(range(256)) * 4, "looks like a binary file, not text"),
        (b"1,2,3,pv,5\n1,2\x07,3,pv,6\n", "line 2: contains the control character 0x07"),
    ],
)
def test_binary_content_says_so(tmp_path, content, message):
    path = tmp_path / "UserBehavior.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        readers.read_taobao(path)


def test_lines_ending_in_a_lone_carriage_return(tmp_path):
    # old Mac text: each \r ends a line, for the length limit as for the parser
    lines = [f"{u} " + " ".join(str(1 + (u + k) % 60) for k in range(6)) for u in range(60_000)]
    unix, mac = tmp_path / "unix.txt", tmp_path / "mac.txt"
    unix.write_text("\n".join(lines) + "\n")
    mac.write_text("\r".join(lines) + "\r")
    assert mac.stat().st_size > MiB
    expected = readers.read_sequences(unix).interactions
    assert readers.read_sequences(mac).interactions.equals(expected)


def test_a_file_in_the_wrong_format_fails_on_its_first_line(tmp_path):
    path = tmp_path / "u.data"
    path.write_text("1,2,3,4,5,6\n" * 100_000)  # a 6-field csv read as MovieLens 100K
    with pytest.raises(DataError, match=r"u.data: line 1: expected 4 fields separated by"):
        readers.read_movielens_100k(path)


# --------------------------------------------------------------------------- folders


def unreadable_prefix() -> tuple[str, ...]:
    """How to run the CLI so that file permissions apply (root reads everything)."""
    if os.geteuid() != 0:
        return ()
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: permissions cannot be enforced")
    return (setpriv, "--bounding-set=-dac_override,-dac_read_search")


def test_unreadable_folders_and_files(tmp_path, shared_data):
    prefix = unreadable_prefix()
    data = tmp_path / "data"
    shutil.copytree(shared_data / "ml-100k", data / "ml-100k")
    (data / "ml-100k").chmod(0o000)
    try:
        result = train(tmp_path, "--dataset", "ml-100k", "--data-dir", str(data), prefix=prefix)
        user_error(result, "ml-100k", "cannot be read (Permission denied)")
        result = cli("datasets", "--data-dir", str(data), prefix=prefix)
        user_error(result, "ml-100k", "cannot be read (Permission denied)")
        result = train_file(tmp_path, data / "ml-100k", "movielens-100k", prefix=prefix)
        user_error(result, "ml-100k", "cannot be read (Permission denied)")
    finally:
        (data / "ml-100k").chmod(0o755)
    (data / "ml-100k" / "u.data").chmod(0o000)
    try:
        result = train_file(tmp_path, data / "ml-100k", "movielens-100k", prefix=prefix)
        user_error(result, "u.data: cannot be read (Permission denied)")
    finally:
        (data / "ml-100k" / "u.data").chmod(0o644)
    data.chmod(0o000)
    try:
        result = cli("datasets", "--data-dir", str(data), prefix=prefix)
        user_error(result, f"{data}: data directory cannot be read (Permission denied)")
    finally:
        data.chmod(0o755)


def test_a_data_dir_that_is_a_file(tmp_path):
    path = tmp_path / "data"
    path.write_text("not a folder")
    user_error(cli("datasets", "--data-dir", str(path)), "is a file, expected the data directory")


def test_permission_errors_inside_readers_become_data_errors(tmp_path, monkeypatch):
    path = write_log(tmp_path / "log.csv", log_rows(50))

    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "open", refuse)
    with pytest.raises(DataError, match=r"log.csv: cannot be read \(Permission denied\)"):
        readers.read_log(path, "interactions", columns="user,item,ts")


# --------------------------------------------------------------------------- fuzzing

_TOKENS = st.sampled_from(
    [
        b"1",
        b"42",
        b"-3",
        b"007",
        b"0x1f",
        b"12345678901234567890",
        b"9223372036854775808",
        b"user",
        b"pv",
        b"nan",
        b"1.5",
        b"",
        b" ",
        b",",
        b"\t",
        b"|",
        b"::",
        b";",
        b'"',
        b"\n",
        b"\r\n",
        b"\r",
        b"\x00",
        b"\xff",
        b"\xc3\xa9",
        b"(no genres listed)",
    ]
)
_VALID = [
    b"1,2,3,pv,5\n1,3,3,buy,6\n",
    b"1::2::5::10\n2::3::4::11\n",
    b"1\t2\t5\t10\n2\t3\t4\t11\n",
    b"1 2 3\n2 3 4 5\n",
    b"u,i,t\n1,2,3\n2,3,4\n",
    b"2|Heat (1995)|01-Jan-1995||http://x|" + b"|".join([b"0"] * 19) + b"\n",
]


def _mutate(case: tuple[bytes, list[tuple[int, bytes]]]) -> bytes:
    """A valid sample with tokens inserted at some offsets: near-valid input."""
    data, edits = case
    for offset, token in edits:
        offset %= len(data) + 1
        data = data[:offset] + token + data[offset:]
    return data


_CONTENT = st.one_of(
    st.binary(max_size=300),
    st.tuples(
        st.sampled_from(_VALID), st.lists(st.tuples(st.integers(0, 300), _TOKENS), max_size=4)
    ).map(_mutate),
    st.lists(_TOKENS, max_size=80).map(b"".join),
    st.lists(
        st.lists(st.sampled_from([b"1", b"2", b"3", b"17", b"x", b""]), min_size=1, max_size=6),
        min_size=1,
        max_size=40,
    ).map(lambda lines: b"\n".join(b",".join(fields) for fields in lines) + b"\n"),
)


def _read(tmp: Path, fmt: str, content: bytes, role: int, id_type: str | None) -> RawLog:
    """Write ``content`` where ``fmt`` reads it (``role`` picks which file of a folder
    format, the others holding a valid line) and read it."""
    folder = tmp / f"case-{time.monotonic_ns()}"
    folder.mkdir()
    if fmt == "sequences":
        (folder / "s.txt").write_bytes(content)
        if role == 1:
            (folder / "s_item2attributes.json").write_bytes(content)
            (folder / "s.txt").write_bytes(b"1 2 3\n")
        return readers.read_log(folder / "s.txt", fmt, id_type=id_type)
    if fmt == "interactions":
        (folder / "log.csv").write_bytes(content)
        columns = ["1,2", "1,2,3", "u,i", "1,2,,3"][role % 4]
        return readers.read_log(folder / "log.csv", fmt, columns=columns, id_type=id_type)
    if fmt == "movielens":
        files = [
            ("ratings.dat", b"1::2::5::10\n"),
            ("movies.dat", b"2::Heat (1995)::Action\n"),
            ("users.dat", b"1::F::1::10::48067\n"),
        ]
    elif fmt == "movielens-sequences":
        files = [
            ("ml-1m.txt", b"1 2\n"),
            ("movies.dat", b"2::Heat (1995)::Action\n"),
            ("users.dat", b"1::F::1::10::48067\n"),
        ]
    elif fmt == "movielens-100k":
        files = [
            ("u.data", b"1\t2\t5\t10\n"),
            ("u.item", b"2|Heat (1995)|01-Jan-1995||http://x|" + b"|".join([b"0"] * 19) + b"\n"),
            ("u.genre", None),
            ("u.user", b"1|24|M|technician|85711\n"),
        ]
    else:
        files = [("UserBehavior.csv", None)]
    for k, (name, valid) in enumerate(files):
        if k == role % len(files):
            (folder / name).write_bytes(content)
        elif valid is not None:
            (folder / name).write_bytes(valid)
    if fmt == "taobao":
        return readers.read_log(folder / "UserBehavior.csv", fmt, id_type=id_type)
    if fmt == "movielens-sequences":
        return readers.read_log(folder / "ml-1m.txt", fmt, id_type=id_type)
    return readers.read_log(folder, fmt, id_type=id_type)


@pytest.mark.parametrize("fmt", readers.FORMATS)
def test_fuzz_every_reader_gives_a_log_or_a_user_error(tmp_path, fmt):
    @settings(
        max_examples=60,
        deadline=3000,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(
        content=_CONTENT,
        role=st.integers(0, 3),
        id_type=st.sampled_from([None, None, "int", "str"]),
    )
    def check(content: bytes, role: int, id_type: str | None) -> None:
        start = time.monotonic()
        try:
            log = _read(tmp_path, fmt, content, role, id_type)
        except MirecError as err:
            message = str(err)
            assert message and "\n" not in message.strip("\n"), message
        else:
            assert isinstance(log, RawLog)
            user, item = log.interactions["user"].type, log.interactions["item"].type
            assert user == item and (pa.types.is_int64(user) or pa.types.is_string(user))
            if id_type == "str":
                assert pa.types.is_string(user)
        assert time.monotonic() - start < 3

    check()


# --------------------------------------------------------------------------- model folders


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ComiRec-SA trained one epoch on tiny synthetic data: a model folder to damage."""
    from mirec.runs import train_run

    out = tmp_path_factory.mktemp("tiny") / "sa"
    train_run(load_config("comirec-sa", dataset=TINY, max_epochs=1), out, progress=False)
    return out


def _rewrite_weights(folder: Path, change) -> None:
    """Replace the weights by ``change(state)``, saved as another tool would (no digest)."""
    from safetensors.torch import load_file, save_file

    path = folder / "model.safetensors"
    save_file(change(load_file(path)), path)


def _flip_byte(path: Path, offset: int = -1) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _edit_yaml(path: Path, **changes) -> None:
    path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), **changes}))


def _edit_json(path: Path, change) -> None:
    import json

    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _fewer_users(folder: Path) -> None:
    import pyarrow.parquet as pq

    path = folder / "users.parquet"
    table = pq.read_table(path)
    pq.write_table(table.slice(0, table.num_rows - 1), path)


def _shorter(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


FOLDER_DAMAGE = {
    "weights truncated": (
        lambda f: _shorter(f / "model.safetensors"),
        "model.safetensors: not a readable safetensors file",
    ),
    "a bit flipped in the weights": (
        lambda f: _flip_byte(f / "model.safetensors"),
        "model.safetensors: the weights do not match their checksum",
    ),
    "weights missing": (lambda f: (f / "model.safetensors").unlink(), "model.safetensors: missing"),
    "weights of another shape": (
        lambda f: _rewrite_weights(
            f, lambda s: {**s, "item_embedding.weight": s["item_embedding.weight"][:-1]}
        ),
        "model.safetensors: the weights do not fit the model of config.yaml",
    ),
    "weights in half precision": (
        lambda f: _rewrite_weights(f, lambda s: {k: v.half() for k, v in s.items()}),
        "is torch.float16, but the model of config.yaml has torch.float32",
    ),
    "weights holding NaN": (
        lambda f: _rewrite_weights(
            f, lambda s: {**s, "item_embedding.weight": s["item_embedding.weight"] * math.nan}
        ),
        "model.safetensors: item_embedding.weight holds NaN or infinite values",
    ),
    "config of another run": (
        lambda f: _edit_yaml(f / "config.yaml", embedding_dim=32),
        "model.json: records embedding_dim=64, but config.yaml says 32",
    ),
    "config not YAML": (
        lambda f: (f / "config.yaml").write_text("lr: [1\n"),
        "config.yaml: not a valid YAML file",
    ),
    "config with an impossible value": (
        lambda f: _edit_yaml(f / "config.yaml", num_interests=0),
        "config.yaml: setting num_interests=0: must be an integer >= 1",
    ),
    "config missing": (lambda f: (f / "config.yaml").unlink(), "config.yaml: missing"),
    "model.json not JSON": (
        lambda f: _shorter(f / "model.json"),
        "model.json: not valid JSON",
    ),
    "model.json lacking a field": (
        lambda f: _edit_json(f / "model.json", lambda m: m.pop("n_items")),
        "model.json: lacks 'n_items'",
    ),
    "items table truncated": (
        lambda f: _shorter(f / "items.parquet"),
        "items.parquet: not a readable Parquet file",
    ),
    "a bit flipped in a table": (
        lambda f: _flip_byte(f / "users.parquet", 100),
        "users.parquet: not a readable Parquet file (could not verify page integrity",
    ),
    "users table of another run": (
        _fewer_users,
        "model.json: says 70 items and 150 stored users, but the tables hold 70 and 149",
    ),
    "metrics.json truncated": (
        lambda f: _shorter(f / "metrics.json"),
        "metrics.json: not valid JSON",
    ),
    "metrics.json of another run": (
        lambda f: _edit_json(f / "metrics.json", lambda m: m["config"].update(lr=0.5)),
        "metrics.json: records lr=0.5, but config.yaml says 0.002",
    ),
    "the folder missing": (lambda f: shutil.rmtree(f), "no such model folder"),
}


def one_line_error(monkeypatch, capsys, *args: str) -> str:
    """``mirec ARGS`` through the console entry point in this process: exit 2 and a single
    stderr line ``mirec: error: ...``, which is returned."""
    from mirec.cli.main import main

    monkeypatch.setattr(sys, "argv", ["mirec", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    err = capsys.readouterr().err
    assert exc.value.code == 2, (args, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mirec: error: "), (args, err)
    return lines[0]


@pytest.mark.parametrize("damage", FOLDER_DAMAGE)
def test_a_damaged_model_folder_is_one_line_in_every_command(
    tiny_model, tmp_path, monkeypatch, capsys, damage
):
    from mirec import Recommender

    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    user = str(Recommender.load(folder).info.user_ids[0])
    change, message = FOLDER_DAMAGE[damage]
    change(folder)
    commands = [
        ["evaluate", "--checkpoint", str(folder), "--quiet"],
        ["diagnose", "--checkpoint", str(folder), "--quiet"],
        ["inspect", "--checkpoint", str(folder), "--user", user],
        ["recommend", "--checkpoint", str(folder), "--user", user],
    ]
    for args in commands:
        line = one_line_error(monkeypatch, capsys, *args)
        assert message in line and str(folder) in line, (args, line)
    with pytest.raises(MirecError, match=re.escape(message)):
        Recommender.load(folder)


def test_a_damaged_cell_in_a_report(tmp_path, monkeypatch, capsys):
    from mirec import Recommender
    from mirec.experiments.grid import load_experiment
    from mirec.experiments.runner import run_experiment

    path = grid_file(tmp_path, {}, models=["comirec-sa"])
    assert run_experiment(load_experiment(path), progress=False, echo=lambda _: None) == []
    (run_dir,) = (p.parent for p in (tmp_path / "runs").rglob("metrics.json"))
    # the report draws one user's interests from the cell's model folder
    user = Recommender.load(run_dir).info.user_ids[0]
    interest_map = {"dataset": TINY, "model": "comirec-sa", "user": user}
    path = grid_file(tmp_path, {}, models=["comirec-sa"], interest_map=interest_map)
    weights = run_dir / "model.safetensors"
    _flip_byte(weights)
    line = one_line_error(monkeypatch, capsys, "experiment", str(path), "--report-only")
    assert f"{weights}: the weights do not match their checksum" in line
    _shorter(run_dir / "metrics.json")
    line = one_line_error(monkeypatch, capsys, "experiment", str(path), "--report-only")
    assert f"{run_dir / 'metrics.json'}: not valid JSON" in line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--bogus"], "No such option: --bogus"),
        (["train", "--dataset", TINY], "Missing option '--output-dir'; see `"),
        (["inspect", "--checkpoint", "x", "--top", "many"], "Invalid value for '--top'"),
        (["nosuchcommand"], "No such command 'nosuchcommand'"),
        (
            ["train", "--dataset", TINY, "--output-dir", "run", "--resume", "--overwrite"],
            "--resume and --overwrite: give one",
        ),
    ],
)
def test_usage_errors_are_one_line(args, message):
    user_error(cli(*args), message)
