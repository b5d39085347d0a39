"""Training throughput on one device: every mirec published model, beside torch-rechub's.

Random batches of amazon-beauty's shape (12,101 items, maxlen 20, d 64, K 4): histories of
random length (1 to 20 real items, left-padded with 0), uniform targets. A pool of
``--pool`` batches is generated on the device once, before anything is timed, and cycled.

* mirec: each published config but the popularity baseline, built with
  ``build_model(load_config(name, ...), 12101, 20)``, Adam at the config's learning rate,
  :func:`mirec.training.trainer.train_step` with two negative settings: 1,024 shared
  uniform negatives per batch, and 0 (the exact softmax over the whole catalogue, mirec's
  default for catalogues up to 16,384 items).
* torch-rechub (``--rechub``): its ComirecSA, MIND, ComirecDR and YoutubeDNN trained as
  ANCHORS.md describes: list-wise cross-entropy over the positive and 128 uniform negatives
  per example (drawn up front with the pool), Adam lr 1e-3 (ComiRec-DR 5e-3), no weight
  decay. A plain loop calls the model's forward on device tensors; torch-rechub's
  ``MatchTrainer`` is not used, because its loop moves each batch with ``.to(device)`` and
  calls ``loss.item()`` twice per step (a host-device sync each), which would slow it.
  Its regularisation term (all weights 0 by default) is left out. ComirecDR's capsule maps
  are never initialised by torch-rechub (``torch.Tensor(...)``: whatever is in memory); they
  are filled with a seeded N(0, 1/d) here, which changes no step's work.

Per model and setting: ``--warmup`` untimed steps, a short probe that sets how many steps
fit into ``--time-cap`` seconds, then at most ``--steps`` timed steps in three chunks, each
between two synchronisations. Throughput is the median of the chunks' examples/s. Losses
stay on the device until the end; the check passes when every loss is finite and the mean
of the last 10% of timed steps is below that of the first 10%.

    python3 benchmarks/gpu_train_speed.py --device cuda --rechub
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from rechub_matching import build_model as rechub_model  # benchmarks/, beside this script

from mirec import __version__ as mirec_version
from mirec.config import load_config, model_names
from mirec.models.build import build_model
from mirec.models.interest_model import InterestModel
from mirec.training.sampled_softmax import SampledSoftmax
from mirec.training.trainer import train_step

# amazon-beauty's shape (PROTOCOL.md, ANCHORS.md)
N_ITEMS, N_USERS, MAXLEN, DIM, INTERESTS = 12101, 22363, 20, 64, 4
# torch-rechub, as ANCHORS.md trained it
RECHUB_NEGATIVES, RECHUB_TEMPERATURE = 128, 0.02
RECHUB_LR = {"ComirecDR": 5e-3}
RECHUB_DEFAULT_LR = 1e-3
RECHUB_CLASS = {
    "comirec-sa": "ComirecSA",
    "mind": "MIND",
    "comirec-dr": "ComirecDR",
    "youtube-dnn": "YoutubeDNN",
}
# ANCHORS.md, "Training speed on a GPU" (H200, batch 16,384), examples/s
ANCHOR = {"ComirecSA": 1.17e6, "MIND": 1.11e6, "YoutubeDNN": 1.39e6, "ComirecDR": 0.20e6}
# the speed-up over torch-rechub that mirec aims for
GOAL = {"comirec-sa": 2.5, "mind": 2.5, "comirec-dr": 10.0}
CHUNKS = 3

Batch = dict[str, torch.Tensor]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=16384, help="examples per step")
    p.add_argument("--steps", type=int, default=500, help="most timed steps per run")
    p.add_argument("--warmup", type=int, default=20, help="untimed steps first")
    p.add_argument(
        "--time-cap",
        type=float,
        default=15.0,
        help="seconds of timed steps per run at most (fewer steps for slow models)",
    )
    p.add_argument("--pool", type=int, default=8, help="random batches generated and cycled")
    p.add_argument(
        "--mirec-negatives",
        default="1024,0",
        help="mirec's num_negatives settings, comma-separated (0: whole catalogue)",
    )
    p.add_argument(
        "--models",
        default=None,
        help="comma-separated mirec config names (default: every published one but "
        "the popularity baseline)",
    )
    p.add_argument("--rechub", action="store_true", help="also time torch-rechub's models")
    p.add_argument("--tf32", action="store_true", help="allow TF32 matmuls on CUDA (default: off)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("runs/gpu-speed"))
    args = p.parse_args(argv)
    if args.steps < CHUNKS or args.batch < 1 or args.pool < 1 or args.warmup < 0:
        p.error(f"--steps must be >= {CHUNKS}, --batch and --pool >= 1, --warmup >= 0")
    if args.time_cap <= 0:
        p.error("--time-cap must be > 0")
    args.negatives = [int(n) for n in args.mirec_negatives.split(",") if n.strip()]
    return args


# ---------------------------------------------------------------- data


def make_pool(n: int, batch: int, device: torch.device, seed: int, rechub: bool) -> list[Batch]:
    """``n`` random batches on ``device``: left-padded histories with 1..MAXLEN real items,
    uniform targets; with ``rechub`` also user ids and 128 negatives per example."""
    gen = torch.Generator(device=device).manual_seed(seed)
    positions = torch.arange(MAXLEN, device=device)
    pool = []
    for _ in range(n):
        lengths = torch.randint(1, MAXLEN + 1, (batch, 1), device=device, generator=gen)
        items = torch.randint(1, N_ITEMS + 1, (batch, MAXLEN), device=device, generator=gen)
        b = {
            "histories": torch.where(positions >= MAXLEN - lengths, items, 0),
            "targets": torch.randint(1, N_ITEMS + 1, (batch,), device=device, generator=gen),
        }
        if rechub:
            b["users"] = torch.randint(1, N_USERS + 1, (batch,), device=device, generator=gen)
            b["negatives"] = torch.randint(
                1, N_ITEMS + 1, (batch, RECHUB_NEGATIVES), device=device, generator=gen
            )
        pool.append(b)
    return pool


# ---------------------------------------------------------------- timing


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(step: Callable[[int], torch.Tensor], batch: int, device: torch.device, args) -> dict:
    """Warm up, probe the step time, then time up to ``args.steps`` steps in CHUNKS chunks."""
    untimed = [step(i) for i in range(args.warmup)]
    synchronize(device)
    probe = max(1, min(10, args.warmup // 2))
    start = time.perf_counter()
    for i in range(probe):
        untimed.append(step(args.warmup + i))
    synchronize(device)
    per_step = (time.perf_counter() - start) / probe
    n = min(args.steps, max(CHUNKS, int(args.time_cap / per_step)))
    sizes = [n // CHUNKS + (c < n % CHUNKS) for c in range(CHUNKS)]
    # a chunk that runs past twice its share of the cap (the probe was too optimistic) stops
    # early; on a GPU the host runs ahead by at most the launch queue, so this is a backstop
    chunk_limit = 2 * args.time_cap / CHUNKS
    losses = torch.empty(n, device=device)
    rates, seconds, done = [], 0.0, 0
    first = args.warmup + probe
    for size in sizes:
        synchronize(device)
        start = time.perf_counter()
        count = 0
        while count < size:
            losses[done + count] = step(first + done + count)
            count += 1
            if time.perf_counter() - start > chunk_limit:
                break
        synchronize(device)
        elapsed = time.perf_counter() - start
        rates.append(count * batch / elapsed)
        seconds += elapsed
        done += count
    n = done
    losses = losses[:n].float().cpu()
    tail = max(1, n // 10)
    if n >= 2 * args.pool:  # whole cycles of the batch pool, so both means see every batch
        tail = max(args.pool, tail - tail % args.pool)
    loss_first, loss_last = float(losses[:tail].mean()), float(losses[-tail:].mean())
    finite = bool(torch.isfinite(losses).all())
    return {
        "examples_per_second": statistics.median(rates),
        "chunk_examples_per_second": rates,
        "timed_steps": n,
        "timed_seconds": seconds,
        "untimed_steps": first,
        "loss_first_untimed_step": float(untimed[0]),
        "loss_first": loss_first,
        "loss_last": loss_last,
        "finite": finite,
        "check": "PASS" if finite and loss_last < loss_first else "FAIL",
    }


def error_line(err: BaseException) -> str:
    return "".join(traceback.format_exception_only(err)).strip().splitlines()[0][:300]


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_one(build: Callable[[], Callable[[int], torch.Tensor]], device, args) -> dict:
    """Build (model, optimizer, step) and measure it; failures become an ``error`` entry."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        result = measure(build(), args.batch, device, args)
        if device.type == "cuda":
            result["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    except Exception as err:  # reported in the table, the run goes on
        result = {"error": error_line(err)}
    free(device)
    return result


# ---------------------------------------------------------------- mirec


def mirec_builder(name: str, negatives: int, pool: list[Batch], device, args):
    def build() -> Callable[[int], torch.Tensor]:
        config = load_config(
            name,
            overrides=[f"num_negatives={negatives}", f"batch_size={args.batch}"],
            maxlen=MAXLEN,
            seed=args.seed,
        )
        torch.manual_seed(config.seed)
        model = build_model(config, N_ITEMS, MAXLEN)
        if not isinstance(model, InterestModel):
            raise TypeError(f"{name} builds {type(model).__name__}, not a trainable model")
        model.to(device).train()
        optimizer = torch.optim.Adam(
            model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        gen = torch.Generator(device=device).manual_seed(config.seed)
        objective = SampledSoftmax(
            N_ITEMS, negatives, temperature=config.temperature, device=device
        )

        def step(i: int) -> torch.Tensor:
            b = pool[i % len(pool)]
            return train_step(model, optimizer, b["histories"], b["targets"], objective, gen)

        return step

    return build


def mirec_models(selected: str | None) -> list[str]:
    names = []
    for name in model_names():
        if load_config(name).extractor == "popularity":
            continue
        names.append(name)
    if selected:
        wanted = [s.strip() for s in selected.split(",") if s.strip()]
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            raise SystemExit(f"unknown or untrainable model(s) {unknown}; known: {names}")
        names = [n for n in names if n in wanted]
    return names


# ---------------------------------------------------------------- torch-rechub


def rechub_builder(class_name: str, pool: list[Batch], device, args):
    def build() -> Callable[[int], torch.Tensor]:
        torch.manual_seed(args.seed)
        model = rechub_model(
            class_name, N_USERS, N_ITEMS, DIM, INTERESTS, MAXLEN, RECHUB_TEMPERATURE
        )
        model = model.to(device).train()
        optimizer = torch.optim.Adam(
            model.parameters(), lr=RECHUB_LR.get(class_name, RECHUB_DEFAULT_LR), weight_decay=0.0
        )
        inputs = [
            {
                "user_id": b["users"],
                "hist_item_id": b["histories"],
                "item_id": b["targets"],
                "neg_items": b["negatives"],
            }
            for b in pool
        ]
        label = torch.zeros(args.batch, dtype=torch.long, device=device)  # the positive

        def step(i: int) -> torch.Tensor:
            scores = model(inputs[i % len(inputs)])  # (B, 1 + negatives)
            loss = F.cross_entropy(scores, label)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return loss.detach()

        return step

    return build


# ---------------------------------------------------------------- report


def fmt_rate(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def fmt_loss(value: float | None) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.4f}"


def neg_label(negatives: int) -> str:
    return "full catalogue" if negatives == 0 else f"{negatives} shared"


def ratios(rows: list[dict], names: list[str]) -> list[dict]:
    out = []
    for name in names:
        mine = {
            r["negatives"]: r.get("examples_per_second")
            for r in rows
            if r["model"] == name and r["implementation"] == "mirec"
        }
        theirs = next(
            (
                r.get("examples_per_second")
                for r in rows
                if r["model"] == name and r["implementation"] == "torch-rechub"
            ),
            None,
        )
        good = [v for v in mine.values() if v]
        best = max(good) if good else None
        best_setting = next((k for k, v in mine.items() if v == best), None) if best else None
        at_1024 = mine.get(1024)
        entry = {
            "model": name,
            "mirec_best": best,
            "mirec_best_negatives": best_setting,
            "mirec_1024": at_1024,
            "torch_rechub": theirs,
            "ratio_best": best / theirs if best and theirs else None,
            "ratio_1024": at_1024 / theirs if at_1024 and theirs else None,
            "goal": GOAL.get(name),
            "torch_rechub_in_anchors": ANCHOR.get(RECHUB_CLASS.get(name, "")),
        }
        out.append(entry)
    return out


def print_report(rows: list[dict], summary: list[dict]) -> None:
    print(
        "\n| model | implementation | negatives | examples/s (median of 3) | timed steps "
        "| loss first 10% | loss last 10% | check | peak GiB |"
    )
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | --- | ---: |")
    for r in rows:
        if "error" in r:
            print(
                f"| {r['model']} | {r['implementation']} | {r['negatives_label']} "
                f"| error: {r['error']} | | | | FAIL | |"
            )
            continue
        peak = f"{r['peak_gib']:.2f}" if "peak_gib" in r else "—"
        print(
            f"| {r['model']} | {r['implementation']} | {r['negatives_label']} "
            f"| {fmt_rate(r['examples_per_second'])} | {r['timed_steps']} "
            f"| {fmt_loss(r['loss_first'])} | {fmt_loss(r['loss_last'])} | {r['check']} "
            f"| {peak} |"
        )
    if not any(r["implementation"] == "torch-rechub" for r in rows):
        return
    print(
        "\n| model | mirec best (negatives) | mirec 1024 | torch-rechub | best / rechub "
        "| 1024 / rechub | goal | torch-rechub in ANCHORS.md (H200) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for s in summary:
        best = fmt_rate(s["mirec_best"])
        if s["mirec_best_negatives"] is not None:
            best += f" ({neg_label(s['mirec_best_negatives'])})"
        ratio_best = f"{s['ratio_best']:.2f}x" if s["ratio_best"] else "—"
        ratio_1024 = f"{s['ratio_1024']:.2f}x" if s["ratio_1024"] else "—"
        goal = f">= {s['goal']:g}x" if s["goal"] else "—"
        print(
            f"| {s['model']} | {best} | {fmt_rate(s['mirec_1024'])} "
            f"| {fmt_rate(s['torch_rechub'])} | {ratio_best} | {ratio_1024} | {goal} "
            f"| {fmt_rate(s['torch_rechub_in_anchors'])} |"
        )


def environment(device: torch.device, rechub_version: str | None) -> dict:
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "mirec": mirec_version,
        "torch_rechub": rechub_version,
        "device": str(device),
        "device_name": (
            torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else f"{os.cpu_count()} CPU cores"
        ),
        "cpu_threads": torch.get_num_threads(),
        "allow_tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }
    return env


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda, but CUDA is not available")
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    names = mirec_models(args.models)

    rechub_version, rechub_error = None, None
    if args.rechub:
        try:
            import torch_rechub.models.matching  # noqa: F401

            rechub_version = importlib.metadata.version("torch-rechub")
        except Exception as err:
            rechub_error = f"torch-rechub does not import: {error_line(err)}"

    env = environment(device, rechub_version)
    print(
        f"python {env['python']}, torch {env['torch']}, mirec {env['mirec']}, "
        f"torch-rechub {rechub_version or ('—' if not args.rechub else 'missing')}; "
        f"device {device} ({env['device_name']})"
    )
    print(
        f"TF32 matmul: {'on' if env['allow_tf32_matmul'] else 'off'} "
        f"(torch.backends.cuda.matmul.allow_tf32={env['allow_tf32_matmul']}, "
        f"float32 matmul precision {env['float32_matmul_precision']!r})"
    )
    print(
        f"random batches of amazon-beauty's shape: {N_ITEMS:,} items, maxlen {MAXLEN}, "
        f"d {DIM}, K {INTERESTS}; batch {args.batch:,}, a pool of {args.pool} batches on the "
        f"device; {args.warmup} warm-up steps + a probe, then up to {args.steps} timed steps "
        f"(at most {args.time_cap:g} s) in {CHUNKS} chunks"
    )
    print(f"mirec models: {', '.join(names)}; negatives: {args.negatives}")
    if args.rechub:
        print(
            f"torch-rechub: {RECHUB_NEGATIVES} uniform negatives per example, list-wise "
            f"cross-entropy, Adam lr {RECHUB_DEFAULT_LR:g} (ComiRec-DR "
            f"{RECHUB_LR['ComirecDR']:g}), temperature {RECHUB_TEMPERATURE} as built "
            "(stored, not applied by ComiRec/MIND), plain loop (no MatchTrainer); ComirecDR's "
            "uninitialised capsule.w filled with N(0, 1/d)"
        )
    sys.stdout.flush()

    pool = make_pool(args.pool, args.batch, device, args.seed, rechub=args.rechub)
    synchronize(device)
    rows: list[dict] = []
    for name in names:
        runs = [
            ("mirec", neg, neg_label(neg), mirec_builder(name, neg, pool, device, args))
            for neg in args.negatives
        ]
        if args.rechub and name in RECHUB_CLASS:
            cls = RECHUB_CLASS[name]
            label = f"{RECHUB_NEGATIVES} per example"
            runs.append(
                ("torch-rechub", RECHUB_NEGATIVES, label, rechub_builder(cls, pool, device, args))
            )
        for impl, neg, label, build in runs:
            row = {
                "model": name,
                "implementation": impl,
                "negatives": neg,
                "negatives_label": label,
            }
            if impl == "torch-rechub":
                row["class"] = RECHUB_CLASS[name]
                row["anchor_examples_per_second"] = ANCHOR.get(RECHUB_CLASS[name])
                if rechub_error:
                    row["error"] = rechub_error
                    rows.append(row)
                    print(f"{name:<12} {impl:<12} {label:<16} {rechub_error}", flush=True)
                    continue
            row.update(run_one(build, device, args))
            rows.append(row)
            if "error" in row:
                print(f"{name:<12} {impl:<12} {label:<16} error: {row['error']}", flush=True)
            else:
                print(
                    f"{name:<12} {impl:<12} {label:<16} {fmt_rate(row['examples_per_second'])} "
                    f"ex/s over {row['timed_steps']} steps ({row['timed_seconds']:.1f} s); loss "
                    f"{fmt_loss(row['loss_first'])} -> {fmt_loss(row['loss_last'])} {row['check']}",
                    flush=True,
                )

    summary = ratios(rows, names)
    print_report(rows, summary)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "gpu_train_speed.json"
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    settings.update(
        n_items=N_ITEMS,
        n_users=N_USERS,
        maxlen=MAXLEN,
        embedding_dim=DIM,
        num_interests=INTERESTS,
        rechub_negatives=RECHUB_NEGATIVES,
        rechub_temperature=RECHUB_TEMPERATURE,
    )
    path.write_text(
        json.dumps(
            {"environment": env, "settings": settings, "results": rows, "ratios": summary},
            indent=2,
        )
    )
    print(f"\nwrote {path}")
    failed = [r for r in rows if r["implementation"] == "mirec" and r.get("check") != "PASS"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
