"""ANN retrieval on a large synthetic catalogue: build time, memory, Recall@50 against the
exact lists, and per-user latency of each item index kind (flat, hnsw, ivf).

    python benchmarks/ann.py                  # 1,000,000 items, 1000 test users
    python benchmarks/ann.py --items 50000    # a smoke run
    python benchmarks/ann.py --quick          # 50,000 items, 200 test users

The catalogue is a Gaussian mixture shaped like a trained item table: ``items // 1000``
clusters of heavy-tailed sizes (a genre structure), each item its cluster's centre plus
noise, scaled by a log-normal factor (trained tables give popular items longer vectors).
Each user has K interests, each near the centre of a cluster drawn by cluster size.

Every list is the multi-interest merge of :func:`mirec.retrieval.ann.ann_top_n`, the
code ``Recommender.recommend(..., index=KIND)`` runs: each interest's 50 best items from
the index, ranked by the exact max-over-interests score. Recall@50 is the share of the
exact top-50 (:func:`mirec.retrieval.ranking.top_n` over the whole catalogue) that the
index's list holds. efSearch (hnsw) and nprobe (ivf) are chosen on validation users, the
smallest reaching the target recall; recall and latency are then reported on other (test)
users. Latency is one user per call (K queries), faiss and torch on one thread; builds use
``--build-threads``.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import faiss
import numpy as np
import torch

from mirec.aggregators.max_score import max_over_interests
from mirec.core.contracts import Extracted
from mirec.retrieval.ann import ItemIndex, ann_top_n
from mirec.retrieval.ranking import top_n, users_per_chunk

N = 50
EF_SEARCH = (N, 64, 96, 128, 192, 256, 384, 512)  # a search for N items uses at least N
NPROBE = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
GOAL_P99_MS = 10.0
"""hnsw's latency goal per user, at the target recall."""


class GivenInterests:
    """The retriever protocol over interests given as they are, ranked by their max
    (ComiRec's rule, what an index serves)."""

    uses_user_rows = False

    def __init__(self, num_interests: int) -> None:
        self.num_interests = num_interests

    def retrieval_interests(self, extracted: Extracted) -> Extracted:
        return extracted

    def score(self, extracted: Extracted, items: torch.Tensor) -> torch.Tensor:
        return max_over_interests(extracted.interests, items, extracted.active)


