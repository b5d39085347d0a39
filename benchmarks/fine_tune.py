"""Fine-tuning against retraining, on the time-based protocol of docs/protocol.md section 11.

For each dataset with timestamps, the log is cut at two times, T1 and T2 (its 70th and 85th
time percentiles by default). Three models of the same config are then scored on what every
user did after T2, from their history up to T2:

* **unchanged**: trained on the log up to T1, as it was;
* **fine-tuned**: that model fine-tuned on the log up to T2 (``mirec train --init-from``);
* **retrained**: trained from scratch on the log up to T2.

Each training run is an ordinary ``mirec train`` (early stopping on its own protocol
validation users); nothing is chosen on the users' behaviour after T2. Prints the table
and puts it into ``--report`` (docs/fine-tuning.md) between the page's "generated" markers,
leaving its hand-written sections as they are:

    OMP_NUM_THREADS=1 python benchmarks/fine_tune.py --data-dir DATA --report docs/fine-tuning.md
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import torch

import mirec
from mirec.atomic import write_text_atomic
from mirec.evaluation.metrics import ranking_metrics

# each dataset's log as (user, item, ts[, category]) rows, read where it lies
SOURCES = {
    "ml-100k": (
        "SELECT column0 AS user, column1 AS item, column3 AS ts "
        "FROM read_csv('{data}/ml-100k/u.data', delim='\t', header=false)"
    ),
    "ml-latest-small": (
        "SELECT userId AS user, movieId AS item, timestamp AS ts "
        "FROM read_csv('{data}/ml-latest-small/ratings.csv', header=true)"
    ),
    "taobao-sample": (
        "SELECT column0 AS user, column1 AS item, column4 AS ts, column2 AS category "
        "FROM read_csv('{data}/taobao-sample/UserBehavior.csv', header=false)"
    ),
}
CUTOFF = 50
GOAL_SHARE, GOAL_TIME = 0.97, 0.30
"""The goal: the fine-tuned model reaches 97% of the retrain's Recall@50 in 30% of its time."""


def cut_logs(
    con: duckdb.DuckDBPyConnection, query: str, quantiles: tuple[float, float], work: Path
):
    """The log up to T1 and up to T2 as CSV files, and the rows after T2."""
    con.execute(f"CREATE OR REPLACE TABLE log AS {query}")
    t1, t2 = con.execute(
        f"SELECT quantile_disc(ts, {quantiles[0]}), quantile_disc(ts, {quantiles[1]}) FROM log"
    ).fetchone()
    columns = [row[0] for row in con.execute("DESCRIBE log").fetchall()]
    paths = {}
    for name, until in (("t1", t1), ("t2", t2)):
        paths[name] = work / f"{name}.csv"
        con.execute(
            f"COPY (SELECT {', '.join(columns)} FROM log WHERE ts <= {until} ORDER BY ts) "
            f"TO '{paths[name]}' (HEADER, DELIMITER ',')"
        )
    return paths, t2, ",".join(columns)


def score_future(
    rec: mirec.Recommender, con: duckdb.DuckDBPyConnection, t2: int
) -> tuple[dict[str, float], int]:
    """Recall@50 and NDCG@50 (docs/protocol.md section 5) of ``rec`` on every user with a
    history up to T2 and behaviour after it: history = items up to T2 (the model reads the
    latest maxlen), targets = distinct items after T2 (an item the model does not know
    counts in |T| and is never found)."""
    rows = con.execute(
        f"""
        SELECT user,
               list(item ORDER BY ts, item) FILTER (WHERE ts <= {t2}) AS history,
               list(DISTINCT item) FILTER (WHERE ts > {t2}) AS targets
        FROM log GROUP BY user
        HAVING count(*) FILTER (WHERE ts <= {t2}) > 0 AND count(*) FILTER (WHERE ts > {t2}) > 0
        ORDER BY user
        """
    ).fetchall()
    kind = type(rec.info.item_ids[0])
    histories = [[kind(i) for i in history] for _, history, _ in rows]
    lists = rec.recommend(histories, n=CUTOFF)
    hits = torch.tensor(
        [
            [r.item in set(map(kind, targets)) for r in recs] + [False] * (CUTOFF - len(recs))
            for (_, _, targets), recs in zip(rows, lists, strict=True)
        ]
    )
    n_targets = torch.tensor([len(targets) for _, _, targets in rows])
    metrics = ranking_metrics(hits, n_targets, cutoffs=(CUTOFF,))
    return {name: float(values.mean()) for name, values in metrics.items()}, len(rows)


