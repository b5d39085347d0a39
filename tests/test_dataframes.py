"""DataFrames in (issue 26, item 3): ``mirec.train(data=df, user=..., item=..., time=...)``
on a pandas or polars DataFrame or a pyarrow Table gives the model that ``mirec train
--format interactions --columns ...`` gives on the same rows in a file, weight for weight;
a bad table gets the file's one-line error, naming the column and the row, before anything
trains; ``resume`` continues a killed run from the same rows.

Every run has one thread (``OMP_NUM_THREADS=1``, as the suite runs), so the comparisons
are exact; small sizes keep an epoch near a second.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pytest
from safetensors.numpy import load_file

import mirec
from mirec.errors import ConfigError, DataError
from mirec.run_folder import STAGING_DIR

pd = pytest.importorskip("pandas")
pl = pytest.importorskip("polars")

REPO = Path(__file__).resolve().parents[1]
SMALL = {"model": "comirec-sa", "max_epochs": 2, "embedding_dim": 16, "batch_size": 512}
ML100K = ("user_id", "item_id", "rating", "ts")


def cli_settings(settings: dict) -> list[str]:
    args = ["--model", settings["model"]]
    for key, value in settings.items():
        if key != "model":
            args += ["--set", f"{key}={value}"]
    return args


def weights(folder: Path) -> dict[str, np.ndarray]:
    return load_file(str(folder / "model.safetensors"))


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert np.array_equal(wa[name], wb[name]), f"{name} differs"


def model_json(folder: Path) -> dict:
    record = json.loads((folder / "model.json").read_text())
    record.pop("dataset"), record["config"].pop("dataset"), record["config"].pop("columns")
    record["config"].pop("sep")
    return record


def u_data(shared_data: Path) -> Path:
    return shared_data / "ml-100k" / "u.data"


def ml100k_frames(shared_data: Path) -> dict[str, object]:
    """ml-100k's u.data as a pandas and a polars DataFrame and a pyarrow Table."""
    names = list(ML100K)
    table = pacsv.read_csv(
        u_data(shared_data),
        read_options=pacsv.ReadOptions(column_names=names),
        parse_options=pacsv.ParseOptions(delimiter="\t"),
    )
    frame = pd.read_csv(u_data(shared_data), sep="\t", names=names)
    return {"pandas": frame, "polars": pl.from_pandas(frame), "pyarrow": table}


