"""`mirec recommend --all-users` users/s beside the evaluator's, on the same model.

One model folder (``--model-dir``, or a ComiRec-SA trained here for ``--epochs`` on
``--dataset``, default ml-1m) and its catalogue; each round times, in turn:

* **eval**: :func:`mirec.evaluation.evaluator.evaluate` on the protocol's test users, as
  ``mirec train`` and ``mirec evaluate`` run it (the figure ``eval_users_per_second`` of
  ``metrics.json``): extraction, the whole catalogue, the top 50, the metrics; the test
  users are about a tenth of all, so as many passes as make up as many users are timed
  together;
* **all users**: :func:`mirec.serving.bulk_lists.write_all_lists`, what ``mirec recommend
  --all-users --out FILE -n 50`` runs: every user of the folder from their stored history,
  the top 50 over the whole catalogue, the Parquet file written and moved into place.

It prints both users/s of every round, their medians over ``--repeats`` rounds and the
ratio of the medians (the goal of issue 26: all users at >= 80% of the evaluator's).
Torch uses ``--threads`` threads (default 1); the machine's load is printed each round.

    OMP_NUM_THREADS=1 python benchmarks/all_users.py                     # trains ml-1m, 1 epoch
    OMP_NUM_THREADS=1 python benchmarks/all_users.py --model-dir runs/mine --repeats 5
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import mirec
from mirec import Recommender
from mirec.evaluation.evaluator import evaluate
from mirec.runs import load_run
from mirec.serving.bulk_lists import USERS_PER_CHUNK, write_all_lists

REPO = Path(__file__).resolve().parents[1]
GOAL = 0.8
"""The issue's goal: every user's lists at >= 80% of the evaluator's users/s."""
N = 50
"""The evaluator's depth (its largest cutoff): the lists are as long."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="--all-users users/s beside the evaluator's.")
    p.add_argument("--model-dir", type=Path, help="a retrieval model folder (default: train one)")
    p.add_argument("--dataset", default="ml-1m", help="what to train on without --model-dir")
    p.add_argument("--epochs", type=int, default=1, help="epochs to train without --model-dir")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=REPO.parent / "shared" / "data",
        help="where the dataset lives (default: ../shared/data from the repo root)",
    )
    p.add_argument("--repeats", type=int, default=5, help="rounds of the two timings")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--chunk-size", type=int, default=USERS_PER_CHUNK, help="users per pass")
    args = p.parse_args(argv)
    if min(args.repeats, args.threads, args.epochs, args.chunk_size) < 1:
        p.error("--repeats, --threads, --epochs and --chunk-size must be >= 1")
    return args


def load() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="mirec-all-users-") as tmp:
        folder = args.model_dir
        if folder is None:
            folder = Path(tmp) / "model"
            print(f"training comirec-sa on {args.dataset}, {args.epochs} epoch(s) ...", flush=True)
            mirec.train(
                dataset=args.dataset, model="comirec-sa", data_dir=args.data_dir,
                output_dir=folder, max_epochs=args.epochs, progress=False,
            )  # fmt: skip
        loaded, data = load_run(folder)
        category = data.sequences.primary_category()
        settings = {
            "item_category": None if category is None else torch.from_numpy(category),
            "diversity_lambda": loaded.config.diversity_lambda,
        }
        rec = Recommender.load(folder)
        info = rec.info
        recorded = None if info.metrics is None else info.metrics.figures.eval_users_per_second
        print(
            f"{info.name} on {info.dataset}: {info.n_items:,} items, {info.n_users:,} users "
            f"({len(data.test):,} test users), K {info.num_interests}, maxlen {info.maxlen}, "
            f"device {info.device}; training's eval_users_per_second: {recorded}",
            flush=True,
        )
        out = Path(tmp) / "recs.parquet"
        evaluate(loaded.model, data.test, **settings)  # warm-up of both paths
        write_all_lists(rec, out, n=N, chunk_size=args.chunk_size)
        # the test users are a tenth of all: the evaluator is timed over as many passes as
        # make up as many users, so that both timings are as long (and as exposed to noise)
        passes = max(1, round(info.n_users / len(data.test)))
        evals, lists = [], []
        for r in range(args.repeats):
            timed = [evaluate(loaded.model, data.test, **settings) for _ in range(passes)]
            evals.append(sum(e.n_users for e in timed) / sum(e.seconds for e in timed))
            written = write_all_lists(rec, out, n=N, chunk_size=args.chunk_size)
            lists.append(written.users_per_second)
            print(
                f"  round {r + 1}: eval {evals[-1]:,.0f} users/s ({passes} passes), all users "
                f"{lists[-1]:,.0f} users/s ({written.users:,} users, {written.rows:,} rows, "
                f"{written.seconds:.2f} s), ratio {lists[-1] / evals[-1]:.0%} (load "
                f"{load():.1f})",
                flush=True,
            )
    eval_median, lists_median = statistics.median(evals), statistics.median(lists)
    ratio = lists_median / eval_median
    print(
        f"\n{time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores, "
        f"{args.threads} torch thread(s), python {platform.python_version()}, torch "
        f"{torch.__version__}, mirec {mirec.__version__}; medians of {args.repeats}:\n"
    )
    print("| eval users/s (test users) | --all-users users/s | all users / eval | goal |")
    print("|---:|---:|---:|---|")
    met = "met" if ratio >= GOAL else "missed"
    print(f"| {eval_median:,.0f} | {lists_median:,.0f} | {ratio:.0%} | >= {GOAL:.0%}: {met} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
