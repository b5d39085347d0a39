"""Evaluation users/s at a small and a production-size catalogue, beside the machine's own
matrix-multiply roofline for the same shapes.

For each catalogue size (default 12,101 items, amazon-beauty's, and 2,000,000), a
ComiRec-SA (d 64, K 4, maxlen 20) with a random item table ranks real-shaped test users:
amazon-beauty's test users, their histories and target sets with every item index mapped
at random into the catalogue (so history lengths and target counts are the real ones).
Three figures, timed in turn within every round so that a drift in machine load hits all:

* **eval**: :func:`mirec.evaluation.evaluator.evaluate`, the full exact pass (extraction,
  the catalogue in chunks, top-50 with the running merge, the metrics);
* **scoring**: the same users and chunks, extraction and ``max_k <v_u^k, e_i>`` as the
  ranking path computes it (:meth:`mirec.aggregators.max_score.ScoreTiles.max_scores`),
  with no top-N selection: the topk-free baseline;
* **matmul**: the bare product ``(users * K) x d @ d x items`` over the whole catalogue,
  in the evaluator's batches of users and the ranking path's product tiles, into one
  reused output; no extraction, no max, no selection: what the machine's matrix multiply
  gives for these shapes (the roofline).

It prints users/s of each, their medians over ``--repeats`` rounds, and eval / matmul
(the issue's goal: >= 70%). Torch uses ``--threads`` threads (default 1).

    python benchmarks/eval_speed.py                          # 12,101 and 2,000,000 items
    python benchmarks/eval_speed.py --items 12101 200000 --users 256 --repeats 1   # quick
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from mirec import __version__ as mirec_version
from mirec.aggregators.max_score import PRODUCT_TILE, ScoreTiles
from mirec.config import load_config
from mirec.core.chunked_top import chunks, item_chunk
from mirec.data.examples import EvaluationSet
from mirec.data.prepare import prepare
from mirec.evaluation.evaluator import evaluate
from mirec.models.build import build_model
from mirec.models.interest_model import InterestModel
from mirec.retrieval.ranking import users_per_chunk

REPO = Path(__file__).resolve().parents[1]
DATASET, MAXLEN, EMBEDDING_DIM, INTERESTS = "amazon-beauty", 20, 64, 4
GOAL = 0.7
"""The issue's goal: evaluation at >= 70% of the bare matrix multiply's users/s."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Evaluation users/s against a matmul roofline.")
    p.add_argument(
        "--items", type=int, nargs="+", default=[12_101, 2_000_000], help="catalogue sizes"
    )
    p.add_argument(
        "--users",
        type=int,
        default=None,
        help="test users timed per pass (default: all 2,237 of amazon-beauty's)",
    )
    p.add_argument("--repeats", type=int, default=3, help="rounds of the three timings")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=REPO.parent / "shared" / "data",
        help="folder holding amazon-beauty/ (default: ../shared/data from the repo root)",
    )
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args(argv)
    if min(args.repeats, args.threads, *args.items) < 1 or (args.users or 1) < 1:
        p.error("--items, --users, --repeats and --threads must be >= 1")
    if min(args.items) < 50:
        p.error("--items: a catalogue needs at least 50 items (the top-50)")
    return args


def real_shaped_users(test: EvaluationSet, n_items: int, users: int | None, seed: int):
    """amazon-beauty's test users with every item index mapped at random into 1..n_items
    (a catalogue smaller than the source's folds indices onto it)."""
    rng = np.random.default_rng(seed)
    picked = test if users is None else test.sample(users, seed)
    source_items = int(max(picked.histories.max(), picked.target_items.max()))
    mapping = np.concatenate([[0], rng.integers(1, n_items + 1, source_items)])
    histories = torch.from_numpy(mapping[picked.histories.numpy()])
    # a target set stays a set: drop what the mapping made repeat within a user
    targets = mapping[picked.target_items]
    owner = np.repeat(np.arange(len(picked)), np.diff(picked.target_offsets))
    pairs = np.unique(np.stack([owner, targets], 1), axis=0)
    counts = np.bincount(pairs[:, 0], minlength=len(picked))
    return EvaluationSet(
        users=picked.users,
        histories=histories,
        target_offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        target_items=pairs[:, 1].astype(np.int64),
    )