@pytest.fixture(scope="module")
def file_run(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run of `mirec train` on u.data itself, the file the frames are read from."""
    from typer.testing import CliRunner

    from mirec.cli.main import app

    out = tmp_path_factory.mktemp("file") / "run"
    args = ["train", "--dataset", str(u_data(shared_data)), "--format", "interactions",
            "--columns", "1,2,4", "--sep", "tab", "--output-dir", str(out), "--quiet",
            *cli_settings(SMALL)]  # fmt: skip
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.parametrize("kind", ["pandas", "polars", "pyarrow"])
def test_a_frame_trains_the_model_its_file_trains(kind, shared_data, file_run, tmp_path):
    data = ml100k_frames(shared_data)[kind]
    out = tmp_path / kind
    rec = mirec.train(data=data, user="user_id", item="item_id", time="ts", output_dir=out,
                      progress=False, **SMALL)  # fmt: skip
    assert_same_weights(file_run, out)
    assert model_json(out) == model_json(file_run)
    assert rec.recommend([50, 172, 181], n=10) == mirec.load(file_run).recommend(
        [50, 172, 181], n=10
    )
    # the run records the rows' copy, by content: every kind of table gives the same file
    config = json.loads((out / "model.json").read_text())["config"]
    dataset = Path(config["dataset"])
    assert dataset.parent.name == "frames" and dataset.is_file()
    assert config["format"] == "interactions" and config["columns"] == "user,item,timestamp"
    others = ml100k_frames(shared_data)
    from mirec.data.frames import frame_log

    logs = [frame_log(t, user="user_id", item="item_id", time="ts") for t in others.values()]
    assert {log.dataset for log in logs} == {str(dataset)}


def taobao_with_text_ids(shared_data: Path) -> pa.Table:
    """taobao-sample's rows with text ids (``u1``, ``i2268318``) and its category column."""
    names = ["user", "item", "category", "behavior", "ts"]
    table = pacsv.read_csv(
        shared_data / "taobao-sample" / "UserBehavior.csv",
        read_options=pacsv.ReadOptions(column_names=names),
    )
    text = {
        name: pc.binary_join_element_wise(prefix, table.column(name).cast(pa.string()), "")
        for name, prefix in (("user", "u"), ("item", "i"))
    }
    return table.set_column(0, "user", text["user"]).set_column(1, "item", text["item"])


@pytest.mark.parametrize("kind", ["pandas", "polars"])
def test_text_ids_and_categories_train_as_from_their_file(kind, shared_data, tmp_path):
    table = taobao_with_text_ids(shared_data)
    log = tmp_path / "log.csv"
    pacsv.write_csv(table, log)
    settings = {**SMALL, "max_epochs": 1}
    by_file = mirec.train(
        dataset=str(log), format="interactions", columns="user,item,ts,category",
        output_dir=tmp_path / "file", progress=False, **settings,
    )  # fmt: skip
    frame = table.to_pandas() if kind == "pandas" else pl.from_arrow(table)
    by_frame = mirec.train(data=frame, user="user", item="item", time="ts", category="category",
                           output_dir=tmp_path / "frame", progress=False, **settings)  # fmt: skip
    assert_same_weights(tmp_path / "file", tmp_path / "frame")
    record = model_json(tmp_path / "frame")
    assert record == model_json(tmp_path / "file")
    assert record["item_id_type"] == "str" and len(record["category_names"]) > 100
    assert by_frame.info.item_ids == by_file.info.item_ids
    assert all(i.startswith("i") for i in by_frame.info.item_ids)


RESUMED = """
import sys
import pandas as pd
import mirec
frame = pd.read_csv(sys.argv[1], sep="\\t", names={names!r})
mirec.train(data=frame, user="user_id", item="item_id", time="ts", output_dir=sys.argv[2],
            progress=False, **{settings!r})
"""


@pytest.fixture
def one_thread():
    """One PyTorch thread in this process while the test runs: the killed run trains in a
    subprocess with one, and the runs compared with it weight for weight must sum in the
    same order (the suite's process has as many threads as cores unless a test before this
    one set fewer)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_a_killed_frame_run_resumes_from_the_same_rows(shared_data, tmp_path, one_thread):
    settings = {**SMALL, "max_epochs": 3}
    out = tmp_path / "run"
    script = RESUMED.format(names=list(ML100K), settings=settings)
    path = os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": path}
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(u_data(shared_data)), str(out)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    checkpoint, deadline = out / STAGING_DIR / "checkpoint.safetensors", time.monotonic() + 240
    while not checkpoint.exists():
        assert proc.poll() is None, (
            f"the run ended before its first checkpoint: {proc.stderr.read()}"
        )
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL, "the run ended before the kill"
    assert not (out / "model.safetensors").exists()

    frame = ml100k_frames(shared_data)["pandas"]
    with pytest.raises(mirec.MirecError, match="holds an unfinished run"):
        mirec.train(data=frame, user="user_id", item="item_id", time="ts", output_dir=out,
                    progress=False, **settings)  # fmt: skip
    # other rows are another dataset: they cannot resume it
    fewer = frame.iloc[:-1]
    with pytest.raises(mirec.MirecError, match="its unfinished run has dataset="):
        mirec.train(data=fewer, user="user_id", item="item_id", time="ts", output_dir=out,
                    progress=False, resume=True, **settings)  # fmt: skip
    mirec.train(data=frame, user="user_id", item="item_id", time="ts", output_dir=out,
                progress=False, resume=True, **settings)  # fmt: skip
    whole = tmp_path / "whole"
    mirec.train(data=frame, user="user_id", item="item_id", time="ts", output_dir=whole,
                progress=False, **settings)  # fmt: skip
    assert_same_weights(whole, out)


def small_log() -> dict[str, list]:
    """Ten rows: five users' two interactions each."""
    return {
        "user_id": [1, 1, 2, 2, 3, 3, 4, 4, 5, 5],
        "item_id": [10, 11, 10, 12, 11, 12, 10, 13, 11, 13],
        "ts": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0],
    }


def with_value(column: str, row: int, value: object) -> dict[str, list]:
    log = small_log()
    log[column] = [*log[column][:row], value, *log[column][row + 1 :]]
    return log


def make(kind: str, log: dict[str, list]) -> object:
    if kind == "pandas":
        return pd.DataFrame(log)
    if kind == "polars":
        return pl.DataFrame(log, strict=False)
    return pa.table(log)


LABEL = {"pandas": "pandas.DataFrame", "polars": "polars.DataFrame", "pyarrow": "pyarrow.Table"}
BAD = [
    ("a missing column", small_log(), {"time": "when"},
     r"no column 'when' \(wanted as the time\); it has: 'user_id', 'item_id', 'ts'$"),
    ("a null id", with_value("user_id", 3, None), {}, r"row 4: column 'user_id' is empty$"),
    ("a control character", {**small_log(), "item_id": ["a"] * 6 + ["b\x07c"] + ["d"] * 3}, {},
     r"row 7: column 'item_id' .*control character"),
    ("a float id", with_value("item_id", 5, 2.5), {},
     r"row 6: column 'item_id' is not an integer id: 2\.5$"),
    ("a word among integers", {**small_log(), "user_id": [str(u) for u in range(9)] + ["x"]}, {},
     r"row 10: user column 'user_id' .*'x'"),
    ("a time that is not a number",
     {**small_log(), "ts": [str(t) for t in range(8)] + ["soon", "9"]}, {},
     r"row 9: column 'ts' is not a number: 'soon'$"),
    ("a time that is not finite", with_value("ts", 1, float("inf")), {},
     r"row 2: column 'ts' is not a finite number: inf$"),
    ("an empty table", {k: v[:0] for k, v in small_log().items()}, {}, r"no rows$"),
    ("too few interactions", small_log(), {}, r"no user has 5 or more interactions"),
]  # fmt: skip


