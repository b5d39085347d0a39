"""Fine-tuning a model folder on a grown log (``init_from``, ``mirec train --init-from``):
learned rows carried by raw id, new items retrievable, the old folder untouched, the new one
loads and serves, and every setting that would change the architecture refused before work."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

import mirec
from mirec import Recommender
from mirec.config import load_config
from mirec.data.prepare import prepare
from mirec.errors import ConfigError, MirecError
from mirec.models.build import build_model
from mirec.models.folder import load_model
from mirec.training.warm_start import CONTEXT, warm_start

SMALL = {"embedding_dim": 16, "max_epochs": 1, "valid_users": 200, "batch_size": 512}


@pytest.fixture(scope="module")
def logs(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """ml-100k's log up to its 80th time percentile (T1), and the whole log (T2): the second
    has items and users the first does not."""
    rows = np.loadtxt(shared_data / "ml-100k" / "u.data", dtype=np.int64)
    rows = rows[np.argsort(rows[:, 3], kind="stable")]
    t1 = np.quantile(rows[:, 3], 0.8)
    folder = tmp_path_factory.mktemp("logs")
    paths = []
    for name, part in (("t1.csv", rows[rows[:, 3] <= t1]), ("t2.csv", rows)):
        path = folder / name
        lines = [f"{u},{i},{t}" for u, i, _, t in part.tolist()]
        path.write_text("user,item,ts\n" + "\n".join(lines) + "\n")
        paths.append(path)
    return paths[0], paths[1]


def interactions(path: Path) -> dict:
    return {"dataset": str(path), "format": "interactions", "columns": "user,item,ts"}


@pytest.fixture(scope="module")
def t1_run(logs, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("t1") / "run"
    mirec.train(
        output_dir=out, model="comirec-sa", progress=False, **interactions(logs[0]), **SMALL
    )
    return out


def digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_warm_start_carries_rows_by_id_and_starts_new_items_at_the_mean(t1_run, logs):
    old = load_model(t1_run, device=torch.device("cpu"))
    config = load_config(**interactions(logs[1]), init_from=str(t1_run))
    assert (config.model, config.embedding_dim, config.maxlen) == ("comirec-sa", 16, 20)
    data = prepare(config.dataset, format=config.format, columns=config.columns, maxlen=20)
    seqs = data.sequences
    torch.manual_seed(0)
    model = build_model(config, seqs.n_items, data.maxlen)
    taken = warm_start(model, t1_run, seqs, data.split.train)
    assert taken.new_items > 0 and taken.new_users > 0 and taken.known_items > 0
    old_rows = {item: row for row, item in enumerate(old.data.sequences.item_ids.tolist())}
    table, old_table = model.item_table.weight.detach(), old.model.item_table.weight.detach()
    known = [j for j, item in enumerate(seqs.item_ids.tolist()) if item in old_rows]
    new = [j for j, item in enumerate(seqs.item_ids.tolist()) if item not in old_rows]
    assert len(new) == taken.new_items
    for j in known[:50]:
        assert torch.equal(table[j + 1], old_table[old_rows[seqs.item_ids[j].item()] + 1])
    # a new item starts among the known items just before it in training users' histories
    # (CONTEXT of them), else (no categories in this log) at the mean of all known items
    mean = old_table[[old_rows[seqs.item_ids[j].item()] + 1 for j in known]].mean(0)
    train = set(data.split.train.tolist())
    for j in new:
        before = [
            old_rows[seqs.item_ids[seq[p - lag] - 1].item()] + 1
            for u in train
            for seq in [seqs.sequence(u)]
            for p in np.flatnonzero(seq == j + 1)
            for lag in range(1, CONTEXT + 1)
            if p - lag >= 0 and seqs.item_ids[seq[p - lag] - 1].item() in old_rows
        ]
        if before:  # their mean direction, at their mean length
            rows = old_table[before]
            expected = rows.sum(0) / rows.sum(0).norm() * rows.norm(dim=1).mean()
        else:
            expected = mean
        assert torch.allclose(table[j + 1], expected, atol=1e-6), j
    for name, parameter in old.model.named_parameters():
        if parameter is not old.model.item_table.weight:
            assert torch.equal(dict(model.named_parameters())[name], parameter)


def test_fine_tuning_retrieves_new_items_and_leaves_the_folder_as_it_is(
    t1_run, logs, tmp_path, serve_process
):
    before = digests(t1_run)
    out = tmp_path / "fine-tuned"
    rec = mirec.train(output_dir=out, init_from=t1_run, progress=False, **interactions(logs[1]))
    assert digests(t1_run) == before
    record = rec.info.metrics.fine_tuned
    assert record["from"] == str(t1_run) and record["new_items"] > 0 and record["new_users"] > 0
    assert rec.info.config.init_from == str(t1_run) and rec.info.n_items > record["known_items"]
    assert record["trained_on"] == "new"
    known = set(Recommender.load(t1_run).info.item_ids)
    new_items = set(rec.info.item_ids) - known
    lists = rec.recommend(user=list(rec.info.user_ids), n=50)
    assert new_items & {r.item for recs in lists for r in recs}, "no new item is ever retrieved"
    server = serve_process(["--checkpoint", str(out), "--workers", "1"], tmp_path)
    try:
        user = rec.info.user_ids[0]
        with httpx.Client(base_url=server.url, timeout=60) as http:
            answer = http.get(f"/users/{user}/recommendations", params={"n": 10})
        assert answer.status_code == 200
        assert [r["item"] for r in answer.json()["items"]] == [
            r.item for r in rec.recommend(user=user, n=10)
        ]
    finally:
        server.stop()


def test_fine_tuning_on_what_is_new_trains_only_the_positions_the_folder_lacked(t1_run, logs):
    """fine_tune_on=new: each user's examples start past the history the folder stored
    (a new user's from their first trainable position), each read from its whole history."""
    from mirec.training.trainer import TrainingExamples

    old = load_model(t1_run, device=torch.device("cpu")).data.sequences
    config = load_config(**interactions(logs[1]), init_from=str(t1_run))
    data = prepare(config.dataset, format=config.format, columns=config.columns, maxlen=20)
    seqs = data.sequences
    torch.manual_seed(0)
    taken = warm_start(build_model(config, seqs.n_items, 20), t1_run, seqs, data.split.train)
    had = dict(zip(old.user_ids.tolist(), old.lengths.tolist(), strict=True))
    assert taken.known_positions.tolist() == [had.get(u, 0) for u in seqs.user_ids.tolist()]
    cpu = torch.device("cpu")
    every = TrainingExamples.of(data, cpu)
    new = TrainingExamples.of(data, cpu, known_positions=taken.known_positions)
    positions = (new.ends - torch.from_numpy(seqs.offsets[new.users.numpy()])).numpy()
    assert (positions >= taken.known_positions[new.users.numpy()]).all()
    lengths, known = seqs.lengths[data.split.train], taken.known_positions[data.split.train]
    assert len(new) == int(np.maximum(lengths - np.maximum(known, 4), 0).sum())
    assert 0 < len(new) < len(every) and new.n_targets == len(new)
    # a window is kept when it holds a new target, and counts its targets
    windows = TrainingExamples.of(data, cpu, True, taken.known_positions)
    assert 0 < len(windows) < len(TrainingExamples.of(data, cpu, True))


def test_a_setting_that_changes_the_architecture_is_refused_before_work(t1_run, logs, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(
        ConfigError, match=r"setting embedding_dim=32: --init-from .* holds a model"
    ):
        mirec.train(output_dir=out, init_from=t1_run, embedding_dim=32, **interactions(logs[1]))
    with pytest.raises(ConfigError, match="holds a comirec-sa model; --model sasrec is another"):
        mirec.train(output_dir=out, init_from=t1_run, model="sasrec", **interactions(logs[1]))
    with pytest.raises(ConfigError, match="not a model folder"):
        mirec.train(output_dir=out, init_from=tmp_path, **interactions(logs[1]))
    with pytest.raises(MirecError, match="inside, the folder --init-from reads"):
        mirec.train(output_dir=t1_run / "next", init_from=t1_run, **interactions(logs[1]))
    with pytest.raises(MirecError, match="inside, the folder --init-from reads"):
        mirec.train(output_dir=t1_run, init_from=t1_run, overwrite=True, **interactions(logs[1]))
    assert not out.exists()
    # training settings may change: the learning rate, the epochs, the batch
    config = load_config(**interactions(logs[1]), init_from=str(t1_run), lr=5e-4, max_epochs=2)
    assert (config.lr, config.max_epochs, config.embedding_dim) == (5e-4, 2, 16)


def test_the_cli_fine_tunes_and_refuses_a_popularity_folder(mirec_main, logs, tmp_path):
    source = ["--dataset", str(logs[0]), "--format", "interactions", "--columns", "user,item,ts"]
    grown = ["--dataset", str(logs[1]), "--format", "interactions", "--columns", "user,item,ts"]
    popular = tmp_path / "popular"
    code, _, err = mirec_main(
        "train", *source, "--model", "most-popular", "--output-dir", str(popular), "-q"
    )
    assert code == 0, err
    code, _, err = mirec_main(
        "train", *grown, "--init-from", str(popular), "--output-dir", str(tmp_path / "x"), "-q"
    )
    assert code == 2 and "learns no weights to start from" in err and "Traceback" not in err
    assert not (tmp_path / "x" / "model.safetensors").exists()


GONE = 40
"""The shrunk log lacks every item whose id is a multiple of this."""


@pytest.fixture(scope="module")
def shrunk(logs, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole log (T2) without any interaction of the items whose id is a multiple of
    :data:`GONE`: items of the T1 folder that the new log no longer holds."""
    lines = logs[1].read_text().splitlines()
    kept = [line for line in lines[1:] if int(line.split(",")[1]) % GONE]
    path = tmp_path_factory.mktemp("shrunk") / "t2-shrunk.csv"
    path.write_text("\n".join([lines[0], *kept]) + "\n")
    return path


def prepared(path: Path, **settings) -> tuple:
    """The config of a fine-tune of ``settings['init_from']`` on ``path``, its data (as a
    run prepares it) and a model built for it."""
    from mirec.runs import prepare_for

    config = load_config(**interactions(path), **settings)
    data = prepare_for(config)
    torch.manual_seed(0)
    return config, data, build_model(config, data.sequences.n_items, data.maxlen)


def test_removed_items_kept_keep_their_rows_and_dropped_ones_go(t1_run, shrunk):
    old = load_model(t1_run, device=torch.device("cpu"))
    old_ids = old.data.sequences.item_ids.tolist()
    gone = [item for item in old_ids if item % GONE == 0]
    assert gone
    # drop (the default): the new catalogue is the log's own
    _, data, model = prepared(shrunk, init_from=str(t1_run))
    assert not set(gone) & set(data.sequences.item_ids.tolist())
    dropped = warm_start(model, t1_run, data.sequences, data.split.train)
    assert (dropped.dropped_items, dropped.kept_items) == (len(gone), 0)
    # keep: the same catalogue, then the folder's removed items, each with its learned row
    _, kept_data, kept_model = prepared(shrunk, init_from=str(t1_run), removed_items="keep")
    seqs = kept_data.sequences
    n = data.sequences.n_items
    assert seqs.item_ids[:n].tolist() == data.sequences.item_ids.tolist()
    assert sorted(seqs.item_ids[n:].tolist()) == sorted(gone)
    assert np.array_equal(seqs.items, data.sequences.items)  # the log's behaviour unchanged
    kept = warm_start(kept_model, t1_run, seqs, kept_data.split.train)
    assert (kept.kept_items, kept.dropped_items) == (len(gone), 0)
    assert kept.known_items == dropped.known_items and kept.new_items == dropped.new_items
    table, old_table = kept_model.item_table.weight.detach(), old.model.item_table.weight.detach()
    for j, item in enumerate(seqs.item_ids[n:].tolist(), start=n + 1):
        assert torch.equal(table[j], old_table[old_ids.index(item) + 1]), item
    assert kept.to_dict()["kept_items"] == len(gone)


def test_a_fine_tune_that_keeps_removed_items_recommends_them(t1_run, shrunk, tmp_path):
    out = tmp_path / "kept"
    rec = mirec.train(
        output_dir=out,
        init_from=t1_run,
        removed_items="keep",
        progress=False,
        **interactions(shrunk),
    )
    gone = [i for i in Recommender.load(t1_run).info.item_ids if i % GONE == 0]
    record = rec.info.metrics.fine_tuned
    assert (record["kept_items"], record["dropped_items"]) == (len(gone), 0)
    loaded = mirec.load(out)
    counts = dict(zip(loaded.info.item_ids, loaded.info.item_counts.tolist(), strict=True))
    assert all(counts[item] == 0 for item in gone)  # in the catalogue, with no behaviour
    user = loaded.info.user_ids[0]
    every = loaded.recommend(user=user, n=loaded.info.n_items)
    assert set(gone) <= {r.item for r in every}
    assert len(loaded.recommend(history=gone[:3], n=10)) == 10  # a history of kept items


def test_removed_items_keep_needs_a_retrieval_fine_tune():
    from mirec.core.config import Config

    with pytest.raises(ConfigError, match=r"removed_items='keep': acts on the folder .* init_from"):
        Config(removed_items="keep")
    with pytest.raises(ConfigError, match="removed_items='keep': a CTR run draws its negatives"):
        Config(task="ctr", model="din", init_from="folder", removed_items="keep")
    with pytest.raises(ConfigError, match="init_optimizer='carry': acts on the folder"):
        Config(init_optimizer="carry")
    with pytest.raises(ConfigError, match="removed_items='gone': must be one of drop, keep"):
        Config(init_from="folder", removed_items="gone")


@pytest.fixture(scope="module")
def t1_with_optimizer(logs, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("t1-optimizer") / "run"
    mirec.train(
        output_dir=out,
        model="comirec-sa",
        progress=False,
        keep_optimizer_state=True,
        **interactions(logs[0]),
        **SMALL,
    )
    return out


def test_a_carried_optimizer_starts_from_the_folders_state_row_by_row(t1_with_optimizer, shrunk):
    from mirec.models.folder import OPTIMIZER_FILE
    from mirec.training.checkpoint import load_optimizer_state, read_optimizer_state
    from mirec.training.optimizer import build_optimizer
    from mirec.training.warm_start import carried_optimizer_state

    folder = t1_with_optimizer
    assert (folder / OPTIMIZER_FILE).is_file()
    saved = read_optimizer_state(folder)
    assert not saved.sparse_items
    old_ids = load_model(folder, device=torch.device("cpu")).data.sequences.item_ids.tolist()
    config, data, model = prepared(
        shrunk, init_from=str(folder), init_optimizer="carry", removed_items="keep"
    )
    start = warm_start(model, folder, data.sequences, data.split.train)
    assert start.new_items > 0 and start.kept_items > 0
    optimizer = build_optimizer(model, config, sparse_items=False)
    load_optimizer_state(optimizer, model, carried_optimizer_state(saved, start), False)
    table = optimizer.state[model.item_table.weight]
    table_name = next(n for n, p in model.named_parameters() if p is model.item_table.weight)
    old_table = saved.state[table_name]
    old_rows = {item: row for row, item in enumerate(old_ids)}
    ids = data.sequences.item_ids.tolist()
    known = [j for j, item in enumerate(ids) if item in old_rows]
    new = [j for j, item in enumerate(ids) if item not in old_rows]
    assert len(known) > len(new) > 0
    for name in ("exp_avg", "exp_avg_sq"):
        assert bool(old_table[name].abs().sum() > 0)  # the folder's run took steps
        for j in known:
            assert torch.equal(table[name][j + 1], old_table[name][old_rows[ids[j]] + 1])
        assert not table[name][[j + 1 for j in new]].any()
    assert float(table["step"]) == float(old_table["step"]) > 0
    for name, parameter in model.named_parameters():
        if name != table_name:
            assert torch.equal(optimizer.state[parameter]["exp_avg"], saved.state[name]["exp_avg"])
    # the optimizer of the sparse item table keeps another state: refused in one line
    sparse = build_optimizer(model, config, sparse_items=True)
    with pytest.raises(ConfigError, match="dense gradients, and this run's are sparse"):
        load_optimizer_state(sparse, model, carried_optimizer_state(saved, start), True)


def test_fine_tuning_with_the_carried_optimizer_trains_and_serves(
    t1_with_optimizer, logs, tmp_path
):
    from mirec.models.folder import OPTIMIZER_FILE
    from mirec.training.checkpoint import read_optimizer_state

    out = tmp_path / "carried"
    rec = mirec.train(
        output_dir=out,
        init_from=t1_with_optimizer,
        init_optimizer="carry",
        progress=False,
        **interactions(logs[1]),
    )
    assert rec.info.metrics.fine_tuned["optimizer"] == "carry"
    assert (out / OPTIMIZER_FILE).is_file()  # keep_optimizer_state is the folder's: the next
    # fine-tune can carry it on; its steps continue the folder's count
    steps = {float(s["step"]) for s in read_optimizer_state(out).state.values()}
    (before,) = {float(s["step"]) for s in read_optimizer_state(t1_with_optimizer).state.values()}
    assert len(steps) == 1 and steps.pop() > before
    loaded = mirec.load(out)
    assert len(loaded.recommend(user=loaded.info.user_ids[0], n=10)) == 10
    # a run into the folder that keeps no optimizer state leaves none of the old run's
    mirec.train(
        output_dir=out,
        init_from=t1_with_optimizer,
        keep_optimizer_state=False,
        overwrite=True,
        progress=False,
        **interactions(logs[1]),
    )
    assert not (out / OPTIMIZER_FILE).exists()


def test_carrying_the_optimizer_of_a_folder_that_kept_none_is_refused(
    t1_run, logs, tmp_path, mirec_main
):
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match=r"keeps no optimizer state .*keep_optimizer_state=true"):
        mirec.train(
            output_dir=out, init_from=t1_run, init_optimizer="carry", **interactions(logs[1])
        )
    grown = ["--dataset", str(logs[1]), "--format", "interactions", "--columns", "user,item,ts"]
    code, _, err = mirec_main(
        "train", *grown, "--init-from", str(t1_run), "--set", "init_optimizer=carry",
        "--output-dir", str(out), "-q",
    )  # fmt: skip
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "init_optimizer=carry" in err and str(t1_run) in err
    assert not out.exists()


def test_fine_tuning_on_what_is_new_in_a_log_with_nothing_new_is_one_line(t1_run, logs, tmp_path):
    with pytest.raises(ConfigError, match=r"holds no training position that .* lacks"):
        mirec.train(output_dir=tmp_path / "out", init_from=t1_run, **interactions(logs[0]))
