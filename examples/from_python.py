"""The README's "From Python" section, run for real: train ComiRec-SA on ml-100k, load the
model folder, recommend, and save a copy. The README's output is this script's, run as

    OMP_NUM_THREADS=1 python examples/from_python.py --data-dir ../shared/data

(training is repeatable for a given thread count; other counts give slightly different
figures).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from mirec import Recommender


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("runs"))
    args = parser.parse_args()

    start = time.perf_counter()
    Recommender.train(dataset="ml-100k", model="comirec-sa", data_dir=args.data_dir,
                      output_dir=args.out / "ml100k-sa", progress=False)  # fmt: skip
    print(f"trained in {time.perf_counter() - start:.0f} s")
    rec = Recommender.load(args.out / "ml100k-sa")  # no data directory needed
    print("test recall@50", rec.metrics["test"]["recall@50"], "epochs", rec.metrics["epochs"])
    history = [50, 172, 181, 1, 121]
    for r in rec.recommend(history, n=5):
        print(r)
    recs = rec.recommend([50, 172, "B0000", 181], n=3, exclude_history=True)
    print(recs, recs.unknown_items)
    print(rec.recommend(["nope"], n=3))
    print("interests", rec.interests(history).shape)
    print(rec.similar_items(50, n=3))
    print(rec.recommend_user(1, n=3))
    print("saved", rec.save(args.out / "ml100k-sa-copy", overwrite=True))


if __name__ == "__main__":
    main()
