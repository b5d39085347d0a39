"""How the merge of the interests' lists shares a top-50 among them: validation Recall@50 and
the list diagnostics (mirec.evaluation.diagnostics) of one trained model folder under the
max merge (the default), the quota merge at several alphas and half-lives
(mirec.retrieval.quota) and, where the items have categories, ComiRec's diversity merge. No
retraining: every merge is an inference-time setting.

    python benchmarks/interest_share.py runs/ml100k-sa
    python benchmarks/interest_share.py runs/ml100k-sa --alphas 0 0.5 1 2 --half-lives 8 3
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from mirec.core.threads import use_threads
from mirec.evaluation.diagnostics import LIST_DEPTH, LIST_DIAGNOSTICS
from mirec.evaluation.evaluator import evaluate
from mirec.runs import diagnostics_for, load_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path, help="A `mirec train` output folder.")
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    parser.add_argument(
        "--half-lives",
        type=float,
        nargs="*",
        default=[3.0],
        help="quota_half_life values tried with every alpha, beside the whole history.",
    )
    parser.add_argument("--diversity", type=float, default=1.0, help="diversity_lambda.")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    use_threads(args.threads)
    loaded, data = load_run(args.model_dir)
    category = data.sequences.primary_category()
    item_category = None if category is None else torch.from_numpy(category)
    merges = [("max", {})]
    for half_life in [None, *args.half_lives]:
        merges += [
            (
                f"quota {alpha:g}" + ("" if half_life is None else f" hl {half_life:g}"),
                {"quota_alpha": alpha, "quota_half_life": half_life},
            )
            for alpha in args.alphas
        ]
    if item_category is not None:
        merges.append((f"diversity {args.diversity:g}", {"diversity_lambda": args.diversity}))
    names = [f"{name}@{LIST_DEPTH}" for name in LIST_DIAGNOSTICS]
    print(f"{loaded.config.model} on {loaded.config.dataset}: {len(data.valid)} validation users")
    print(f"{'merge':<20}{'recall@50':>10}" + "".join(f"{n.split('@')[0]:>23}" for n in names))
    for label, merge in merges:
        diagnostics = diagnostics_for(loaded.config, data, data.valid, item_category)
        result = evaluate(
            loaded.model, data.valid, item_category=item_category, diagnostics=diagnostics, **merge
        )
        figures = result.diagnostics or {}
        cells = "".join(
            f"{'-' if figures.get(n) is None else f'{figures[n]:.4f}':>23}" for n in names
        )
        print(f"{label:<20}{result.metrics['recall@50']:>10.4f}{cells}")


if __name__ == "__main__":
    main()
