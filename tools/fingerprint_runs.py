"""Fingerprints of every published config's run: the figures of its ``metrics.json`` (all
but timings) and a SHA-256 of its weights, tensor by tensor. A change that must move no
result (a refactor) is checked by running this before and after it and diffing the files:

    python tools/fingerprint_runs.py --data-dir DATA --out before.json
    ... the change ...
    python tools/fingerprint_runs.py --data-dir DATA --out after.json
    diff before.json after.json

Retrieval configs train on ml-100k, CTR configs on amazon-beauty, seed 42, one thread (the
figures are exact at a given thread count), each through ``python -m mirec train`` (the
surface a refactor keeps). ``--epochs N`` shortens every run for a quick check.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from safetensors.numpy import load_file

from mirec.config import load_config, model_names

TIMINGS = {"train_seconds", "train_examples_per_second", "eval_users_per_second", "seconds"}


def figures(value: Any) -> Any:
    """``value`` (a metrics.json) without its timings, at every depth."""
    if isinstance(value, dict):
        return {k: figures(v) for k, v in value.items() if k not in TIMINGS}
    if isinstance(value, list):
        return [figures(v) for v in value]
    return value


def weights_digest(path: Path) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(load_file(str(path)).items()):
        digest.update(f"{name}:{tensor.dtype}:{tensor.shape}".encode())
        digest.update(tensor.tobytes())
    return digest.hexdigest()


def fingerprint(model: str, data_dir: Path, epochs: int | None, work: Path) -> dict[str, Any]:
    task = load_config(model).task
    dataset = "amazon-beauty" if task == "ctr" else "ml-100k"
    out = work / model
    args = [sys.executable, "-m", "mirec", "train", "--model", model, "--dataset", dataset,
            "--data-dir", str(data_dir), "--output-dir", str(out), "--threads", "1",
            "--quiet", "--set", "seed=42"]  # fmt: skip
    if task == "ctr":
        args += ["--task", "ctr"]
    if epochs is not None:
        args += ["--set", f"max_epochs={epochs}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(args, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        return {"dataset": dataset, "error": done.stderr.strip().splitlines()[-1:]}
    metrics = json.loads((out / "metrics.json").read_text())
    return {
        "dataset": dataset,
        "weights_sha256": weights_digest(out / "model.safetensors"),
        "metrics": figures(metrics),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--models", nargs="*", default=None, help="default: every config")
    args = parser.parse_args()
    result = {}
    with tempfile.TemporaryDirectory() as work:
        for model in args.models or model_names():
            result[model] = fingerprint(model, args.data_dir, args.epochs, Path(work))
            state = "error" if "error" in result[model] else result[model]["weights_sha256"][:12]
            print(f"{model:<24} {result[model]['dataset']:<14} {state}", flush=True)
    args.out.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
