"""Training and evaluation throughput of mirec's ComiRec-SA, beside torch-rechub's.

On amazon-beauty (maxlen 20, d 64, K 4), per round:

* mirec: ``--batches`` training steps of mirec's default ``comirec-sa`` config, the step of
  :func:`mirec.training.trainer.fit` (history gather, ``model.loss`` with the config's
  shared negatives, Adam), timed after ``--warmup`` untimed steps; then
  :func:`mirec.evaluation.evaluator.evaluate` on the test users (full catalogue, exact).
* torch-rechub (with ``--rechub-python``): the same number of steps of its ComiRec-SA,
  list-wise with 128 fresh uniform negatives per example, batch 256, Adam lr 1e-3, through
  its ``MatchTrainer``, on the same training examples in the same order; then its user
  tower scored exactly against its item tower, max over interests, top-50. It runs in a
  subprocess (``rechub_comirec_sa.py``) with the given interpreter, so torch-rechub is
  never imported here.

Rounds alternate between the two ``--repeats`` times (which goes first alternates too);
the table shows medians and the ratio mirec / torch-rechub. Each process uses
``--threads`` torch threads (default 1: the per-core figures of ANCHORS.md).

    python benchmarks/train_speed.py --rechub-python /tmp/rechub-venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mirec import __version__ as mirec_version
from mirec.config import Config, load_config
from mirec.data.examples import training_positions
from mirec.data.prepare import PreparedData, prepare
from mirec.evaluation.evaluator import evaluate
from mirec.models.interest_model import InterestModel
from mirec.models.registry import build_model
from mirec.training.sampled_softmax import resolve_negatives
from mirec.training.trainer import TrainingExamples, build_objective, train_step

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RECHUB_SCRIPT = HERE / "rechub_comirec_sa.py"
DATASET, MAXLEN, EMBEDDING_DIM, INTERESTS = "amazon-beauty", 20, 64, 4
# torch-rechub's training, as ANCHORS.md ran it
RECHUB_BATCH, RECHUB_NEGATIVES, RECHUB_LR, RECHUB_TEMPERATURE = 256, 128, 1e-3, 0.02


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Training examples/s and evaluation users/s: mirec vs torch-rechub."
    )
    p.add_argument(
        "--rechub-python",
        help="python of a virtual environment with torch-rechub 0.9.0 (see benchmarks/README.md)",
    )
    p.add_argument("--batches", type=int, default=200, help="timed training steps per round")
    p.add_argument("--warmup", type=int, default=20, help="untimed training steps first")
    p.add_argument("--repeats", type=int, default=3, help="rounds of each implementation")
    p.add_argument(
        "--eval-passes", type=int, default=3, help="test-set evaluations timed together per round"
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=REPO.parent / "shared" / "data",
        help="folder holding amazon-beauty/ (default: ../shared/data from the repo root)",
    )
    p.add_argument("--seed", type=int, default=42)
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting of mirec's comirec-sa config, e.g. num_negatives=1024",
    )
    args = p.parse_args(argv)
    if min(args.batches, args.repeats, args.threads, args.eval_passes) < 1 or args.warmup < 0:
        p.error("--batches, --repeats, --eval-passes and --threads must be >= 1, --warmup >= 0")
    return args


def negatives_label(negatives: int) -> str:
    return f"{negatives} shared negatives per batch" if negatives else "exact softmax (all items)"


def example_order(
    data: PreparedData, n: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` training examples in a seeded random order (a second pass over the training
    split when ``n`` exceeds it): their indices into :class:`TrainingExamples`, their user
    rows and their positions."""
    rows, positions = training_positions(data.sequences, data.split.train)
    pick = np.resize(np.random.default_rng(seed).permutation(len(rows)), n)
    return pick, rows[pick], positions[pick]


