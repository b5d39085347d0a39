"""FuxiCTR's DIN building blocks beside mirec's DIN and DMIN, on mirec's stored CTR rows.

FuxiCTR's PyPI wheel (``fuxictr`` 2.3.10) ships its layers and its ``RankModel`` base but
not the models of its GitHub ``model_zoo`` (DIN, DMIN): there is no ``fuxictr.DIN`` to
import. The nearest honest comparison is DIN assembled from the wheel's own
``DIN_Attention`` and ``MLP_Block``, wired the way DIN is described (Zhou et al., KDD
2018): the candidate's embedding attends over the history's embeddings (no softmax), the
pooled history and the candidate are concatenated and an MLP gives the click logit. Each
item is its item-id embedding concatenated with its category embedding (the mean over
an item's categories on Amazon), FuxiCTR's one-embedding-per-field layout; Taobao's
behaviour types are not used by this model, as they have no counterpart on the candidate.

Everything else is mirec's and identical for the three models: the training rows (one
sampled negative per positive, redrawn every epoch from the seed), the stored validation
and test rows, Adam, batch size, early stopping on validation AUC (``mirec.training.
ctr_trainer.fit_ctr``), and AUC/GAUC/LogLoss (``mirec.evaluation.ctr_metrics``). mirec's
DIN and DMIN are trained in the same process from their published configs.

Run it with an interpreter that has both mirec and fuxictr (see benchmarks/README.md):

    /tmp/fuxictr-venv/bin/python benchmarks/fuxictr_din.py --datasets amazon-beauty
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import fuxictr
import torch
from fuxictr.pytorch.layers import DIN_Attention, MLP_Block
from torch import nn

from mirec.config import load_config
from mirec.core.device import resolve_device
from mirec.core.layers import mean_embedding
from mirec.core.paths import cache_dir
from mirec.data.ctr_samples import CTRData, prepare_ctr
from mirec.models.build import build_ctr_model, padded_categories
from mirec.models.ctr_model import ClickModel
from mirec.runs import prepare_for
from mirec.training.ctr_trainer import RowBatches, evaluate_ctr, fit_ctr


class FuxiCTRDIN(ClickModel):
    """DIN from FuxiCTR's ``DIN_Attention`` and ``MLP_Block``: item and category fields,
    each ``embedding_dim`` wide, concatenated."""

    def __init__(self, data: CTRData, embedding_dim: int) -> None:
        super().__init__()
        seqs = data.sequences
        self.item = nn.Embedding(seqs.n_items + 1, embedding_dim, padding_idx=0)
        categories, n_categories = padded_categories(seqs)
        self.category = None
        width = embedding_dim
        if categories is not None:
            self.register_buffer("item_categories", torch.as_tensor(categories), persistent=False)
            self.category = nn.Embedding(n_categories + 1, embedding_dim, padding_idx=0)
            width += embedding_dim
        self.attention = DIN_Attention(
            embedding_dim=width,
            attention_units=[64],
            hidden_activations="Dice",
            use_softmax=False,
        )
        self.mlp = MLP_Block(
            input_dim=2 * width,
            output_dim=1,
            hidden_units=[512, 128, 64],
            hidden_activations="ReLU",
        )

    def _embed(self, items: torch.Tensor) -> torch.Tensor:
        """Item-id field and category field (mean over the item's categories), side by
        side."""
        out = self.item(items)
        if self.category is None:
            return out
        return torch.cat([out, mean_embedding(self.category, self.item_categories[items])], -1)

    def _forward(self, histories, candidates, behaviors):
        mask = histories > 0
        candidate = self._embed(candidates)
        pooled = self.attention(candidate, self._embed(histories), mask)
        return self.mlp(torch.cat([candidate, pooled], -1)).squeeze(-1), ()

    def penalty(self, state, generator):
        return torch.zeros(())


def train_one(
    label: str, dataset: str, seed: int, data_dir: Path, threads: int, overrides: list[str]
) -> dict:
    """Train one model with mirec's CTR trainer; returns its test metrics and timing.
    FuxiCTR's DIN takes the training settings of mirec's ``din`` config."""
    torch.set_num_threads(threads)
    model_name = "din" if label == "fuxictr-din" else label
    config = load_config(
        model_name,
        fixed={"dataset": dataset, "seed": seed, "task": "ctr", "device": "cpu"},
        overrides=overrides,
    )
    prepared = prepare_for(config, data_dir)
    data = prepare_ctr(prepared, config.ctr_negatives, cache_dir())
    torch.manual_seed(seed)
    if label == "fuxictr-din":
        model = FuxiCTRDIN(data, config.embedding_dim)
    else:
        model = build_ctr_model(config, data.sequences, data.maxlen)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = fit_ctr(model, data, config, Path(tmp), progress=False)
    wall = time.perf_counter() - start
    test = evaluate_ctr(model, data.test, RowBatches(data, resolve_device("cpu")))
    return {
        "model": label,
        "dataset": dataset,
        "seed": seed,
        "test": test,
        "epochs": result.epochs,
        "best_epoch": result.best_epoch,
        "stopped_by": result.stopped_by,
        "wall_seconds": round(wall, 1),
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def summary(runs: list[dict]) -> str:
    """Per dataset and model: test AUC mean ± std over the seeds and median GAUC, the
    figures of benchmarks/README.md's table."""
    lines = ["test AUC mean ± std over seeds (median GAUC)"]
    for dataset in dict.fromkeys(r["dataset"] for r in runs):
        cells = []
        for label in dict.fromkeys(r["model"] for r in runs):
            tests = [r["test"] for r in runs if r["dataset"] == dataset and r["model"] == label]
            auc = [t["auc"] for t in tests]
            spread = statistics.stdev(auc) if len(auc) > 1 else 0.0
            gauc = statistics.median(t["gauc"] for t in tests)
            cells.append(f"{label} {statistics.mean(auc):.4f} ± {spread:.4f} ({gauc:.4f})")
        lines.append(f"{dataset:15s} " + "  ".join(cells))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["amazon-beauty"])
    parser.add_argument("--models", nargs="+", default=["fuxictr-din", "din", "dmin"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[42])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a mirec setting for every model (e.g. patience=10)",
    )
    parser.add_argument("--json", type=Path, help="also write every run's figures here")
    parser.add_argument(
        "--summarize", type=Path, metavar="JSON", help="only print the summary of a --json file"
    )
    args = parser.parse_args()
    if args.summarize is not None:
        print(summary(json.loads(args.summarize.read_text())))
        return

    print(
        f"fuxictr {fuxictr.__version__}, torch {torch.__version__}, {args.threads} thread(s), "
        f"settings {args.overrides or 'as published'}"
    )
    runs = []
    for dataset in args.datasets:
        for seed in args.seeds:
            for label in args.models:
                run = train_one(label, dataset, seed, args.data_dir, args.threads, args.overrides)
                runs.append(run)
                t = run["test"]
                print(
                    f"{dataset:15s} {label:12s} seed {seed:5d}  AUC {t['auc']:.4f}  "
                    f"GAUC {t['gauc']:.4f}  LogLoss {t['logloss']:.4f}  "
                    f"{run['epochs']} epochs ({run['stopped_by']}), {run['wall_seconds']} s",
                    flush=True,
                )
    print()
    print(summary(runs))
    if args.json is not None:
        args.json.write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