def run_dataset(name: str, args: argparse.Namespace, work: Path) -> list[dict]:
    con = duckdb.connect()
    paths, t2, columns = cut_logs(
        con, SOURCES[name].format(data=args.data_dir), (args.t1, args.t2), work
    )
    common = {"format": "interactions", "columns": columns, "progress": False}
    runs = {}
    runs["unchanged"] = mirec.train(
        dataset=str(paths["t1"]), model=args.model, output_dir=work / "t1", **common
    )
    runs["fine-tuned"] = mirec.train(
        dataset=str(paths["t2"]), init_from=work / "t1", output_dir=work / "ft", **common
    )
    runs["retrained"] = mirec.train(
        dataset=str(paths["t2"]), model=args.model, output_dir=work / "t2", **common
    )
    rows = []
    for label, rec in runs.items():
        figures, users = score_future(rec, con, t2)
        fit = rec.info.metrics.fit
        rows.append({"dataset": name, "model": label, "users": users, **figures,
                     "epochs": fit.epochs, "train_seconds": fit.train_seconds})  # fmt: skip
        extra = rec.info.metrics.fine_tuned
        if extra:
            rows[-1]["new_items"] = extra["new_items"]
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| dataset | model | users | Recall@50 | NDCG@50 | of retrain's Recall@50 | epochs "
        "| train s | of retrain's time |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        retrain = next(
            r for r in rows if r["dataset"] == row["dataset"] and r["model"] == "retrained"
        )
        share = row["recall@50"] / retrain["recall@50"]
        time_share = row["train_seconds"] / retrain["train_seconds"]
        shown = "—" if row["model"] == "unchanged" else f"{time_share:.0%}"
        lines.append(
            f"| {row['dataset']} | {row['model']} | {row['users']:,} | {row['recall@50']:.4f} "
            f"| {row['ndcg@50']:.4f} | {share:.1%} | {row['epochs']} "
            f"| {row['train_seconds']:.1f} | {shown} |"
        )
    return "\n".join(lines)


def verdicts(rows: list[dict]) -> list[str]:
    out = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        got = {r["model"]: r for r in rows if r["dataset"] == dataset}
        ft, full, old = got["fine-tuned"], got["retrained"], got["unchanged"]
        share = ft["recall@50"] / full["recall@50"]
        time_share = ft["train_seconds"] / full["train_seconds"]
        met = share >= GOAL_SHARE and time_share <= GOAL_TIME and ft["recall@50"] > old["recall@50"]
        out.append(
            f"- {dataset}: {'meets' if met else 'misses'} the goal: {share:.1%} of the "
            f"retrain's Recall@50 in {time_share:.0%} of its training time; "
            f"{'beats' if ft['recall@50'] > old['recall@50'] else 'does not beat'} the "
            f"unchanged model ({ft['recall@50']:.4f} against {old['recall@50']:.4f})."
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--datasets", nargs="+", default=list(SOURCES), choices=list(SOURCES))
    parser.add_argument("--model", default="comirec-sa")
    parser.add_argument("--t1", type=float, default=0.70, help="T1's time quantile.")
    parser.add_argument("--t2", type=float, default=0.85, help="T2's time quantile.")
    parser.add_argument("--report", type=Path, default=None)
    args = parser.parse_args()
    start = time.perf_counter()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.datasets:
            work = Path(tmp) / name
            work.mkdir()
            rows += run_dataset(name, args, work)
            print(f"{name}: done ({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    text = "\n".join([table(rows), "", *verdicts(rows)])
    print(text)
    if args.report is not None:
        command = (
            " ".join(["python benchmarks/fine_tune.py", *sys.argv[1:]])
            .replace(str(args.data_dir), "DATA")
            .replace(str(args.report), str(args.report.name))
        )
        generated = (
            "Generated by `OMP_NUM_THREADS=1 " + command + "` (benchmarks/fine_tune.py): the "
            f"time-based protocol of [protocol.md](protocol.md#11-fine-tuning-the-time-based-"
            f"protocol), {args.model}, T1 and T2 at the log's {args.t1:.0%} and {args.t2:.0%} "
            f"time quantiles, seed 42, {torch.get_num_threads()} thread(s). Training times are "
            "each run's own `train_seconds` (metrics.json).\n\n" + text + "\n"
        )
        write_generated(args.report, generated)


BEGIN, END = "<!-- generated by benchmarks/fine_tune.py -->", "<!-- end of generated -->"
"""The report's generated part lies between these lines: a new report replaces it and keeps
the rest of the page (its hand-written sections and analysis) as it is."""


def write_generated(report: Path, generated: str) -> None:
    """Put ``generated`` between the markers of ``report`` (a new page when it has none)."""
    block = f"{BEGIN}\n{generated}{END}\n\n"
    text = report.read_text() if report.is_file() else ""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1].lstrip("\n")
    else:
        text = f"# Fine-tuning a model on a grown log\n\n{block}"
    write_text_atomic(report, text)


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