@torch.no_grad()
def scoring_only(model: InterestModel, users: EvaluationSet) -> None:
    """The evaluator's batches and chunks, extraction and max-over-interests scores, no
    selection: the topk-free baseline."""
    items = model.item_vectors()
    tiles = ScoreTiles()
    batch = users_per_chunk(model.num_interests, items.shape[0])
    for lo in range(0, len(users), batch):
        extracted = model.extract(users.histories[lo : lo + batch])
        for start, end in chunks(items.shape[0]):
            tiles.max_scores(extracted.interests, items[start:end], extracted.active)


@torch.no_grad()
def bare_matmul(interests: torch.Tensor, items: torch.Tensor) -> None:
    """(U, K, d) interests x the catalogue in the evaluator's batches of users and the
    ranking path's product tiles, each product into one reused output: the roofline."""
    k, d = interests.shape[1:]
    n = items.shape[0]
    batch = users_per_chunk(k, n)
    width = max(1, PRODUCT_TILE // (batch * k))
    out = torch.empty(batch * k * width)
    for lo in range(0, len(interests), batch):
        flat = interests[lo : lo + batch].reshape(-1, d)
        for start in range(0, n, width):
            end = min(start + width, n)
            tile = out[: len(flat) * (end - start)].view(len(flat), end - start)
            torch.mm(flat, items[start:end].T, out=tile)


def timed(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def measure(n_items: int, test: EvaluationSet, args) -> dict[str, list[float]]:
    config = load_config(
        "comirec-sa",
        dataset=DATASET,
        maxlen=MAXLEN,
        embedding_dim=EMBEDDING_DIM,
        num_interests=INTERESTS,
        seed=args.seed,
    )
    torch.manual_seed(args.seed)
    model = build_model(config, n_items, MAXLEN)
    assert isinstance(model, InterestModel)
    model.eval()
    users = real_shaped_users(test, n_items, args.users, args.seed)
    with torch.no_grad():
        interests = model.extract(users.histories).interests
    items = model.item_vectors().detach()
    flops = 2 * len(users) * INTERESTS * EMBEDDING_DIM * n_items
    print(
        f"\n{n_items:,} items: {len(users):,} users, {users_per_chunk(INTERESTS, n_items)} per "
        f"batch, item chunks of {item_chunk(n_items):,} ({len(chunks(n_items))} per batch); "
        f"{flops / 1e9:.1f} GFLOP of products per pass",
        flush=True,
    )
    figures: dict[str, list[float]] = {}
    passes = {
        "eval": lambda: evaluate(model, users, device="cpu"),
        "scoring": lambda: scoring_only(model, users),
        "matmul": lambda: bare_matmul(interests, items),
    }
    for r in range(args.repeats):
        shown = []
        for name, work in passes.items():
            rate = len(users) / timed(work)
            figures.setdefault(name, []).append(rate)
            shown.append(f"{name} {rate:,.1f}")
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"  round {r + 1}: users/s " + ", ".join(shown) + f" (load {load:.1f})", flush=True)
    figures["matmul_gflops"] = [flops / (len(users) / rate) / 1e9 for rate in figures["matmul"]]
    return figures


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    data = prepare(DATASET, data_dir=args.data_dir, maxlen=MAXLEN)
    print(
        f"python {platform.python_version()}, torch {torch.__version__}, mirec {mirec_version}; "
        f"{args.threads} torch thread(s), {os.cpu_count()} cores; ComiRec-SA d {EMBEDDING_DIM}, "
        f"K {INTERESTS}, maxlen {MAXLEN}, random item table; {DATASET}'s test users "
        f"({len(data.test):,}) with items mapped at random into the catalogue; "
        f"{args.repeats} round(s)"
    )
    rows = [(n, measure(n, data.test, args)) for n in args.items]
    print(
        "\n| items | eval users/s | scoring only (no top-N) | bare matmul (roofline) | "
        "eval / roofline | matmul GFLOP/s |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for n, got in rows:
        eval_rate, score_rate, roof = (
            statistics.median(got[k]) for k in ("eval", "scoring", "matmul")
        )
        print(
            f"| {n:,} | {eval_rate:,.1f} | {score_rate:,.1f} | {roof:,.1f} | "
            f"{eval_rate / roof:.0%} | {statistics.median(got['matmul_gflops']):.1f} |"
        )
    print(f"\n(medians of {args.repeats} round(s); the goal is eval / roofline >= {GOAL:.0%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
