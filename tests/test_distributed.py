"""Training in several processes (``torchrun -m mirec train``): DDP's averaged gradients are
one process's gradient on the whole batch, two processes train the synthetic data to one
process's figures, only rank 0 writes the run folder, and a user error is one line.

Every process runs one thread (``OMP_NUM_THREADS=1``): the suite runs on 2 cores.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import mirec
from mirec.config import load_config
from mirec.data.prepare import prepare
from mirec.models.build import build_model
from mirec.training.distributed import World
from mirec.training.trainer import TrainingExamples, build_objective

REPO = Path(__file__).resolve().parents[1]
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}
TINY = "synthetic:n_users=150,n_items=70,n_clusters=4"
# an odd batch: the ranks' slices are 6 and 5 examples, so the weighting by share counts
BATCH = 11


def _tiny_step():
    """ComiRec-SA on tiny synthetic data, 16 shared sampled negatives: the model, its loss
    on a batch of example indices (drawing the negatives from a generator seeded 0) and
    the batch."""
    config = load_config(
        "comirec-sa", dataset=TINY, fixed={"embedding_dim": 8, "num_negatives": 16}
    )
    data = prepare(TINY, maxlen=config.maxlen)
    torch.manual_seed(0)
    model = build_model(config, data.sequences.n_items, data.maxlen)
    examples = TrainingExamples.of(data, torch.device("cpu"))
    objective = build_objective(config, data, torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)

    def loss(forward, index: torch.Tensor) -> torch.Tensor:
        histories, targets = examples.batch(index)
        return forward(histories, targets, objective, generator, None)

    return model, loss, torch.arange(BATCH)


def _rank_gradients(rank: int, rendezvous: str, out: str) -> None:
    """One of two gloo processes: its slice of the batch through DDP; saves the gradients."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=2)
    try:
        world = World(rank, 2, torch.device("cpu"))
        model, loss, batch = _tiny_step()
        part, share = world.shard(batch)
        forward = world.synchronised(model)  # held: DDP's reducer lives as long as it does
        (loss(forward, part) * share).backward()
        grads = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
        torch.save(grads, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_gradients_are_one_process_gradient_on_the_whole_batch(tmp_path):
    model, loss, batch = _tiny_step()  # also fills the preprocessing cache for the ranks
    loss(model.loss, batch).backward()
    expected = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    mp.spawn(_rank_gradients, args=(f"file://{tmp_path / 'rendezvous'}", str(tmp_path)), nprocs=2)
    for rank in (0, 1):
        grads = torch.load(tmp_path / f"rank{rank}.pt")
        assert grads.keys() == expected.keys()
        for name, grad in grads.items():
            assert torch.allclose(grad, expected[name], rtol=1e-5, atol=1e-7), name
    # not trivially equal: each rank's slice alone has another gradient
    model.zero_grad()
    loss(model.loss, batch[:6]).backward()
    item_table = "item_embedding.weight"
    assert not torch.allclose(model.get_parameter(item_table).grad, expected[item_table])


# Started in every process through PYTHONPATH: records each write under $WATCHED_DIR (a
# file opened for writing, created, renamed, removed: the ways mirec writes a run folder,
# safetensors' and Arrow's own writes included, since they land through a renamed temp
# file) in LOG_DIR/rank-$RANK.txt ("rank-agent" for torchrun itself)
WATCHER = """
import os, sys
WATCHED = os.environ.get("WATCHED_DIR")
if WATCHED:
    NAME = f"rank-{os.environ.get('RANK', 'agent')}.txt"
    LOG = os.open(os.path.join(os.environ["LOG_DIR"], NAME), os.O_WRONLY | os.O_CREAT, 0o644)
    WRITING = os.O_WRONLY | os.O_RDWR | os.O_CREAT

    def watch(event, args):
        if event == "open":
            mode, flags = args[1], args[2]
            paths = args[:1] if (mode and set("wax+") & set(str(mode))) or flags & WRITING else ()
        elif event in ("os.rename", "os.mkdir", "os.remove", "os.rmdir", "shutil.rmtree"):
            paths = args[:2] if event == "os.rename" else args[:1]
        else:
            return
        for path in paths:
            if isinstance(path, (str, bytes, os.PathLike)):
                path = os.path.abspath(os.fsdecode(path))
                if path.startswith(WATCHED):
                    os.write(LOG, f"{event} {path}\\n".encode())

    sys.addaudithook(watch)
"""
SYNTHETIC = "synthetic:n_users=600,n_items=300,n_clusters=6"
# 64 shared negatives: every rank draws a step's negatives as one process does; an odd
# batch: the ranks' slices differ by one example
TRAIN = ("train", "--dataset", SYNTHETIC, "--model", "comirec-sa", "--set", "max_epochs=3",
         "--set", "embedding_dim=16", "--set", "batch_size=255", "--set", "num_negatives=64",
         "--quiet")  # fmt: skip
TORCHRUN = (sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
            "--rdzv-backend=c10d", "--rdzv-endpoint=localhost:0", "-m", "mirec")  # fmt: skip
# a frame of mirec's own code in a traceback (torchrun's frames are torch's, wherever the
# checkout and its virtual environment are: a checkout named mirec/ included)
MIREC_FRAME = re.compile(r'File "' + re.escape(str(Path(mirec.__file__).parent)))
# Two processes take the steps of one (the test above), so their figures differ by
# floating-point rounding only (the order of the gradient sums): measured equal to 5
# decimals; the tolerance leaves room for that rounding to grow on another machine
TOLERANCE = 0.01


def test_torchrun_trains_two_processes_to_one_process_figures(tmp_path):
    one, two, logs = tmp_path / "one", tmp_path / "two", tmp_path / "writes"
    logs.mkdir()
    (tmp_path / "sitecustomize.py").write_text(WATCHER)
    single = subprocess.run(
        [sys.executable, "-m", "mirec", *TRAIN, "--output-dir", str(one)],
        capture_output=True, text=True, env=ENV, timeout=300,
    )  # fmt: skip
    assert single.returncode == 0, single.stderr
    env = {**ENV, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ENV['PYTHONPATH']}"}
    env |= {"WATCHED_DIR": str(two), "LOG_DIR": str(logs)}
    ranks = subprocess.run(
        [*TORCHRUN, *TRAIN, "--output-dir", str(two)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert ranks.returncode == 0, ranks.stderr
    assert ranks.stdout.count("results: ") == 1  # rank 0 reports; rank 1 says nothing
    a, b = (json.loads((run / "metrics.json").read_text()) for run in (one, two))
    assert (a["processes"], b["processes"], b["threads"]) == (1, 2, 1)
    assert a["epochs"] == b["epochs"] == 3
    for name in ("recall@50", "ndcg@50", "recall@20"):
        assert abs(a["test"][name] - b["test"][name]) <= TOLERANCE, name
    for epoch_a, epoch_b in zip(a["history"], b["history"], strict=True):
        assert epoch_a["loss"] == pytest.approx(epoch_b["loss"], abs=1e-3)
    # rank 0 alone locked and wrote the folder, metrics.json moved in once
    writes = {log.name: log.read_text().splitlines() for log in logs.iterdir()}
    assert writes["rank-0.txt"]
    assert not writes.get("rank-1.txt"), writes["rank-1.txt"]
    assert not writes.get("rank-agent.txt")
    assert any(line.endswith(f"{two}/.lock") for line in writes["rank-0.txt"])
    final = [line for line in writes["rank-0.txt"] if line.endswith(f" {two}/metrics.json")]
    assert len([line for line in final if line.startswith("os.rename")]) == 1
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())


def test_a_user_error_under_torchrun_is_one_line(tmp_path):
    """Each rank meets the bad setting; only rank 0 prints it, each exits 2 (torchrun
    itself then reports the failed ranks and exits 1)."""
    bad = [*TORCHRUN, *TRAIN, "--set", "lr=fast", "--output-dir", str(tmp_path / "run")]
    ranks = subprocess.run(bad, capture_output=True, text=True, env=ENV, timeout=300)
    assert ranks.returncode != 0
    lines = [line for line in ranks.stderr.splitlines() if line.startswith("mirec: error:")]
    assert lines == ["mirec: error: setting lr='fast': expected float"], ranks.stderr
    assert "exitcode  : 2" in ranks.stderr  # torchrun's summary of the rank that failed
    assert not MIREC_FRAME.search(ranks.stderr)  # no traceback from a rank
    assert not (tmp_path / "run").exists()


def test_nproc_per_node_trains_as_torchrun_does(tmp_path):
    """`mirec train --nproc-per-node 2` is torchrun's two processes, started for the user."""
    out = tmp_path / "run"
    ranks = subprocess.run(
        [sys.executable, "-m", "mirec", *TRAIN, "--output-dir", str(out), "--nproc-per-node", "2"],
        capture_output=True, text=True, env=ENV, timeout=300,
    )  # fmt: skip
    assert ranks.returncode == 0, ranks.stderr
    assert ranks.stdout.count("results: ") == 1 and ranks.stderr == ""
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["processes"], metrics["threads"], metrics["epochs"]) == (2, 1, 3)


@pytest.mark.parametrize(
    ("change", "line"),
    [
        (("--set", "lr=fast"), "mirec: error: setting lr='fast': expected float"),
        (("--dataset", "missing.csv", "--format", "interactions"),
         "mirec: error: missing.csv: no such file; put the interaction log there or give the "
         "right path"),
        (("--model", "auto"), "mirec: error: --nproc-per-node: model auto trains its candidates "
         "one after another in one process; name one model (--model)"),
    ],
)  # fmt: skip
def test_a_user_error_with_nproc_per_node_is_one_line(tmp_path, change, line):
    """A bad setting is refused before any process starts; an error the processes meet (a
    missing file) is rank 0's line alone: nothing from torchrun's agent either way."""
    args = [*TRAIN, *change, "--output-dir", str(tmp_path / "run"), "--nproc-per-node", "2"]
    ranks = subprocess.run([sys.executable, "-m", "mirec", *args], capture_output=True,
                           text=True, env=ENV, cwd=tmp_path, timeout=300)  # fmt: skip
    assert ranks.returncode == 2
    assert ranks.stderr == f"{line}\n"
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_only_train_runs_under_torchrun(mirec_main, monkeypatch, tmp_path):
    """Another command started by torchrun would run N times over one folder: refused,
    by rank 0 in one line; rank 1 exits with it, silently."""
    args = ("evaluate", "--checkpoint", str(tmp_path))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert mirec_main(*args) == (
        2,
        "",
        "mirec: error: mirec evaluate: runs in one process; of the commands, only "
        "`mirec train` runs under torchrun\n",
    )
    monkeypatch.setenv("RANK", "1")
    assert mirec_main(*args) == (2, "", "")
