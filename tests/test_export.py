"""``mirec export``: the ONNX user tower of every published retrieval config agrees with
PyTorch on real ml-100k histories, the Parquet files hold what :class:`Recommender` serves,
and what cannot be exported says so in one line.

Training every config would take minutes, so the parity tests build each model as
``mirec train`` does (``build_model`` after seeding with the config's seed, on the prepared
ml-100k data) and save its initial weights as a model folder; the end-to-end test exports
the trained ``ml100k_run`` folder through the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from mirec.cli.main import app
from mirec.config import load_config, model_names
from mirec.core.config import Config
from mirec.data.examples import gather_histories, training_item_counts
from mirec.data.prepare import PreparedData, prepare
from mirec.errors import MirecError
from mirec.models.build import build_ctr_model, build_model
from mirec.models.folder import (
    WEIGHTS_FILE,
    load_model,
    save_weights,
    write_folder_data,
)
from mirec.recommender import Recommender
from mirec.serving import export
from mirec.serving.export import export_folder, with_active

NOT_EXPORTABLE = {
    "din": "it is a ctr model (task: ctr)",
    "dmin": "it is a ctr model (task: ctr)",
    "most-popular": "the popularity baseline has no user tower",
    "distinct-interests": "aggregator 'mixture' scores with each interest's log-partition",
}
"""Published configs with no user tower, and what the refusal says."""
VARIANTS = [
    ("mind", {"user_features": True}),  # a profile input beside the history
    ("comirec-sa", {"adaptive_k": "mass:0.3"}),  # per-user active interests
    ("mind", {"adaptive_k": "merge:0.5"}),  # merged interest vectors, dynamic K
]
"""Settings of published configs that change what the tower computes or takes."""
CASES = [(name, {}) for name in model_names() if name not in NOT_EXPORTABLE] + VARIANTS
BATCHES = (1, 7, 112)
"""Batch sizes the test runs the ONNX file at (it was traced at export.TRACE_BATCH)."""
WORST: dict[str, float] = {}
"""Worst |onnxruntime - PyTorch| per case, printed at the end (pytest -s)."""


@pytest.fixture(scope="module")
def ml100k(shared_data: Path) -> PreparedData:
    return prepare("ml-100k", data_dir=shared_data)


@pytest.fixture(scope="module", autouse=True)
def report_worst():
    yield
    for case, diff in WORST.items():
        print(f"\nONNX parity {case}: worst |onnxruntime - pytorch| = {diff:.2e}")


def model_folder(config: Config, data: PreparedData, folder: Path) -> Path:
    """A model folder of ``config`` with the initial weights ``mirec train`` starts from."""
    seqs = data.sequences
    counts = training_item_counts(seqs, data.split.train)
    write_folder_data(folder, config, seqs, counts, data.maxlen)
    torch.manual_seed(config.seed)
    if config.task == "ctr":
        model = build_ctr_model(config, seqs, data.maxlen)
    else:
        model = build_model(config, seqs.n_items, data.maxlen, seqs.user_profiles())
    save_weights(model, folder / WEIGHTS_FILE)
    return folder


def real_histories(data: PreparedData) -> tuple[torch.Tensor, torch.Tensor]:
    """Histories of 40 random users, each as their most recent item alone (length 1), a
    short prefix (2 to 9 items) and their stored history (full-length: ml-100k users have at
    least 20 items, most over maxlen); and the user rows."""
    seqs = data.sequences
    rng = np.random.default_rng(7)
    users = rng.choice(seqs.n_users, 40, replace=False)
    starts, ends = seqs.offsets[users], seqs.offsets[users + 1]
    cut_starts = np.concatenate([ends - 1, starts, starts])
    cut_ends = np.concatenate([ends, starts + rng.integers(2, 10, len(users)), ends])
    histories = gather_histories(
        torch.from_numpy(seqs.items),
        torch.from_numpy(cut_starts),
        torch.from_numpy(cut_ends),
        data.maxlen,
    )
    return histories, torch.from_numpy(np.tile(users, 3))


@pytest.mark.parametrize(
    ("name", "settings"),
    CASES,
    ids=[name + "".join(f"[{k}={v}]" for k, v in s.items()) for name, s in CASES],
)
def test_onnx_user_tower_matches_pytorch(name, settings, ml100k, tmp_path):
    config = load_config(name, dataset="ml-100k", fixed=settings)
    folder = model_folder(config, ml100k, tmp_path / "model")
    result = export_folder(folder, tmp_path / "export")
    assert 0 <= result.max_abs_diff <= export.TOLERANCE

    model = load_model(folder, device=torch.device("cpu")).model
    session = ort.InferenceSession(str(tmp_path / "export" / export.TOWER_FILE))
    histories, users = real_histories(ml100k)
    lengths = (histories > 0).sum(1)
    assert lengths.min() == 1 and lengths.max() == ml100k.maxlen and 1 < lengths.median() < 10
    codes = ml100k.sequences.user_feature_codes
    worst, lo = 0.0, 0
    for size in BATCHES:
        rows = slice(lo, lo + size)
        lo += size
        feeds = {"history": histories[rows].numpy()}
        if config.user_features:
            feeds["profile"] = codes[users[rows].numpy()]
        got_interests, got_active = session.run(["interests", "active"], feeds)
        with torch.no_grad():
            interests, active = with_active(model(histories[rows], users[rows]))
        assert got_interests.shape == tuple(interests.shape) and got_interests.dtype == np.float32
        np.testing.assert_array_equal(got_active, active.numpy())
        worst = max(worst, float(np.abs(got_interests - interests.numpy()).max()))
    assert lo == len(histories)
    assert worst <= export.TOLERANCE
    manifest = result.manifest
    assert manifest["num_interests"] == interests.shape[1] and manifest["maxlen"] == 50
    inputs = ["history", "profile"] if config.user_features else ["history"]
    assert [spec["name"] for spec in manifest["inputs"]] == inputs
    assert (manifest["user_features"] is not None) == config.user_features
    per_user = model.extract(histories[:1], users[:1]).active is not None
    if per_user and model.fuse is None:
        assert not got_active.all()  # some interest was switched off, and ONNX agreed
    WORST[f"{name} {settings or ''}".strip()] = worst

    # user_interests.parquet: every user's active interests, from their stored history
    seqs = ml100k.sequences
    stored = gather_histories(
        torch.from_numpy(seqs.items),
        torch.from_numpy(seqs.offsets[:-1]),
        torch.from_numpy(seqs.offsets[1:]),
        ml100k.maxlen,
    )
    with torch.no_grad():
        interests, active = with_active(model(stored, torch.arange(seqs.n_users)))
    row, slot = active.nonzero(as_tuple=True)
    table = pq.read_table(tmp_path / "export" / export.USER_INTERESTS_FILE)
    assert table.column("user").to_pylist() == seqs.user_ids[row.numpy()].tolist()
    assert table.column("interest").to_pylist() == slot.tolist()
    vectors = np.stack(table.column("vector").to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(vectors, interests[row, slot].numpy(), atol=1e-5)
    if settings.get("adaptive_k"):
        assert table.num_rows < interests.shape[1] * seqs.n_users  # inactive ones left out


def test_export_command_writes_what_the_recommender_serves(ml100k_run, tmp_path):
    out = tmp_path / "export"
    args = ["export", "--checkpoint", str(ml100k_run), "--out", str(out)]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "onnx check: max |onnxruntime - pytorch| = " in result.output
    rec = Recommender.load(ml100k_run, device="cpu")
    dim = rec.item_embeddings().shape[1]
    info = rec.info

    items = pq.read_table(out / "items.parquet")
    assert items.schema.field("item").type == pa.int64()
    assert items.schema.field("vector").type == pa.list_(pa.float32(), dim)
    assert items.column("item").to_pylist() == list(info.item_ids)
    vectors = np.stack(items.column("vector").to_numpy(zero_copy_only=False))
    np.testing.assert_array_equal(vectors, rec.item_embeddings())

    interests = pq.read_table(out / "user_interests.parquet")
    assert interests.num_rows == info.num_interests * len(info.user_ids)  # no per-user K here
    assert pc.unique(interests.column("user")).to_pylist() == list(info.user_ids)
    manifest = json.loads((out / "export.json").read_text())
    session = ort.InferenceSession(str(out / manifest["files"]["user_tower"]))
    row_of = {item: row for row, item in enumerate(items.column("item").to_pylist())}
    for user in info.user_ids[::200]:
        history = rec.history_of(user)
        mine = interests.filter(pc.equal(interests.column("user"), user))
        assert mine.column("interest").to_pylist() == list(range(info.num_interests))
        stored = np.stack(mine.column("vector").to_numpy(zero_copy_only=False))
        np.testing.assert_allclose(stored, rec.interests(history), atol=1e-6)
        # serving from the export alone, by export.json's conventions: the most recent
        # maxlen items as row + 1, left-padded; score = max over interests; the same list
        recent = [row_of[item] + 1 for item in history][-manifest["maxlen"] :]
        padded = np.zeros((1, manifest["maxlen"]), dtype=np.int64)
        padded[0, -len(recent) :] = recent
        tower, active = session.run(["interests", "active"], {"history": padded})
        assert active.all()
        scores = (tower[0] @ vectors.T).max(0)
        top = [items.column("item")[int(i)].as_py() for i in np.argsort(-scores)[:10]]
        assert top == [r.item for r in rec.recommend(user=user, n=10)]
    assert manifest["model"] == "comirec-sa" and manifest["dataset"] == "ml-100k"
    assert manifest["inputs"] == [{"name": "history", "dtype": "int64", "shape": ["batch", 50]}]
    assert [o["name"] for o in manifest["outputs"]] == ["interests", "active"]
    assert manifest["outputs"][0]["shape"] == ["batch", info.num_interests, dim]
    assert manifest["check"]["max_abs_diff"] <= 1e-4
    assert manifest["files"] == {
        "items": "items.parquet",
        "user_interests": "user_interests.parquet",
        "user_tower": "user_tower.onnx",
    }
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*manifest["files"].values(), "export.json"]
    )


@pytest.mark.parametrize("name", sorted(NOT_EXPORTABLE))
def test_a_model_without_user_tower_is_refused(name, ml100k, tmp_path, mirec_main):
    folder = model_folder(load_config(name, dataset="ml-100k"), ml100k, tmp_path / "model")
    out = tmp_path / "export"
    code, _, err = mirec_main("export", "--checkpoint", str(folder),
                            "--out", str(out))  # fmt: skip
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"mirec: error: cannot export {name}: {NOT_EXPORTABLE[name]}")
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_the_cluster_rule_is_refused_by_name(ml100k, tmp_path, mirec_main):
    config = load_config("comirec-sa", dataset="ml-100k", fixed={"adaptive_k": "cluster:0.25"})
    folder = model_folder(config, ml100k, tmp_path / "model")
    code, _, err = mirec_main("export", "--checkpoint", str(folder), "--out", str(tmp_path / "x"))
    assert code == 2 and err.count("\n") == 1, err
    assert "with adaptive_k=cluster:0.25: the cluster rule runs k-means per user" in err


def test_an_existing_folder_is_kept_unless_overwrite(ml100k, tmp_path, monkeypatch, mirec_main):
    config = load_config("youtube-dnn", dataset="ml-100k")
    folder = model_folder(config, ml100k, tmp_path / "model")
    out = tmp_path / "export"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    args = ("export", "--checkpoint", str(folder), "--out", str(out))
    code, _, err = mirec_main(*args)
    assert code == 2 and err.strip().splitlines() == [
        f"mirec: error: {out}: already exists and is not empty; pass --overwrite "
        "(overwrite=True) to replace it"
    ]
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    with pytest.raises(MirecError, match="holds the model folder"):
        export_folder(folder, folder, overwrite=True)  # never over the model itself
    # --overwrite replaces an earlier export only, never a folder of other files
    code, _, err = mirec_main(*args, "--overwrite")
    assert code == 2 and "holds files that are not a mirec export (mine.txt)" in err
    assert [p.name for p in out.iterdir()] == ["mine.txt"]

    first = ("export", "--checkpoint", str(folder), "--out", str(tmp_path / "first"))
    code, printed, _ = mirec_main(*first)
    assert code == 0, printed
    (out / "mine.txt").unlink()
    out.rmdir()
    (tmp_path / "first").rename(out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    # a check that fails leaves the old folder as it was, and no staging folder behind
    monkeypatch.setattr(export, "TOLERANCE", -1.0)  # a tolerance no difference meets
    with pytest.raises(MirecError, match="youtube-dnn: onnxruntime's interests differ"):
        export_folder(folder, out, overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "model"]
    monkeypatch.undo()

    code, printed, _ = mirec_main(*args, "--overwrite")
    assert code == 0, printed
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["export.json", "items.parquet", "user_interests.parquet", "user_tower.onnx"]
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "model"]