def mirec_round(
    data: PreparedData, config: Config, order_index: np.ndarray, args
) -> dict[str, float]:
    """One round of mirec: timed training steps, then a timed test-set evaluation."""
    torch.manual_seed(config.seed)
    model = build_model(config, data.sequences.n_items, data.maxlen)
    assert isinstance(model, InterestModel)
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    examples = TrainingExamples.of(data, torch.device("cpu"))
    objective = build_objective(config, data, torch.device("cpu"))
    # the same examples, in the same seeded order, as torch-rechub's rounds get
    order = torch.from_numpy(order_index)
    total_loss = torch.zeros(())

    def steps(first: int, count: int) -> None:
        nonlocal total_loss
        for b in range(first, first + count):
            index = order[b * config.batch_size : (b + 1) * config.batch_size]
            histories, targets = examples.batch(index)
            total_loss += train_step(model, optimizer, histories, targets, objective, generator)

    model.train()
    steps(0, args.warmup)
    start = time.perf_counter()
    steps(args.warmup, args.batches)
    train_s = time.perf_counter() - start
    if not torch.isfinite(total_loss):
        raise RuntimeError(f"mirec training loss is {float(total_loss)}")
    model.eval()
    start = time.perf_counter()
    for _ in range(args.eval_passes):
        result = evaluate(model, data.test, device="cpu")
    eval_s = time.perf_counter() - start
    return {
        "train_examples_per_second": args.batches * config.batch_size / train_s,
        "eval_users_per_second": args.eval_passes * result.n_users / eval_s,
    }


def write_rechub_inputs(
    path: Path, data: PreparedData, rows: np.ndarray, positions: np.ndarray
) -> None:
    seqs, test = data.sequences, data.test
    starts = seqs.offsets[rows].astype(np.int64)
    np.savez(
        path,
        items=seqs.items.astype(np.int64),
        n_items=np.int64(seqs.n_items),
        n_users=np.int64(seqs.n_users),
        maxlen=np.int64(data.maxlen),
        train_user=rows.astype(np.int64),
        train_start=starts,
        train_end=starts + positions.astype(np.int64),
        test_user=test.users.astype(np.int64),
        test_histories=test.histories.numpy().astype(np.int64),
        test_target_offsets=test.target_offsets.astype(np.int64),
        test_target_items=test.target_items.astype(np.int64),
    )


def rechub_round(python: str, npz: Path, args) -> dict:
    command = [
        python,
        str(RECHUB_SCRIPT),
        str(npz),
        f"--batches={args.batches}",
        f"--warmup={args.warmup}",
        f"--batch-size={RECHUB_BATCH}",
        f"--negatives={RECHUB_NEGATIVES}",
        f"--lr={RECHUB_LR}",
        f"--embedding-dim={EMBEDDING_DIM}",
        f"--interests={INTERESTS}",
        f"--temperature={RECHUB_TEMPERATURE}",
        f"--eval-passes={args.eval_passes}",
        f"--threads={args.threads}",
        f"--seed={args.seed}",
    ]
    threads = str(args.threads)
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    done = subprocess.run(
        command, capture_output=True, text=True, env=env, cwd=tempfile.gettempdir()
    )
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"torch-rechub run failed (exit {done.returncode}): {' '.join(command)}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def fmt(value: float) -> str:
    return f"{value:,.0f}"


