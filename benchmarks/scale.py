"""Preparing a production-size log on one machine: time and peak memory of each stage.

1. **generate**: a synthetic interaction log written as Parquet parts (``--interactions``
   rows over ``--users`` users and ``--items`` items), built ``--chunk-users`` users at a
   time with numpy so the generator's memory stays small whatever the size. It follows
   :mod:`mirec.data.synthetic`: the catalogue is cut into item clusters (the planted
   interests); each user draws 1 to 4 clusters, cluster popularity following Zipf's law,
   and walks between them (stays with probability 0.7); inside a cluster an item is drawn
   by Zipf's law over its rank. Sequence lengths are ``5 + Poisson(mean - 5)``; each user
   starts at a random time and waits 0 to 3,600 s between events (a wait of 0, a tie, 5%
   of the time). Ids are scattered 63-bit integers, not row numbers, so the re-indexing
   is real work, and the rows of each part are shuffled, so ordering them is too.
2. **prepare**: :func:`mirec.data.prepare.prepare` on the parts, as ``mirec train
   --dataset 'DIR/part-*.parquet' --format interactions --columns user,item,ts`` calls
   it, in a fresh process with an empty cache: DuckDB reads, checks, filters (5-core),
   re-indexes and orders the log, spilling to disk beyond ``$MIREC_INGEST_MEMORY``
   (default 4GB), and writes the memory-mapped arrays of the cache entry; then the
   protocol's split and evaluation sets. The stages are those :mod:`mirec.data.ingest`
   logs (read, check, filter, vocabularies, order and write the items, write the
   vocabularies); each one's peak resident memory is read from ``/proc/self/status``
   (``VmHWM``, reset between stages through ``/proc/self/clear_refs``), beside what DuckDB
   held on disk at its end.
3. **load**: the same call in another fresh process, which finds the cache entry.

Every stage prints its wall time and peak RSS; the goal (issue 14) is the whole of
``prepare`` in <= 15 minutes at <= 8 GB on the 2-core, 24 GB machine, for 100M rows over
5M users and 2M items (the defaults)::

    python benchmarks/scale.py --out /tmp/mirec-scale
    python benchmarks/scale.py --users 50000 --items 20000 --interactions 1000000 --out /tmp/s1
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import multiprocessing
import os
import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

CLUSTER_SIZE = 2000
"""Items per planted interest (cluster)."""
MAX_INTERESTS, STICKINESS, ZIPF_EXPONENT, TIE_SHARE = 4, 0.7, 1.0, 0.05
ID_MULTIPLIER = 0x9E3779B97F4A7C15
"""An odd constant: k -> (k * it) mod 2^63 is a bijection, so ids are scattered yet distinct."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Generate a big synthetic log and prepare it.")
    p.add_argument("--users", type=int, default=5_000_000)
    p.add_argument("--items", type=int, default=2_000_000)
    p.add_argument("--interactions", type=int, default=100_000_000)
    p.add_argument("--out", type=Path, required=True, help="Folder for the parts and cache.")
    p.add_argument("--chunk-users", type=int, default=250_000, help="Users per Parquet part.")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", action="store_true", help="Reuse parts already in --out/log.")
    args = p.parse_args(argv)
    if args.interactions < 5 * args.users:
        p.error("--interactions must be at least 5 x --users (every user has 5 or more)")
    return args


def scattered_ids(index: np.ndarray) -> np.ndarray:
    """Distinct positive int64 ids for distinct indices below 2^63."""
    mixed = (index.astype(np.uint64) + np.uint64(1)) * np.uint64(ID_MULTIPLIER)
    return (mixed & np.uint64((1 << 63) - 1)).astype(np.int64)


def zipf_cdf(n: int) -> np.ndarray:
    weights = 1.0 / np.arange(1, n + 1) ** ZIPF_EXPONENT
    return np.cumsum(weights) / weights.sum()


