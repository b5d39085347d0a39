"""The README's "From Python" path, run for real: train ComiRec-SA on ml-100k, load the
model folder, recommend, and save a copy. Run it as

    OMP_NUM_THREADS=1 python examples/from_python.py [DATA [OUT]]

DATA is the folder of datasets that holds ml-100k (default: $MIREC_DATA_DIR, else mirec's
default data folder; `mirec download ml-100k` puts it there); OUT is where the model
folders go (default: runs). Training takes about two minutes on one core and is repeatable
for a given thread count (other counts give slightly different figures).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import mirec


def main() -> None:
    if any(arg in ("-h", "--help") for arg in sys.argv[1:]):
        print(__doc__)
        return
    data_dir = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("MIREC_DATA_DIR")
    out = Path(sys.argv[2] if len(sys.argv) > 2 else "runs")

    start = time.perf_counter()
    mirec.train(dataset="ml-100k", model="comirec-sa", data_dir=data_dir,
                output_dir=out / "ml100k-sa", overwrite=True, progress=False)  # fmt: skip
    print(f"trained in {time.perf_counter() - start:.0f} s")
    rec = mirec.Recommender.load(out / "ml100k-sa")  # no data directory needed
    metrics = rec.info.metrics
    print("test recall@50", metrics.test["recall@50"], "epochs", metrics.fit.epochs)
    history = [50, 172, 181, 1, 121]  # raw item ids, oldest first
    for r in rec.recommend(history, n=5):
        print(r)
    recs = rec.recommend([50, 172, "B0000", 181], n=3, exclude_history=True)
    print(recs, recs.unknown_items)
    print(rec.recommend(["nope"], n=3))
    print("interests", rec.interests(history).shape)
    print(rec.similar_items(50, n=3))
    print(rec.recommend(user=1, n=3))
    print("saved", rec.save(out / "ml100k-sa-copy", overwrite=True))


if __name__ == "__main__":
    main()
