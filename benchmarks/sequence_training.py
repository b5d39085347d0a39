"""Cost of one training epoch: one position per example against sequence training.

Both modes visit every training position of PROTOCOL.md section 3 once per epoch. Per
position, each example runs the extractor over its own history window and scores one
target; with ``sequence_training`` each example is a window of up to ``maxlen`` targets,
scored from their own prefixes in one pass (SASRec's training, Kang and McAuley, ICDM 2018,
section III-E). For each model the script times whole epochs of
:func:`mirec.training.trainer.train_step` in each mode, rounds alternating (which mode goes
first alternates too), and prints the median epoch time, training positions per second,
and the ratio. Sequence training uses the published config's batch (windows);
per position, ``--position-batch`` examples (512, the batch of the configs before
sequence training).

    OMP_NUM_THREADS=1 python benchmarks/sequence_training.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import torch

from mirec.config import load_config
from mirec.data.prepare import PreparedData, prepare
from mirec.models.build import build_model
from mirec.models.interest_model import InterestModel
from mirec.training.trainer import TrainingExamples, build_objective, train_step


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Epoch time: per-position vs sequence training.")
    p.add_argument("--dataset", default="ml-100k")
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--models", default="sasrec,comirec-sa-transformer")
    p.add_argument("--position-batch", type=int, default=512)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args(argv)


def epoch_seconds(data: PreparedData, name: str, windows: bool, batch_size: int) -> float:
    """Wall time of one full training epoch of ``name`` (training steps only)."""
    config = load_config(name, overrides=[f"sequence_training={windows}"])
    torch.manual_seed(config.seed)
    model = build_model(config, data.sequences.n_items, data.maxlen)
    assert isinstance(model, InterestModel)
    device = torch.device("cpu")
    examples = TrainingExamples.of(data, device, windows=windows)
    objective = build_objective(config, data, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    order = torch.randperm(len(examples), generator=generator)
    model.train()
    start = time.perf_counter()
    for b in range(math.ceil(len(examples) / batch_size)):
        histories, targets = examples.batch(order[b * batch_size : (b + 1) * batch_size])
        loss = train_step(model, optimizer, histories, targets, objective, generator)
    seconds = time.perf_counter() - start
    if not torch.isfinite(loss):
        raise RuntimeError(f"{name}: training loss is {float(loss)}")
    return seconds


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    data = prepare(args.dataset, data_dir=args.data_dir)
    positions = TrainingExamples.of(data, torch.device("cpu")).n_targets
    print(
        f"{args.dataset}: {positions:,} training positions per epoch, maxlen {data.maxlen}, "
        f"{args.threads} thread(s), {args.repeats} alternating rounds; medians"
    )
    print("| model | mode | batch | epoch s | positions/s | speed-up |")
    print("|---|---|---:|---:|---:|---:|")
    for name in args.models.split(","):
        batch = {False: args.position_batch, True: load_config(name).batch_size}
        times: dict[bool, list[float]] = {False: [], True: []}
        for r in range(args.repeats):
            for windows in (False, True) if r % 2 == 0 else (True, False):
                times[windows].append(epoch_seconds(data, name, windows, batch[windows]))
        per_position, sequence = (statistics.median(times[w]) for w in (False, True))
        for windows, median in ((False, per_position), (True, sequence)):
            mode = "sequence (windows)" if windows else "per position"
            ratio = f"{per_position / median:.1f}x" if windows else ""
            print(
                f"| {name} | {mode} | {batch[windows]} | {median:.1f} | "
                f"{positions / median:,.0f} | {ratio} |"
            )


if __name__ == "__main__":
    main()
