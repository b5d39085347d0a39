"""torch-rechub 0.9.0's matching models: training examples/s and evaluation users/s, as JSON.

Run by ``train_speed.py`` with the interpreter of a throwaway virtual environment that has
torch-rechub installed, once per round and ``--model`` (``ComirecSA``, ``MIND``,
``ComirecDR``; ``YoutubeDNN`` is built too, for ``gpu_train_speed.py``). It imports only the
standard library, numpy, torch and torch_rechub, and reads everything else from the
``.npz`` it is handed:

    items (flat item indices, 1..N), n_items, n_users, maxlen,
    train_user, train_start, train_end   (one row per training example, in batch order),
    test_user, test_histories (n, maxlen), test_target_offsets, test_target_items

The models are built as ``../shared/ANCHORS.md`` ran them: a user-id feature, the history
sharing the item table, d 64, K 4, temperature 0.02 as built (stored; ComiRec and MIND never
apply it); MIND with ``dynamic_interest=True``; ComirecDR's capsule maps, which torch-rechub
creates with ``torch.Tensor(...)`` and never initialises, filled with a seeded N(0, 1/d)
(the work of a step does not change). Training is list-wise, as in ANCHORS.md: the model's
own forward scores the positive and 128 fresh uniform negatives per example, cross-entropy
with label 0, Adam (lr 1e-3, ComiRec-DR 5e-3: ``train_speed.py`` passes it), one
``MatchTrainer.train_one_epoch`` call (the inner loop of ``MatchTrainer.fit``) over a
generator that builds each batch (history gather + negative draw) when it is asked for, so
batch building is timed as it is on the mirec side. The generator stops early once the
timed steps have run ``--time-cap`` seconds (ComiRec-DR trains at some 450 examples/s).
Evaluation: the user tower's K interests scored exactly against the whole item tower, max
over interests, top-50, Recall@50 and HitRate@50 from the top-50.
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

# scores held at once during evaluation (users x interests x items), as in mirec's evaluator
SCORE_BUDGET = 1 << 25
TOP = 50
MODELS = ("ComirecSA", "MIND", "ComirecDR", "YoutubeDNN")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("npz", help="arrays written by train_speed.py")
    p.add_argument("--model", choices=MODELS, default="ComirecSA")
    p.add_argument("--batches", type=int, default=100, help="most timed training batches")
    p.add_argument("--warmup", type=int, default=20, help="untimed training batches first")
    p.add_argument(
        "--time-cap", type=float, default=None, help="stop the timed batches after this many s"
    )
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


def build_model(
    name: str, n_users: int, n_items: int, d: int, k: int, maxlen: int, temperature: float
) -> torch.nn.Module:
    """torch-rechub's ``name`` for a catalogue of ``n_items`` (indices 1..N, 0 padding) and
    histories of ``maxlen``: a user id, the history sharing the item table, the target and
    the negatives (``neg_items``) per example. Draws from torch's global generator."""
    from torch_rechub.basic.features import SequenceFeature, SparseFeature
    from torch_rechub.models import matching

    # these models need at least one user feature (an empty list raises in EmbeddingLayer);
    # with nothing but sequences, the user id is the one there is, as in their examples
    user = [SparseFeature("user_id", n_users + 1, embed_dim=d)]
    item = [SparseFeature("item_id", n_items + 1, embed_dim=d, padding_idx=0)]
    negatives = [
        SequenceFeature(
            "neg_items", n_items + 1, embed_dim=d, pooling="concat", shared_with="item_id"
        )
    ]
    if name == "YoutubeDNN":
        # the history is mean-pooled (padding 0 masked) into the user tower's input
        history = SequenceFeature(
            "hist_item_id",
            n_items + 1,
            embed_dim=d,
            pooling="mean",
            shared_with="item_id",
            padding_idx=0,
        )
        return matching.YoutubeDNN(
            [*user, history],
            item,
            negatives,
            user_params={"dims": [4 * d, d]},
            temperature=temperature,
        )
    history = [
        SequenceFeature(
            "hist_item_id", n_items + 1, embed_dim=d, pooling="concat", shared_with="item_id"
        )
    ]
    common = {"temperature": temperature, "interest_num": k}
    if name == "ComirecSA":
        return matching.ComirecSA(user, history, item, negatives, **common)
    if name == "MIND":
        return matching.MIND(
            user, history, item, negatives, max_length=maxlen, dynamic_interest=True, **common
        )
    if name == "ComirecDR":
        model = matching.ComirecDR(user, history, item, negatives, max_length=maxlen, **common)
        # its capsule maps are created with torch.Tensor(...) and never initialised: whatever
        # was in memory (zeros in one run, 1e16 in the next); a seeded normal fill gives the
        # loss a meaning and leaves the work of a step unchanged
        with torch.no_grad():
            model.capsule.w.normal_(0.0, d**-0.5)
        return model
    raise ValueError(f"no torch-rechub builder for {name}; known: {', '.join(MODELS)}")


