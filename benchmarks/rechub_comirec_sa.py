"""torch-rechub 0.9.0's ComiRec-SA: training examples/s and evaluation users/s, as JSON.

Run by ``train_speed.py`` with the interpreter of a throwaway virtual environment that has
torch-rechub installed; it imports only the standard library, numpy, torch and
torch_rechub, and reads everything else from the ``.npz`` it is handed:

    items (flat item indices, 1..N), n_items, n_users, maxlen,
    train_user, train_start, train_end   (one row per training example, in batch order),
    test_user, test_histories (n, maxlen), test_target_offsets, test_target_items

Training is list-wise, as in ANCHORS.md: the model's own forward scores the positive and
128 fresh uniform negatives per example, cross-entropy with label 0, Adam, one
``MatchTrainer.train_one_epoch`` call (the inner loop of ``MatchTrainer.fit``) over a
generator that builds each batch (history gather + negative draw) when it is asked for,
so batch building is timed as it is on the mirec side. Evaluation: the user tower's K
interests scored exactly against the whole item tower, max over interests, top-50,
Recall@50 and HitRate@50 from the top-50.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import io
import json
import sys
import tempfile
import time

import numpy as np
import torch
from torch_rechub.basic.features import SequenceFeature, SparseFeature
from torch_rechub.models.matching import ComirecSA
from torch_rechub.trainers import MatchTrainer

# scores held at once during evaluation (users x interests x items), as in mirec's evaluator
SCORE_BUDGET = 1 << 25
TOP = 50


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("npz", help="arrays written by train_speed.py")
    p.add_argument("--batches", type=int, default=100, help="timed training batches")
    p.add_argument("--warmup", type=int, default=20, help="untimed training batches first")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--negatives", type=int, default=128, help="uniform negatives per example")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--embedding-dim", type=int, default=64)
    p.add_argument("--interests", type=int, default=4)
    p.add_argument("--temperature", type=float, default=0.02, help="stored by the model")
    p.add_argument("--eval-passes", type=int, default=3, help="evaluations timed together")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=42)
    return p.parse_args(argv)


def build_model(n_users: int, n_items: int, d: int, k: int, temperature: float) -> ComirecSA:
    # ComirecSA needs at least one user feature (an empty list raises in its EmbeddingLayer);
    # with nothing but sequences, the user id is the one there is, as in its examples.
    user_features = [SparseFeature("user_id", n_users + 1, embed_dim=d)]
    item_features = [SparseFeature("item_id", n_items + 1, embed_dim=d, padding_idx=0)]
    history_features = [
        SequenceFeature(
            "hist_item_id", n_items + 1, embed_dim=d, pooling="concat", shared_with="item_id"
        )
    ]
    neg_item_feature = [
        SequenceFeature(
            "neg_items", n_items + 1, embed_dim=d, pooling="concat", shared_with="item_id"
        )
    ]
    return ComirecSA(
        user_features,
        history_features,
        item_features,
        neg_item_feature,
        temperature=temperature,
        interest_num=k,
    )


def gather(items: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor, maxlen: int):
    """items[max(start, end - maxlen):end] per row, left-padded with 0 to maxlen."""
    index = ends[:, None] - maxlen + torch.arange(maxlen)
    return torch.where(index >= starts[:, None], items[index.clamp_min(0)], 0)


def batches(arrays, first: int, count: int, batch_size: int, negatives: int, gen):
    """Batches ``first .. first + count - 1`` as MatchTrainer consumes them: (x_dict, y),
    built on demand (history gather and negative draw happen inside the timed loop)."""
    items = arrays["items"]
    n_items, maxlen = arrays["n_items"], arrays["maxlen"]
    for b in range(first, first + count):
        sl = slice(b * batch_size, (b + 1) * batch_size)
        starts, ends = arrays["train_start"][sl], arrays["train_end"][sl]
        x = {
            "user_id": arrays["train_user"][sl],
            "hist_item_id": gather(items, starts, ends, maxlen),
            "item_id": items[ends],
            "neg_items": torch.randint(1, n_items + 1, (len(ends), negatives), generator=gen),
        }
        yield x, torch.zeros(len(ends), dtype=torch.long)


def train_speed(model, arrays, args) -> tuple[float, int]:
    """Seconds and examples of ``args.batches`` MatchTrainer steps after ``args.warmup``."""
    trainer = MatchTrainer(
        model,
        mode=2,  # list-wise: softmax cross-entropy over [positive, negatives]
        optimizer_params={"lr": args.lr, "weight_decay": 0.0},
        device="cpu",
        model_path=tempfile.gettempdir(),
    )
    gen = torch.Generator().manual_seed(args.seed)
    bs, neg = args.batch_size, args.negatives
    needed = (args.warmup + args.batches) * bs
    if len(arrays["train_end"]) < needed:
        raise ValueError(f"{len(arrays['train_end'])} training examples, {needed} needed")
    with contextlib.redirect_stderr(io.StringIO()):  # its tqdm bar
        if args.warmup:
            trainer.train_one_epoch(batches(arrays, 0, args.warmup, bs, neg, gen))
        start = time.perf_counter()
        loss = trainer.train_one_epoch(batches(arrays, args.warmup, args.batches, bs, neg, gen))
        seconds = time.perf_counter() - start
    if not np.isfinite(loss):
        raise RuntimeError(f"training loss is {loss}")
    return seconds, args.batches * bs


@torch.no_grad()
def eval_speed(model, arrays, k: int) -> tuple[float, int, dict[str, float]]:
    model.eval()
    start = time.perf_counter()
    n_items = arrays["n_items"]
    model.mode = "item"
    item_table = model({"item_id": torch.arange(1, n_items + 1)})  # (N, d), L2-normalised
    model.mode = "user"
    histories, users = arrays["test_histories"], arrays["test_user"]
    offsets, targets = arrays["test_target_offsets"], arrays["test_target_items"]
    n = len(users)
    chunk = max(1, SCORE_BUDGET // (k * n_items))
    hit_sum = recall_sum = 0.0
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        interests = model({"user_id": users[lo:hi], "hist_item_id": histories[lo:hi]})
        scores = torch.einsum("bkd,nd->bkn", interests, item_table).amax(dim=1)
        top = torch.topk(scores, TOP, dim=1).indices + 1  # item indices 1..N
        off = offsets[lo : hi + 1]
        counts = off[1:] - off[:-1]
        mask = torch.zeros(hi - lo, n_items + 1, dtype=torch.bool)
        owners = torch.repeat_interleave(torch.arange(hi - lo), counts)
        mask[owners, targets[off[0] : off[-1]]] = True
        found = mask.gather(1, top).sum(1).double()
        recall_sum += float((found / counts.double()).sum())
        hit_sum += float((found > 0).double().sum())
    model.mode = None
    seconds = time.perf_counter() - start
    return seconds, n, {"recall@50": recall_sum / n, "hitrate@50": hit_sum / n}


def load(path: str) -> dict:
    with np.load(path) as z:
        arrays = {name: torch.from_numpy(z[name]) for name in z.files}
    for name in ("n_items", "n_users", "maxlen"):
        arrays[name] = int(arrays[name])
    return arrays


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    arrays = load(args.npz)
    model = build_model(
        arrays["n_users"],
        arrays["n_items"],
        args.embedding_dim,
        args.interests,
        args.temperature,
    )
    train_s, examples = train_speed(model, arrays, args)
    start = time.perf_counter()
    for _ in range(args.eval_passes):
        _, users, metrics = eval_speed(model, arrays, args.interests)
    eval_s = time.perf_counter() - start
    users *= args.eval_passes
    result = {
        "train_examples_per_second": examples / train_s,
        "train_seconds": train_s,
        "train_examples": examples,
        "eval_users_per_second": users / eval_s,
        "eval_seconds": eval_s,
        "eval_users": users,
        "eval_metrics_after_short_training": metrics,
        "torch_rechub_version": importlib.metadata.version("torch-rechub"),
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