def print_table(figures: dict[str, dict[str, list[float]]], with_rechub: bool) -> None:
    names = {
        "train_examples_per_second": "train examples/s",
        "eval_users_per_second": "eval users/s",
    }
    if with_rechub:
        print(
            f"\n| figure (median of {len(figures['mirec']['eval_users_per_second'])}) "
            "| mirec | torch-rechub | mirec / torch-rechub |"
        )
        print("| --- | ---: | ---: | ---: |")
    else:
        print(f"\n| figure (median of {len(figures['mirec']['eval_users_per_second'])}) | mirec |")
        print("| --- | ---: |")
    for key, label in names.items():
        mine = statistics.median(figures["mirec"][key])
        if with_rechub:
            theirs = statistics.median(figures["torch-rechub"][key])
            print(f"| {label} | {fmt(mine)} | {fmt(theirs)} | {mine / theirs:.2f}x |")
        else:
            print(f"| {label} | {fmt(mine)} |")
    print("\nper round:")
    for impl, values in figures.items():
        for key, label in names.items():
            print(f"  {impl:<12} {label:<17} " + "  ".join(fmt(v) for v in values[key]))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    config = load_config(
        "comirec-sa",
        overrides=args.overrides,
        dataset=DATASET,
        maxlen=MAXLEN,
        embedding_dim=EMBEDDING_DIM,
        num_interests=INTERESTS,
        seed=args.seed,
    )
    data = prepare(DATASET, data_dir=args.data_dir, maxlen=MAXLEN)
    with_rechub = args.rechub_python is not None
    batch = max(config.batch_size, RECHUB_BATCH if with_rechub else 0)
    pick, rows, positions = example_order(data, (args.warmup + args.batches) * batch, args.seed)

    seqs = data.sequences
    print(
        f"{DATASET}: {seqs.n_users:,} users, {seqs.n_items:,} items, "
        f"{len(data.test):,} test users; maxlen {data.maxlen}, d {config.embedding_dim}, "
        f"K {config.num_interests}"
    )
    print(
        f"python {platform.python_version()}, torch {torch.__version__}, mirec {mirec_version}; "
        f"{args.threads} torch thread(s) per process, {os.cpu_count()} cores; "
        f"{args.batches} timed steps after {args.warmup} warm-up and {args.eval_passes} "
        f"test-set evaluations per round, {args.repeats} rounds each"
    )
    print(
        f"mirec ComiRec-SA: batch {config.batch_size}, "
        f"{negatives_label(resolve_negatives(config.num_negatives, seqs.n_items))}, "
        f"temperature {config.temperature}, Adam lr {config.lr}"
    )
    if with_rechub:
        print(
            f"torch-rechub ComiRec-SA: batch {RECHUB_BATCH}, {RECHUB_NEGATIVES} uniform negatives "
            f"per example, list-wise cross-entropy, Adam lr {RECHUB_LR}, MatchTrainer"
        )

    figures: dict[str, dict[str, list[float]]] = {"mirec": {}}
    if with_rechub:
        figures["torch-rechub"] = {}
    with tempfile.TemporaryDirectory(prefix="mirec-bench-") as tmp:
        npz = Path(tmp) / "amazon-beauty.npz"
        if with_rechub:
            write_rechub_inputs(npz, data, rows, positions)
        rechub_version = None
        for r in range(args.repeats):
            # alternate which goes first, so a drift in machine load hits both alike
            impls = ["mirec", "torch-rechub"] if with_rechub else ["mirec"]
            if r % 2:
                impls.reverse()
            for impl in impls:
                if impl == "mirec":
                    got = mirec_round(data, config, pick, args)
                else:
                    got = rechub_round(args.rechub_python, npz, args)
                    rechub_version = got["torch_rechub_version"]
                    if got["threads"] != args.threads:
                        print(f"warning: torch-rechub ran with {got['threads']} threads")
                print(
                    f"round {r + 1} {impl:<12} train {fmt(got['train_examples_per_second'])} "
                    f"ex/s, eval {fmt(got['eval_users_per_second'])} users/s",
                    flush=True,
                )
                for key in ("train_examples_per_second", "eval_users_per_second"):
                    figures[impl].setdefault(key, []).append(got[key])
    if rechub_version:
        print(f"torch-rechub {rechub_version}")
    print_table(figures, with_rechub)
    if not with_rechub:
        print(
            "\nfor the torch-rechub comparison, set up its throwaway venv (benchmarks/README.md) "
            "and add --rechub-python /tmp/rechub-venv/bin/python"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