def synthetic(
    n_items: int, n_users: int, d: int, k: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(n_items, d) item vectors and (n_users, k, d) interests, float32."""
    n_clusters = max(10, n_items // 1000)
    sizes = rng.pareto(1.5, n_clusters) + 1.0
    share = sizes / sizes.sum()
    centres = rng.standard_normal((n_clusters, d), dtype=np.float32) * (2.0 / np.sqrt(d))
    cluster = rng.choice(n_clusters, n_items, p=share)
    items = centres[cluster] + rng.standard_normal((n_items, d), dtype=np.float32) / np.sqrt(d)
    items *= np.exp(0.3 * rng.standard_normal((n_items, 1))).astype(np.float32)
    chosen = rng.choice(n_clusters, (n_users, k), p=share)
    noise = rng.standard_normal((n_users, k, d), dtype=np.float32) * (0.5 / np.sqrt(d))
    return items, centres[chosen] + noise


def exact_lists(model: GivenInterests, interests: torch.Tensor, items: torch.Tensor) -> np.ndarray:
    """(U, N) the exact top-N item indices, in the evaluator's chunks."""
    chunk = users_per_chunk(model.num_interests, items.shape[0])
    out = [
        top_n(model, Extracted(interests[lo : lo + chunk]), items, N)[0]
        for lo in range(0, len(interests), chunk)
    ]
    return torch.cat(out).numpy()


def run_index(
    model: GivenInterests, index: ItemIndex | None, interests: torch.Tensor, items: torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """Each user's list, one user per call: (U, N) item indices and (U,) seconds per call."""
    lists, seconds = [], []
    for user in interests.split(1):
        start = time.perf_counter()
        if index is None:
            top, _ = top_n(model, Extracted(user), items, N)
        else:
            top, _ = ann_top_n(model, Extracted(user), items, index, N)
        seconds.append(time.perf_counter() - start)
        lists.append(top)
    return torch.cat(lists).numpy(), np.asarray(seconds)


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(
        np.mean([len(np.intersect1d(f, e)) / len(e) for f, e in zip(found, exact, strict=True)])
    )


def choose(
    model: GivenInterests,
    built: ItemIndex,
    option: str,
    values: tuple[int, ...],
    target: float,
    validation: tuple[torch.Tensor, np.ndarray],
    items: torch.Tensor,
) -> ItemIndex:
    """The smallest ``option`` value whose Recall@N on the validation users reaches
    ``target`` (the largest tried when none does)."""
    interests, exact = validation
    chosen = built
    for value in values:
        chosen = replace(built, options={**built.options, option: value})
        found, seconds = run_index(model, chosen, interests, items)
        got = recall(found, exact)
        print(
            f"  validation {built.kind} {option}={value}: Recall@{N} {got:.4f}, "
            f"p99 {1e3 * np.quantile(seconds, 0.99):.2f} ms"
        )
        if got >= target:
            break
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument(
        "--users", type=int, default=1000, help="test users (and half as many validation users)"
    )
    parser.add_argument("--quick", action="store_true", help="--items 50000 --users 200")
    parser.add_argument("--d", type=int, default=64)
    parser.add_argument("--k", type=int, default=4, help="interests per user")
    parser.add_argument("--target", type=float, default=0.95, help="validation Recall@50 to reach")
    parser.add_argument(
        "--exact-users",
        type=int,
        default=200,
        help="test users timed on flat and exact (full scans)",
    )
    parser.add_argument("--build-threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.quick:
        args.items, args.users = 50_000, 200

    rng = np.random.default_rng(args.seed)
    n_validation = max(1, args.users // 2)
    vectors, interests = synthetic(args.items, n_validation + args.users, args.d, args.k, rng)
    items, interests = torch.from_numpy(vectors), torch.from_numpy(interests)
    model = GivenInterests(args.k)
    print(
        f"synthetic catalogue: {args.items:,} items, d={args.d}, {max(10, args.items // 1000):,} "
        f"clusters; {args.k} interests per user near cluster centres"
    )
    print(
        f"efSearch / nprobe chosen on {n_validation} validation users (smallest reaching "
        f"Recall@{N} >= {args.target}); figures on {args.users} other (test) users"
    )
    print(
        f"faiss {faiss.__version__}; builds on {args.build_threads} threads, latency one user "
        f"per call on 1 thread"
    )

    torch.set_num_threads(args.build_threads)
    start = time.perf_counter()
    exact = exact_lists(model, interests, items)
    print(f"exact lists of {len(interests)} users: {time.perf_counter() - start:.1f} s")
    validation = (interests[:n_validation], exact[:n_validation])
    test, test_exact = interests[n_validation:], exact[n_validation:]
    timed = min(args.exact_users, args.users)

    rows = []
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    found, seconds = run_index(model, None, test[:timed], items)
    rows.append(
        ("exact (torch)", "full scan", None, None, recall(found, test_exact[:timed]), seconds)
    )
    for kind, option, values in (
        ("flat", None, ()),
        ("hnsw", "ef_search", EF_SEARCH),
        ("ivf", "nprobe", NPROBE),
    ):
        faiss.omp_set_num_threads(args.build_threads)
        start = time.perf_counter()
        built = ItemIndex.build(vectors, kind)
        build = time.perf_counter() - start
        size = faiss.serialize_index(built.index).nbytes
        faiss.omp_set_num_threads(1)
        if option is not None:
            values = tuple(v for v in values if v <= built.options.get("nlist", v))
            built = choose(model, built, option, values, args.target, validation, items)
        users = test[:timed] if kind == "flat" else test
        found, seconds = run_index(model, built, users, items)
        setting = ", ".join(f"{k}={v}" for k, v in built.options.items()) or "exact"
        rows.append((kind, setting, build, size, recall(found, test_exact[: len(users)]), seconds))

    header = ["build s", "MiB", f"recall@{N}", "p50 ms", "p99 ms", "users"]
    print(f"\n{'index':<14}{'setting':<40}" + "".join(f"{h:>10}" for h in header))
    for kind, setting, build, size, got, seconds in rows:
        build_text = "-" if build is None else f"{build:.1f}"
        size_text = "-" if size is None else f"{size / 2**20:.0f}"
        p50, p99 = 1e3 * np.quantile(seconds, 0.5), 1e3 * np.quantile(seconds, 0.99)
        cells = [build_text, size_text, f"{got:.4f}", f"{p50:.2f}", f"{p99:.2f}", len(seconds)]
        print(f"{kind:<14}{setting:<40}" + "".join(f"{c:>10}" for c in cells))
    _, _, _, _, got, seconds = next(row for row in rows if row[0] == "hnsw")
    p99 = 1e3 * np.quantile(seconds, 0.99)
    met = "met" if got >= args.target and p99 <= GOAL_P99_MS else "NOT met"
    goal = f"p99 <= {GOAL_P99_MS} ms at Recall@{N} >= {args.target}"
    print(f"\nhnsw goal, {goal}: p99 {p99:.2f} ms at Recall@{N} {got:.4f}, {met}")


if __name__ == "__main__":
    main()
