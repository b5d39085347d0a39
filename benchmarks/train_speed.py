"""Training and evaluation throughput of mirec's ComiRec-SA, MIND and ComiRec-DR, beside
torch-rechub's.

On amazon-beauty (maxlen 20, d 64, K 4), per model, thread count and round:

* mirec: up to ``--batches`` training steps of the model's published config (as
  ``mirec.config.load_config`` gives it), the step of :func:`mirec.training.trainer.fit`
  (history gather, ``model.loss`` with the config's negatives, Adam), timed after
  ``--warmup`` untimed steps, once per ``--negatives`` setting: ``config`` (the published
  one: the exact softmax over the whole catalogue at this size) and shared uniform negatives
  (1,024 by default: faster, less accurate); then
  :func:`mirec.evaluation.evaluator.evaluate` on the test users (full catalogue, exact).
* torch-rechub (with ``--rechub-python``): the same number of steps of its model (ComirecSA,
  MIND, ComirecDR), list-wise with 128 fresh uniform negatives per example, batch 256, Adam
  lr 1e-3 (ComiRec-DR 5e-3), through its ``MatchTrainer``, on the same training examples in
  the same order; then its user tower scored exactly against its item tower, max over
  interests, top-50. It runs in a subprocess (``rechub_matching.py``) with the given
  interpreter, so torch-rechub is never imported here.

A timed loop stops early after ``--time-cap`` seconds (torch-rechub's ComiRec-DR trains at
some 450 examples/s). Rounds alternate between the implementations ``--repeats`` times
(which goes first alternates too); the table shows medians and the ratios mirec /
torch-rechub. Each process uses the round's torch threads (``--threads``, default 1 and 2).

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
from mirec.config import load_config
from mirec.core.config import Config
from mirec.data.examples import training_positions
from mirec.data.prepare import PreparedData, prepare
from mirec.evaluation.evaluator import evaluate
from mirec.models.build import build_model
from mirec.models.interest_model import InterestModel
from mirec.training.sampled_softmax import resolve_negatives
from mirec.training.trainer import TrainingExamples, build_objective, train_step

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RECHUB_SCRIPT = HERE / "rechub_matching.py"
DATASET, MAXLEN, EMBEDDING_DIM, INTERESTS = "amazon-beauty", 20, 64, 4
# mirec config -> torch-rechub class, trained as ANCHORS.md ran it
RECHUB_CLASS = {"comirec-sa": "ComirecSA", "mind": "MIND", "comirec-dr": "ComirecDR"}
RECHUB_BATCH, RECHUB_NEGATIVES, RECHUB_TEMPERATURE = 256, 128, 0.02
RECHUB_LR = {"ComirecDR": 5e-3}
RECHUB_DEFAULT_LR = 1e-3
PUBLISHED = "config"
"""The ``--negatives`` value that keeps the published config's own setting."""
GOAL = 3.0
"""The speed-up over torch-rechub that mirec aims for (issue 14, item 4)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Training examples/s and evaluation users/s: mirec vs torch-rechub."
    )
    p.add_argument(
        "--rechub-python",
        help="python of a virtual environment with torch-rechub 0.9.0 (see benchmarks/README.md)",
    )
    p.add_argument(
        "--models",
        default=",".join(RECHUB_CLASS),
        help=f"comma-separated mirec configs, of {', '.join(RECHUB_CLASS)} (default: all)",
    )
    p.add_argument(
        "--negatives",
        default=f"{PUBLISHED},1024",
        help=f"mirec's negative settings, comma-separated: {PUBLISHED!r} (the published one) "
        "or a number of shared uniform negatives per batch (0: the exact softmax)",
    )
    p.add_argument("--batches", type=int, default=200, help="most timed training steps per round")
    p.add_argument("--warmup", type=int, default=20, help="untimed training steps first")
    p.add_argument(
        "--time-cap", type=float, default=20.0, help="seconds of timed steps per round at most"
    )
    p.add_argument("--repeats", type=int, default=3, help="rounds of each implementation")
    p.add_argument(
        "--eval-passes",
        type=int,
        default=3,
        help="test-set evaluations timed together per round (0: no evaluation)",
    )
    p.add_argument(
        "--threads", default="1,2", help="torch threads per process, comma-separated settings"
    )
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
        help="override a setting of every mirec config, e.g. batch_size=1024",
    )
    args = p.parse_args(argv)
    try:
        args.models = [m.strip() for m in args.models.split(",") if m.strip()]
        args.threads = [int(t) for t in args.threads.split(",") if t.strip()]
        args.negatives = [
            None if n.strip() == PUBLISHED else int(n)
            for n in args.negatives.split(",")
            if n.strip()
        ]
    except ValueError as err:
        p.error(f"--threads and --negatives take comma-separated numbers ({err})")
    unknown = sorted(set(args.models) - set(RECHUB_CLASS))
    if unknown or not args.models:
        p.error(f"--models: unknown {unknown}; known: {', '.join(RECHUB_CLASS)}")
    if not args.negatives or any(n is not None and n < 0 for n in args.negatives):
        p.error(f"--negatives: {PUBLISHED!r} or numbers >= 0")
    if not args.threads or min(args.threads) < 1:
        p.error("--threads must be >= 1")
    if min(args.batches, args.repeats) < 1 or min(args.warmup, args.eval_passes) < 0:
        p.error("--batches and --repeats must be >= 1, --warmup and --eval-passes >= 0")
    if args.time_cap <= 0:
        p.error("--time-cap must be > 0")
    return args


def setting_label(negatives: int | None, n_items: int, config: Config) -> str:
    """What a --negatives setting trains with, e.g. 'published: exact softmax'."""
    resolved = resolve_negatives(
        config.num_negatives if negatives is None else negatives, n_items, config.negative_sampling
    )
    what = f"{resolved:,} shared negatives" if resolved else "exact softmax"
    return f"published: {what}" if negatives is None else what


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
    data: PreparedData, config: Config, order_index: np.ndarray, evaluate_too: bool, args
) -> dict[str, float]:
    """One round of mirec: timed training steps, then (``evaluate_too``) a timed test-set
    evaluation."""
    torch.manual_seed(config.seed)
    model = build_model(config, data.sequences.n_items, data.maxlen, data.sequences.user_profiles())
    assert isinstance(model, InterestModel)
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    examples = TrainingExamples.of(data, torch.device("cpu"))
    objective = build_objective(config, data, torch.device("cpu"))
    with_users = model.uses_user_rows
    # the same examples, in the same seeded order, as torch-rechub's rounds get
    order = torch.from_numpy(order_index)
    total_loss = torch.zeros(())

    def steps(first: int, count: int, cap: float | None = None) -> int:
        nonlocal total_loss
        start = time.perf_counter()
        for b in range(first, first + count):
            if cap is not None and time.perf_counter() - start > cap:
                return b - first
            index = order[b * config.batch_size : (b + 1) * config.batch_size]
            histories, targets = examples.batch(index)
            users = examples.users_of(index) if with_users else None
            step_loss = train_step(
                model, optimizer, histories, targets, objective, generator, users
            )
            total_loss += step_loss
        return count

    model.train()
    steps(0, args.warmup)
    start = time.perf_counter()
    done = steps(args.warmup, args.batches, args.time_cap)
    train_s = time.perf_counter() - start
    if not torch.isfinite(total_loss):
        raise RuntimeError(f"mirec training loss is {float(total_loss)}")
    got = {"train_examples_per_second": done * config.batch_size / train_s}
    if evaluate_too:
        model.eval()
        start = time.perf_counter()
        for _ in range(args.eval_passes):
            result = evaluate(model, data.test, device="cpu")
        got["eval_users_per_second"] = (
            args.eval_passes * result.n_users / (time.perf_counter() - start)
        )
    return got


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


def rechub_round(python: str, npz: Path, model: str, threads: int, args) -> dict:
    command = [
        python,
        str(RECHUB_SCRIPT),
        str(npz),
        f"--model={model}",
        f"--batches={args.batches}",
        f"--warmup={args.warmup}",
        f"--time-cap={args.time_cap}",
        f"--batch-size={RECHUB_BATCH}",
        f"--negatives={RECHUB_NEGATIVES}",
        f"--lr={RECHUB_LR.get(model, RECHUB_DEFAULT_LR)}",
        f"--embedding-dim={EMBEDDING_DIM}",
        f"--interests={INTERESTS}",
        f"--temperature={RECHUB_TEMPERATURE}",
        f"--eval-passes={args.eval_passes}",
        f"--threads={threads}",
        f"--seed={args.seed}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    done = subprocess.run(
        command, capture_output=True, text=True, env=env, cwd=tempfile.gettempdir()
    )
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"torch-rechub run failed (exit {done.returncode}): {' '.join(command)}")
    got = json.loads(done.stdout.strip().splitlines()[-1])
    if got["threads"] != threads:
        print(f"warning: torch-rechub ran with {got['threads']} threads, not {threads}")
    return got


def fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def median(values: list[float] | None) -> float | None:
    return statistics.median(values) if values else None


def print_tables(figures: dict, labels: dict[str, str], args, with_rechub: bool) -> None:
    """``figures[(threads, model, implementation)][figure]``: the rounds' values."""
    settings = [k for k in labels if k != "torch-rechub"]
    head = ["threads", "model", *(f"mirec ({labels[s]})" for s in settings)]
    if with_rechub:
        head += ["torch-rechub", *(f"ratio ({labels[s]})" for s in settings)]
    head.append("eval users/s (mirec" + (" / torch-rechub)" if with_rechub else ")"))
    print(f"\ntrain examples/s, median of {args.repeats} round(s); goal: ratio >= {GOAL:g}x")
    print("| " + " | ".join(head) + " |")
    print("| --- | --- |" + " ---: |" * (len(head) - 2))
    key = "train_examples_per_second"
    for threads in args.threads:
        for model in args.models:
            mine = [median(figures[(threads, model, s)].get(key)) for s in settings]
            cells = [str(threads), model, *(fmt(v) for v in mine)]
            evals = [median(figures[(threads, model, settings[0])].get("eval_users_per_second"))]
            if with_rechub:
                rechub = figures[(threads, model, "torch-rechub")]
                theirs = median(rechub.get(key))
                cells.append(fmt(theirs))
                cells += [f"{v / theirs:.2f}x" if v and theirs else "—" for v in mine]
                evals.append(median(rechub.get("eval_users_per_second")))
            cells.append(" / ".join(fmt(v) for v in evals))
            print("| " + " | ".join(cells) + " |")
    print("\nper round (train examples/s):")
    for (threads, model, impl), values in figures.items():
        name = labels.get(impl, impl)
        rounds = "  ".join(fmt(v) for v in values.get(key, []))
        print(f"  {threads} thread(s)  {model:<11} {name:<40} {rounds}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data = prepare(DATASET, data_dir=args.data_dir, maxlen=MAXLEN)
    seqs = data.sequences

    def config_of(model: str, negatives: int | None) -> Config:
        overrides = [*args.overrides]
        if negatives is not None:
            overrides.append(f"num_negatives={negatives}")
        return load_config(
            model,
            overrides=overrides,
            dataset=DATASET,
            maxlen=MAXLEN,
            embedding_dim=EMBEDDING_DIM,
            num_interests=INTERESTS,
            seed=args.seed,
        )

    configs = {(m, n): config_of(m, n) for m in args.models for n in args.negatives}
    first = args.models[0]
    labels = {
        f"mirec {n}": setting_label(n, seqs.n_items, configs[(first, n)]) for n in args.negatives
    }
    with_rechub = args.rechub_python is not None
    if with_rechub:
        labels["torch-rechub"] = "torch-rechub"
    batch = max([c.batch_size for c in configs.values()] + [RECHUB_BATCH if with_rechub else 0])
    pick, rows, positions = example_order(data, (args.warmup + args.batches) * batch, args.seed)

    print(
        f"{DATASET}: {seqs.n_users:,} users, {seqs.n_items:,} items, "
        f"{len(data.test):,} test users; maxlen {data.maxlen}, d {EMBEDDING_DIM}, K {INTERESTS}"
    )
    print(
        f"python {platform.python_version()}, torch {torch.__version__}, mirec {mirec_version}; "
        f"{os.cpu_count()} cores; up to {args.batches} timed steps ({args.time_cap:g} s at most) "
        f"after {args.warmup} warm-up and {args.eval_passes} test-set evaluations per round, "
        f"{args.repeats} rounds each, at {', '.join(map(str, args.threads))} torch thread(s)"
    )
    for (model, negatives), config in configs.items():
        print(
            f"mirec {model} ({setting_label(negatives, seqs.n_items, config)}): batch "
            f"{config.batch_size}, temperature {config.temperature}, Adam lr {config.lr}"
        )
    if with_rechub:
        print(
            f"torch-rechub ({', '.join(RECHUB_CLASS[m] for m in args.models)}): batch "
            f"{RECHUB_BATCH}, {RECHUB_NEGATIVES} uniform negatives per example, list-wise "
            f"cross-entropy, Adam lr {RECHUB_DEFAULT_LR:g} (ComiRec-DR "
            f"{RECHUB_LR['ComirecDR']:g}), MatchTrainer"
        )

    figures: dict[tuple[int, str, str], dict[str, list[float]]] = {}
    rechub_version = None
    with tempfile.TemporaryDirectory(prefix="mirec-bench-") as tmp:
        npz = Path(tmp) / "amazon-beauty.npz"
        if with_rechub:
            write_rechub_inputs(npz, data, rows, positions)
        for threads in args.threads:
            torch.set_num_threads(threads)
            for model in args.models:
                impls = [f"mirec {n}" for n in args.negatives]
                if with_rechub:
                    impls.append("torch-rechub")
                for r in range(args.repeats):
                    # alternate the order, so a drift in machine load hits all alike
                    for impl in impls if r % 2 == 0 else impls[::-1]:
                        if impl == "torch-rechub":
                            got = rechub_round(
                                args.rechub_python, npz, RECHUB_CLASS[model], threads, args
                            )
                            rechub_version = got["torch_rechub_version"]
                        else:
                            negatives = args.negatives[impls.index(impl)]
                            evaluate_too = args.eval_passes > 0 and impl == impls[0]
                            config = configs[(model, negatives)]
                            got = mirec_round(data, config, pick, evaluate_too, args)
                        line = f"train {fmt(got['train_examples_per_second'])} ex/s"
                        if "eval_users_per_second" in got:
                            line += f", eval {fmt(got['eval_users_per_second'])} users/s"
                        print(
                            f"{threads} thread(s) round {r + 1} {model:<11} "
                            f"{labels[impl]:<40} {line}",
                            flush=True,
                        )
                        cell = figures.setdefault((threads, model, impl), {})
                        for key in ("train_examples_per_second", "eval_users_per_second"):
                            if key in got:
                                cell.setdefault(key, []).append(got[key])
    if rechub_version:
        print(f"torch-rechub {rechub_version}")
    print_tables(figures, labels, args, with_rechub)
    if not with_rechub:
        print(
            "\nfor the torch-rechub comparison, set up its throwaway venv (benchmarks/README.md) "
            "and add --rechub-python /tmp/rechub-venv/bin/python"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
