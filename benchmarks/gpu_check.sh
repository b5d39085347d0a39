#!/usr/bin/env bash
# The CUDA check, run on a GPU machine from the repository root:
#   - the whole test suite with device "auto" (CUDA there);
#   - `mirec train` of ComiRec-SA on amazon-beauty on CUDA, default settings and a large batch,
#     the large batch and SASRec also under precision=bf16 (accuracy and speed beside fp32);
#   - one epoch of ComiRec-SA on a 10M-interaction synthetic log: epoch time, examples/s,
#     evaluation users/s at 200,000 items;
#   - the trained model folder loaded by `Recommender` on CUDA and on CPU: the same lists.
# Expects ../shared/data (or DATA=folder) and writes run folders under OUT (default runs/gpu).
# The device lacks Chromium and the serve extra: bring wheels of faiss-cpu, fastapi,
# starlette, uvicorn, httptools, uvloop, onnx, onnxscript, onnx-ir, onnxruntime, httpx,
# httpcore, h11, anyio, ml_dtypes, protobuf, flatbuffers, hypothesis (see constraints.txt).
# tests/test_page.py (a browser test, nothing of CUDA in it) is left out by default.
set -euo pipefail
DATA=${DATA:-../shared/data}
OUT=${OUT:-runs/gpu}
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; \
print('torch', torch.__version__, torch.cuda.get_device_name(0))"
python3 -m pytest -q -x -p no:cacheprovider ${PYTEST_ARGS:-tests --ignore=tests/test_page.py}
python3 -m mirec train --dataset amazon-beauty --model comirec-sa --data-dir "$DATA" \
  --output-dir "$OUT/beauty-sa" --quiet
python3 -m mirec train --dataset amazon-beauty --model comirec-sa --data-dir "$DATA" \
  --output-dir "$OUT/beauty-sa-b4096" --set batch_size=4096 --set lr=0.004 --quiet
# the same large batch under bf16 autocast: its accuracy and speed beside fp32's
python3 -m mirec train --dataset amazon-beauty --model comirec-sa --data-dir "$DATA" \
  --output-dir "$OUT/beauty-sa-b4096-bf16" --set batch_size=4096 --set lr=0.004 \
  --set precision=bf16 --quiet
python3 -m mirec train --dataset amazon-beauty --model sasrec --data-dir "$DATA" \
  --output-dir "$OUT/beauty-sasrec" --quiet
python3 -m mirec train --dataset amazon-beauty --model sasrec --data-dir "$DATA" \
  --output-dir "$OUT/beauty-sasrec-bf16" --set precision=bf16 --quiet
# a 10M-interaction synthetic log (500,000 users, 200,000 items; benchmarks/scale.py, which
# also prints its preparation time), then one epoch of ComiRec-SA on it: the epoch's time
# and examples/s, and the test pass's users/s over the 200,000 items, in the table below
python3 benchmarks/scale.py --users 500000 --items 200000 --interactions 10000000 \
  --out "$OUT/scale10m-log"
python3 -m mirec train --dataset "$OUT/scale10m-log/log/part-*.parquet" --format interactions \
  --columns user,item,ts --model comirec-sa --output-dir "$OUT/scale10m-sa" \
  --set max_epochs=1 --set batch_size=4096 --set lr=0.004 --quiet
python3 - "$OUT" <<'PY'
import json, sys
from pathlib import Path
for run in sorted(Path(sys.argv[1]).glob("*/metrics.json")):
    m = json.loads(run.read_text())
    print(f"{run.parent.name:<20} device {m['device']:<7} test recall@50 {m['test']['recall@50']:.4f}"
          f"  epochs {m['epochs']:>3}  train {m['train_seconds']:7.1f}s"
          f"  {m['train_examples_per_second']:>10,.0f} ex/s  eval {m['eval_users_per_second']:>9,.0f} users/s")
PY
python3 - "$OUT/beauty-sa" <<'PY'
import sys, time
from mirec import Recommender
gpu, cpu = Recommender.load(sys.argv[1], device="cuda"), Recommender.load(sys.argv[1], device="cpu")
histories = [gpu.history_of(u)[:-1] for u in gpu.info.user_ids[:2000]]
start = time.perf_counter()
on_gpu = gpu.recommend(histories, n=50)
seconds = time.perf_counter() - start
on_cpu = cpu.recommend(histories, n=50)
same = sum([r.item for r in a] == [r.item for r in b] for a, b in zip(on_gpu, on_cpu))
overlap = sum(len({r.item for r in a} & {r.item for r in b}) for a, b in zip(on_gpu, on_cpu))
print(f"Recommender on {gpu.info.device}: {len(histories)} histories in {seconds:.3f}s; "
      f"lists identical to CPU: {same}/{len(histories)}; item overlap {overlap / (50 * len(histories)):.4f}")
assert overlap / (50 * len(histories)) > 0.99, "CUDA and CPU lists differ"
PY
