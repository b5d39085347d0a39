"""Training examples/s as the catalogue grows: dense Adam against sparse item gradients.

Random data of amazon-beauty's shape (22,363 users, about 198,500 interactions: 5 + a
geometric number of items per user, mean 8.9; items drawn uniformly from the catalogue, so
a batch touches as many distinct rows as it can), held as int32 items the way
memory-mapped data stores them, at each catalogue size of ``--catalogues``. For each model
of ``--models`` (published configs; maxlen 20, d 64, K 4 as published) and each mode:

* ``dense``: ``sparse_items=false``, Adam over every weight (a step costs the whole item table);
* ``sparse``: ``sparse_items=true``, RowAdam on the item table, Adam on the rest;

the step of :func:`mirec.training.trainer.fit` runs on the run's own objects
(``TrainingExamples`` gathers the batch, ``build_objective`` gives the config's negatives:
the exact softmax up to 16,384 items, 4,096 shared uniform ones beyond, or ``--set
negative_sampling=popularity`` for popularity draws with log-Q), ``--warmup`` untimed steps,
then ``--batches`` timed ones (fewer if they pass ``--time-cap`` seconds). Rounds repeat
``--repeats`` times (the modes alternate which goes first); the table gives medians, what
``sparse_items=auto`` picks, and the ratio of auto's examples/s at the largest catalogue to
the smallest.

    python benchmarks/catalogue_speed.py --catalogues 12101,2000000 --models comirec-sa,mind
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch

from mirec import __version__ as mirec_version
from mirec.config import load_config
from mirec.core.config import Config
from mirec.data.prepare import PreparedData, split_sequences
from mirec.data.sequences import Sequences
from mirec.models.build import build_model
from mirec.models.interest_model import InterestModel
from mirec.training.optimizer import (
    SPARSE_ITEMS_MIN_CATALOGUE,
    build_optimizer,
    sparse_item_gradients,
)
from mirec.training.sampled_softmax import resolve_negatives
from mirec.training.trainer import TrainingExamples, build_objective, train_step

# amazon-beauty's shape (PROTOCOL.md): users, mean sequence length, maxlen
N_USERS, MEAN_LENGTH, MAXLEN = 22363, 8.876, 20
MIN_LENGTH = 5
MODES = {"dense": False, "sparse": True}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--catalogues",
        default="12101,2000000",
        help="comma-separated catalogue sizes (items); the ratio compares the last to the first",
    )
    p.add_argument("--models", default="comirec-sa,mind", help="comma-separated mirec configs")
    p.add_argument("--modes", default="dense,sparse", help="comma-separated: dense, sparse")
    p.add_argument("--batches", type=int, default=40, help="timed training steps per run, at most")
    p.add_argument(
        "--time-cap",
        type=float,
        default=60.0,
        help="seconds of timed steps per run, at most (dense Adam at 2M items: seconds a step)",
    )
    p.add_argument("--warmup", type=int, default=5, help="untimed training steps first")
    p.add_argument("--repeats", type=int, default=1, help="rounds of every run")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting of every model's config, e.g. negative_sampling=popularity",
    )
    args = p.parse_args(argv)
    args.catalogues = [int(n) for n in args.catalogues.split(",") if n.strip()]
    args.models = [m for m in args.models.split(",") if m.strip()]
    args.modes = [m for m in args.modes.split(",") if m.strip()]
    if min(args.batches, args.repeats, args.threads) < 1 or args.warmup < 0:
        p.error("--batches, --repeats and --threads must be >= 1, --warmup >= 0")
    if args.time_cap <= 0:
        p.error("--time-cap must be > 0")
    if not args.catalogues or min(args.catalogues) < 2:
        p.error("--catalogues: sizes of at least 2 items")
    if not args.modes or set(args.modes) - set(MODES):
        p.error(f"--modes: some of {', '.join(MODES)}")
    return args


def random_data(n_items: int, seed: int) -> PreparedData:
    """Sequences of amazon-beauty's shape over ``n_items`` uniformly drawn items (int32),
    split and cut as PROTOCOL.md says."""
    rng = np.random.default_rng(seed)
    extra = rng.geometric(1 / (MEAN_LENGTH - MIN_LENGTH + 1), N_USERS) - 1
    lengths = MIN_LENGTH + extra
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    items = rng.integers(1, n_items + 1, int(offsets[-1]), dtype=np.int32)
    seqs = Sequences(
        user_ids=np.arange(N_USERS, dtype=np.int64),
        offsets=offsets,
        items=items,
        item_ids=np.arange(1, n_items + 1, dtype=np.int64),
    )
    return split_sequences(f"random-{n_items}", seqs, seed, MAXLEN)


def examples_per_second(config: Config, data: PreparedData, sparse: bool, args) -> float:
    """Up to ``args.batches`` timed steps of ``fit``'s loop (fewer when they pass
    ``args.time_cap`` seconds), after ``args.warmup`` untimed ones."""
    cpu = torch.device("cpu")
    torch.manual_seed(config.seed)
    model = build_model(config, data.sequences.n_items, data.maxlen)
    assert isinstance(model, InterestModel)
    optimizer = build_optimizer(model, config, sparse)
    examples = TrainingExamples.of(data, cpu)
    objective = build_objective(config, data, cpu, sparse)
    generator = torch.Generator().manual_seed(config.seed)
    order = torch.randperm(len(examples), generator=generator)
    total_loss = torch.zeros(())

    def steps(first: int, count: int, cap: float = math.inf) -> int:
        """Steps ``first``, ``first + 1``, ... until ``count`` or ``cap`` seconds: how many."""
        nonlocal total_loss
        start = time.perf_counter()
        for b in range(first, first + count):
            at = b * config.batch_size % (len(order) - config.batch_size)
            index = order[at : at + config.batch_size]
            histories, targets = examples.batch(index)
            total_loss += train_step(model, optimizer, histories, targets, objective, generator)
            if time.perf_counter() - start > cap:
                return b - first + 1
        return count

    model.train()
    steps(0, args.warmup)
    start = time.perf_counter()
    done = steps(args.warmup, args.batches, args.time_cap)
    seconds = time.perf_counter() - start
    if not torch.isfinite(total_loss):
        raise RuntimeError(f"training loss is {float(total_loss)}")
    return done * config.batch_size / seconds


def auto_mode(n_items: int, config: Config) -> str:
    """What ``sparse_items=auto`` picks for ``config`` on ``n_items`` items."""
    return "sparse" if sparse_item_gradients(config, n_items) else "dense"


def fmt(value: float) -> str:
    return f"{value:,.0f}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    print(
        f"python {platform.python_version()}, torch {torch.__version__}, mirec {mirec_version}; "
        f"{args.threads} torch thread(s), {os.cpu_count()} cores; random data of amazon-beauty's "
        f"shape ({N_USERS:,} users, int32 items), maxlen {MAXLEN}; {args.batches} timed steps "
        f"after {args.warmup} warm-up, {args.repeats} round(s); auto's threshold "
        f"{SPARSE_ITEMS_MIN_CATALOGUE:,} items"
    )
    figures: dict[tuple[str, int, str], list[float]] = {}
    negatives: dict[tuple[str, int], str] = {}
    for n_items in args.catalogues:
        data = random_data(n_items, args.seed)
        for name in args.models:
            config = load_config(name, overrides=args.overrides, maxlen=MAXLEN, seed=args.seed)
            resolved = resolve_negatives(config.num_negatives, n_items, config.negative_sampling)
            negatives[name, n_items] = (
                f"{resolved} {config.negative_sampling}" if resolved else "exact softmax"
            )
            for r in range(args.repeats):
                modes = args.modes if r % 2 == 0 else args.modes[::-1]
                for mode in modes:
                    speed = examples_per_second(config, data, MODES[mode], args)
                    gc.collect()  # the last run's tables, before the next one allocates
                    figures.setdefault((name, n_items, mode), []).append(speed)
                    print(
                        f"{name} {n_items:,} items ({negatives[name, n_items]}, batch "
                        f"{config.batch_size}) {mode}: {fmt(speed)} examples/s",
                        flush=True,
                    )
        del data
        gc.collect()

    print(f"\n| model | items | negatives | {' | '.join(args.modes)} | auto picks |")
    print("| --- | ---: | --- | " + " | ".join("---:" for _ in args.modes) + " | --- |")
    for name in args.models:
        config = load_config(name, overrides=args.overrides, maxlen=MAXLEN, seed=args.seed)
        for n_items in args.catalogues:
            cells = [fmt(statistics.median(figures[name, n_items, m])) for m in args.modes]
            print(
                f"| {name} | {n_items:,} | {negatives[name, n_items]} | {' | '.join(cells)} | "
                f"{auto_mode(n_items, config)} |"
            )
    first, last = args.catalogues[0], args.catalogues[-1]
    print()
    for name in args.models:
        config = load_config(name, overrides=args.overrides, maxlen=MAXLEN, seed=args.seed)
        picks = auto_mode(first, config), auto_mode(last, config)
        if not all(m in args.modes for m in picks):
            continue
        small = statistics.median(figures[name, first, picks[0]])
        large = statistics.median(figures[name, last, picks[1]])
        print(
            f"{name}: examples/s at {last:,} items / at {first:,} items, as auto trains: "
            f"{large / small:.2f} ({picks[1]} / {picks[0]}; goal >= 0.70)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