def generate_part(
    rng: np.random.Generator, first_user: int, n_users: int, mean_length: float, n_items: int
) -> pa.Table:
    """The rows of users ``first_user .. first_user + n_users - 1``, shuffled."""
    n_clusters = max(1, n_items // CLUSTER_SIZE)
    bounds = np.linspace(0, n_items, n_clusters + 1).astype(np.int64)
    n_interests = rng.integers(1, MAX_INTERESTS + 1, n_users)
    cluster_cdf = zipf_cdf(n_clusters)
    interests = np.searchsorted(cluster_cdf, rng.random((n_users, MAX_INTERESTS)))
    interests = np.minimum(interests, n_clusters - 1)
    lengths = 5 + rng.poisson(mean_length - 5, n_users)
    owner = np.repeat(np.arange(n_users), lengths)
    starts = np.cumsum(lengths) - lengths
    step = np.arange(len(owner)) - starts[owner]
    # as mirec.data.synthetic: an interest is drawn at the first step and at every jump
    jump = (step == 0) | (rng.random(len(owner)) >= STICKINESS)
    slot = (rng.random(len(owner)) * n_interests[owner]).astype(np.int64)
    last_jump = np.maximum.accumulate(np.where(jump, np.arange(len(owner)), 0))
    cluster = interests[owner, slot[last_jump]]
    size = bounds[cluster + 1] - bounds[cluster]
    rank = np.searchsorted(zipf_cdf(int(size.max())), rng.random(len(owner)))
    item = bounds[cluster] + np.minimum(rank, size - 1)
    waits = rng.integers(1, 3600, len(owner))
    waits[rng.random(len(owner)) < TIE_SHARE] = 0
    waits[step == 0] = 0
    begin = rng.integers(1_500_000_000, 1_600_000_000, n_users)
    elapsed = np.cumsum(waits)
    ts = begin[owner] + elapsed - elapsed[starts][owner]  # waits[starts] are 0
    order = rng.permutation(len(owner))
    return pa.table(
        {
            "user": scattered_ids(first_user + owner[order]),
            "item": scattered_ids(item[order] + (1 << 40)),
            "ts": ts[order],
        }
    )


def generate(args: argparse.Namespace, folder: Path) -> int:
    """Write the parts into ``folder``; the number of rows written."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    mean_length = args.interactions / args.users
    rows = 0
    for k, first in enumerate(range(0, args.users, args.chunk_users)):
        part = generate_part(
            rng, first, min(args.chunk_users, args.users - first), mean_length, args.items
        )
        pq.write_table(part, folder / f"part-{k:05d}.parquet")
        rows += part.num_rows
    return rows


class StagePeaks(logging.Handler):
    """Each log record of mirec.data.ingest ends a stage: its wall time and peak RSS."""

    def __init__(self) -> None:
        super().__init__()
        self.stages: list[dict] = []
        self.start = time.perf_counter()
        reset_peak()

    def emit(self, record: logging.LogRecord) -> None:
        self.end_stage(getattr(record, "stage", record.getMessage()), getattr(record, "spilled", 0))

    def end_stage(self, name: str, spilled: int = 0) -> None:
        now = time.perf_counter()
        self.stages.append(
            {"stage": name, "seconds": now - self.start, "peak_rss": peak_rss(), "spilled": spilled}
        )
        self.start = now
        reset_peak()


def peak_rss() -> int:
    """Peak resident bytes of this process since the last :func:`reset_peak`."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak() -> None:
    """Start a new peak (Linux: writing 5 to clear_refs resets VmHWM to the current RSS)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def prepare_in_process(pattern: str, cache: str, result: str) -> None:
    """Child process: prepare the log as ``mirec train`` does; stages to ``result``."""
    os.environ["MIREC_CACHE_DIR"] = cache
    from mirec.data.prepare import prepare

    stages = StagePeaks()
    logger = logging.getLogger("mirec.data.ingest")
    logger.addHandler(stages)
    logger.setLevel(logging.INFO)
    start = time.perf_counter()
    data = prepare(pattern, format="interactions", columns="user,item,ts")
    stages.end_stage("split and evaluation sets")
    seqs = data.sequences
    summary = {
        "seconds": time.perf_counter() - start,
        # each stage's peak was reset after it: the process's peak is the largest
        "peak_rss": max(stage["peak_rss"] for stage in stages.stages),
        "stages": stages.stages,
        "users": seqs.n_users,
        "items": seqs.n_items,
        "interactions": seqs.n_interactions,
        "memory_mapped": isinstance(seqs.items, np.memmap),
    }
    Path(result).write_text(json.dumps(summary))


def run_child(pattern: str, cache: Path, result: Path) -> dict:
    process = multiprocessing.get_context("spawn").Process(
        target=prepare_in_process, args=(pattern, str(cache), str(result))
    )
    process.start()
    process.join()
    if process.exitcode != 0:
        sys.exit(f"preparing failed (exit code {process.exitcode})")
    return json.loads(result.read_text())


def gb(n: float) -> str:
    return f"{n / 2**30:.2f} GB"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    log_dir, cache = args.out / "log", args.out / "cache"
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
    if args.keep and any(log_dir.glob("part-*.parquet")):
        print("generate: reusing the parts in", log_dir)
    else:
        shutil.rmtree(log_dir, ignore_errors=True)
        start = time.perf_counter()
        rows = generate(args, log_dir)
        generated = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        size = sum(p.stat().st_size for p in log_dir.glob("*.parquet"))
        print(
            f"generate: {rows:,} rows, {args.users:,} users, {args.items:,} items in "
            f"{generated:.1f} s, peak RSS {gb(peak)}, {size / 2**20:.0f} MiB Parquet"
        )
    shutil.rmtree(cache, ignore_errors=True)
    pattern = str(log_dir / "part-*.parquet")
    prepared = run_child(pattern, cache, args.out / "prepare.json")
    print(
        f"prepare: {prepared['interactions']:,} interactions, {prepared['users']:,} users, "
        f"{prepared['items']:,} items after the 5-core filter"
    )
    for stage in prepared["stages"]:
        print(
            f"  {stage['stage']:<36} {stage['seconds']:7.1f} s   peak RSS {gb(stage['peak_rss'])}"
            f"   on disk (DuckDB) {gb(stage['spilled'])}"
        )
    print(f"prepare total: {prepared['seconds']:.1f} s, peak RSS {gb(prepared['peak_rss'])}")
    loaded = run_child(pattern, cache, args.out / "load.json")
    print(
        f"load (cache hit), split and evaluation sets: {loaded['seconds']:.2f} s, "
        f"peak RSS {gb(loaded['peak_rss'])}, "
        f"memory-mapped: {loaded['memory_mapped']}"
    )
    goal = prepared["seconds"] <= 15 * 60 and prepared["peak_rss"] <= 8 * 2**30
    print(f"goal (<= 15 min, <= 8 GB peak RSS): {'met' if goal else 'missed'}")


if __name__ == "__main__":
    main()