def gather(items: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor, maxlen: int):
    """items[max(start, end - maxlen):end] per row, left-padded with 0 to maxlen."""
    index = ends[:, None] - maxlen + torch.arange(maxlen)
    return torch.where(index >= starts[:, None], items[index.clamp_min(0)], 0)


def batches(arrays, first: int, count: int, args, gen, clock: dict | None = None):
    """Batches ``first .. first + count - 1`` as MatchTrainer consumes them: (x_dict, y),
    built on demand (history gather and negative draw happen inside the timed loop). With
    ``clock`` ({"start": t}), no batch is begun after ``args.time_cap`` seconds; the number
    handed out is kept in ``clock["batches"]``."""
    items = arrays["items"]
    n_items, maxlen = arrays["n_items"], arrays["maxlen"]
    size = args.batch_size
    for b in range(first, first + count):
        if clock is not None:
            if args.time_cap is not None and time.perf_counter() - clock["start"] > args.time_cap:
                return
            clock["batches"] += 1
        sl = slice(b * size, (b + 1) * size)
        starts, ends = arrays["train_start"][sl], arrays["train_end"][sl]
        x = {
            "user_id": arrays["train_user"][sl],
            "hist_item_id": gather(items, starts, ends, maxlen),
            "item_id": items[ends],
            "neg_items": torch.randint(1, n_items + 1, (len(ends), args.negatives), generator=gen),
        }
        yield x, torch.zeros(len(ends), dtype=torch.long)


def train_speed(model, arrays, args) -> tuple[float, int]:
    """Seconds and examples of up to ``args.batches`` MatchTrainer steps (fewer when
    ``args.time_cap`` runs out) after ``args.warmup`` untimed ones."""
    from torch_rechub.trainers import MatchTrainer

    trainer = MatchTrainer(
        model,
        mode=2,  # list-wise: softmax cross-entropy over [positive, negatives]
        optimizer_params={"lr": args.lr, "weight_decay": 0.0},
        device="cpu",
        model_path=tempfile.gettempdir(),
    )
    gen = torch.Generator().manual_seed(args.seed)
    needed = (args.warmup + args.batches) * args.batch_size
    if len(arrays["train_end"]) < needed:
        raise ValueError(f"{len(arrays['train_end'])} training examples, {needed} needed")
    with contextlib.redirect_stderr(io.StringIO()):  # its tqdm bar
        if args.warmup:
            trainer.train_one_epoch(batches(arrays, 0, args.warmup, args, gen))
        clock = {"start": time.perf_counter(), "batches": 0}
        loss = trainer.train_one_epoch(batches(arrays, args.warmup, args.batches, args, gen, clock))
        seconds = time.perf_counter() - clock["start"]
    if not np.isfinite(loss):
        raise RuntimeError(f"training loss is {loss}")
    return seconds, clock["batches"] * args.batch_size


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
        args.model,
        arrays["n_users"],
        arrays["n_items"],
        args.embedding_dim,
        args.interests,
        arrays["maxlen"],
        args.temperature,
    )
    train_s, examples = train_speed(model, arrays, args)
    result = {
        "model": args.model,
        "train_examples_per_second": examples / train_s,
        "train_seconds": train_s,
        "train_examples": examples,
    }
    if args.eval_passes:
        start = time.perf_counter()
        for _ in range(args.eval_passes):
            _, users, metrics = eval_speed(model, arrays, args.interests)
        eval_s = time.perf_counter() - start
        users *= args.eval_passes
        result.update(
            eval_users_per_second=users / eval_s,
            eval_seconds=eval_s,
            eval_users=users,
            eval_metrics_after_short_training=metrics,
        )
    result.update(
        torch_rechub_version=importlib.metadata.version("torch-rechub"),
        torch_version=torch.__version__,
        threads=torch.get_num_threads(),
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