@pytest.mark.parametrize("kind", ["pandas", "polars", "pyarrow"])
@pytest.mark.parametrize(("case", "log", "columns", "message"), BAD, ids=[b[0] for b in BAD])
def test_a_bad_table_is_one_line_naming_column_and_row(kind, case, log, columns, message, tmp_path):
    if case == "an empty table" and kind != "pyarrow":
        log = {k: pa.array(v, pa.int64()).to_pylist() for k, v in log.items()}
    data = make(kind, log)
    out = tmp_path / "run"
    args = {"user": "user_id", "item": "item_id", "time": "ts", **columns}
    with pytest.raises(DataError) as err:
        mirec.train(data=data, **args, output_dir=out, model="comirec-sa", progress=False)
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith(f"data ({LABEL[kind]}): "), text
    assert re.search(message, text), text
    if case != "too few interactions":  # that one is known once the log is filtered
        assert not out.exists(), "refused after the run folder was made"


def test_a_column_of_mixed_python_types_names_its_first_odd_row(tmp_path):
    frame = pd.DataFrame({**small_log(), "user_id": [1, 2, 3, "four", 5, 6, 7, 8, 9, 10]})
    with pytest.raises(DataError, match=r"^data \(pandas\.DataFrame\): row 4: column 'user_id' "
                                        r"holds 'four' \(str\) among int values"):  # fmt: skip
        mirec.train(data=frame, user="user_id", item="item_id", output_dir=tmp_path / "run")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([(1, 10, 1.0)], r"^data \(builtins\.list\): expected a table"),
        ({"user_id": [1]}, r"^data \(builtins\.dict\): expected a table"),
        ("log.csv", r"^data \(builtins\.str\): expected a table.*a file goes in dataset="),
        (pd.Series([1, 2]), r"^data \(pandas\.Series\): expected a table"),
        (pl.DataFrame(small_log()).lazy(), r"^data \(polars\.LazyFrame\): .*collect\(\) it first"),
    ],
)
def test_what_is_not_a_table_is_refused(data, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        mirec.train(data=data, user="user_id", item="item_id", output_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_the_arguments_of_data_are_checked(tmp_path):
    frame = pa.table(small_log())
    out = {"output_dir": tmp_path / "run"}
    with pytest.raises(ConfigError, match=r"^data= needs item="):
        mirec.train(data=frame, user="user_id", **out)
    with pytest.raises(ConfigError, match=r"one column is given two roles"):
        mirec.train(data=frame, user="user_id", item="user_id", **out)
    with pytest.raises(ConfigError, match=r"^data= and dataset=, columns=: give the rows"):
        mirec.train(data=frame, user="user_id", item="item_id", dataset="ml-100k",
                    columns="a,b", **out)  # fmt: skip
    with pytest.raises(ConfigError, match=r"^user=, item=: name columns of data="):
        mirec.train(dataset="ml-100k", user="user_id", item="item_id", **out)
    with pytest.raises(ConfigError, match=r"^title='name': an interactions log has no title"):
        mirec.train(data=frame, user="user_id", item="item_id", title="name", **out)
    with pytest.raises(DataError, match=r"has two columns named 'user_id'"):
        frame2 = pa.table([[1], [2]], names=["user_id", "user_id"])
        mirec.train(data=frame2, user="user_id", item="item_id", **out)
    assert not (tmp_path / "run").exists()


def test_rows_are_counted_by_position_whatever_the_index(tmp_path):
    frame = pd.DataFrame(with_value("user_id", 3, None), index=range(100, 110))
    with pytest.raises(DataError, match=r"^data \(pandas\.DataFrame\): row 4: column 'user_id'"):
        mirec.train(data=frame, user="user_id", item="item_id", output_dir=tmp_path / "run")


def test_datetimes_order_a_log_as_their_seconds(shared_data):
    from mirec.data.frames import frame_log
    from mirec.data.prepare import load_sequences

    seconds = ml100k_frames(shared_data)["pandas"]
    dated = seconds.assign(ts=pd.to_datetime(seconds["ts"], unit="s"))
    polars = pl.from_pandas(dated).with_columns(pl.col("ts").dt.cast_time_unit("ms"))
    prepared = []
    for table in (seconds, dated, polars):
        log = frame_log(table, user="user_id", item="item_id", time="ts")
        prepared.append(load_sequences(log.dataset, **log.settings()))
    first = prepared[0]
    for other in prepared[1:]:
        assert np.array_equal(other.items, first.items)
        assert np.array_equal(other.offsets, first.offsets)
        assert np.array_equal(other.item_ids, first.item_ids)
