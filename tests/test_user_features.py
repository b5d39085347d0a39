"""MIND's user-profile features (Li et al., CIKM 2019, section 4.3), from file to tower.

MovieLens's user files -> ``RawLog.user_features`` -> per-user-row codes in ``Sequences``
(and the cache) -> a MIND model that concatenates the profile embeddings to every interest
capsule before its ReLU layers, fed the user rows by the trainer and the evaluator.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from mirec.config import load_config
from mirec.core.contracts import Extracted
from mirec.data import readers
from mirec.data.examples import evaluation_set
from mirec.data.prepare import PreparedData, load_sequences
from mirec.data.readers.movielens import AGE_GROUPS, USER_FEATURES
from mirec.data.sequences import Sequences, UserProfiles, build_sequences, split_users
from mirec.data.synthetic import SyntheticSpec, generate
from mirec.errors import ConfigError, DataError
from mirec.evaluation.evaluator import evaluate
from mirec.models.build import build_model
from mirec.training.sampled_softmax import SampledSoftmax
from mirec.training.trainer import TrainingExamples, fit, train_step

ML100K_CARDINALITIES = (7, 2, 21, 10)  # age groups, genders, occupations, zip regions


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _decoded(seqs: Sequences, row: int) -> dict[str, str | None]:
    assert seqs.user_feature_codes is not None and seqs.user_feature_names is not None
    return {
        str(name): seqs.user_feature_value(str(name), int(seqs.user_feature_codes[row, f]))
        for f, name in enumerate(seqs.user_feature_names)
    }


# --------------------------------------------------------------------------- readers


def test_ml100k_reader_yields_the_profile_table(shared_data: Path) -> None:
    log = readers.read_movielens_100k(shared_data / "ml-100k")
    table = log.user_features
    assert table is not None and table.num_rows == 943
    assert table.column_names == ["user", *USER_FEATURES]
    assert table.schema.field("user").type == log.interactions.schema.field("user").type
    by_user = {row["user"]: row for row in table.to_pylist()}
    # u.user line 1 is "1|24|M|technician|85711"
    assert by_user[1] == {
        "user": 1,
        "age": "18-24",
        "gender": "M",
        "occupation": "technician",
        "zip_region": "8",
    }
    assert by_user[2]["age"] == "50-55"  # "2|53|F|other|94043"
    assert by_user[74]["zip_region"] is None  # "74|39|M|scientist|T8H1N", a Canadian code
    assert set(table.column("age").to_pylist()) == set(AGE_GROUPS)
    assert log.sources[-1].name == "u.user"


def test_ml100k_ages_fall_into_the_ml1m_groups(tmp_path: Path) -> None:
    ages = [0, 17, 18, 24, 25, 34, 35, 44, 45, 49, 50, 55, 56, 90]
    _write(tmp_path / "u.data", "".join(f"{u}\t1\t5\t{u}\n" for u in range(1, len(ages) + 1)))
    _write(
        tmp_path / "u.user",
        "".join(f"{u}|{a}|F|other|0{u}\n" for u, a in enumerate(ages, 1)),
    )
    table = readers.read_movielens_100k(tmp_path).user_features
    assert table is not None
    assert table.column("age").to_pylist() == [
        "Under 18", "Under 18", "18-24", "18-24", "25-34", "25-34", "35-44", "35-44",
        "45-49", "45-49", "50-55", "50-55", "56+", "56+",
    ]  # fmt: skip
    assert set(table.column("zip_region").to_pylist()) == {"0"}


def test_ml1m_users_dat_is_read_where_present(tmp_path: Path) -> None:
    _write(tmp_path / "ratings.dat", "1::1193::5::978300760\n2::661::3::978302109\n")
    without = readers.read_movielens(tmp_path)
    assert without.user_features is None
    _write(tmp_path / "users.dat", "1::F::1::10::48067\n2::M::56::16::70072\n3::M::25::15::N2L3G\n")
    log = readers.read_movielens(tmp_path)
    assert log.user_features is not None
    assert log.user_features.to_pylist() == [
        {"user": 1, "age": "Under 18", "gender": "F", "occupation": "10", "zip_region": "4"},
        {"user": 2, "age": "56+", "gender": "M", "occupation": "16", "zip_region": "7"},
        {"user": 3, "age": "25-34", "gender": "M", "occupation": "15", "zip_region": None},
    ]
    assert [p.name for p in log.sources] == ["ratings.dat", "users.dat"]
    names = [p.name for p in readers.source_files(tmp_path, "movielens")]
    assert names == ["ratings.dat", "users.dat"]  # so the cache key covers it


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("u.user", "1|24|M|technician|85711\n2|x|F|other|1\n", r"u.user: line 2: age .* integer"),
        ("u.user", "1|24|M|technician|85711\n\n3|24|M\n", r"u.user: line 3: expected 5 fields"),
        ("u.user", "1|24|X|technician|85711\n", r"u.user: line 1: gender .* M or F, not 'X'"),
        ("u.user", "1|24|M||85711\n", r"u.user: line 1: occupation .* is empty"),
        ("u.user", "1|-3|M|writer|85711\n", r"u.user: line 1: age .* not be negative"),
        (
            "u.user",
            "1|24|M|writer|85711\n2|24|M|writer|1\n1|30|F|writer|2\n",
            r"u.user: line 3: user 1 is listed again \(first on line 1\)",
        ),
        ("users.dat", "1::F::1::10::48067\n2::M::56\n", r"users.dat: line 2: expected 5 fields"),
        ("users.dat", "1::F::one::10::48067\n", r"users.dat: line 1: age .* integer"),
    ],
)
def test_bad_user_lines_name_their_line(tmp_path: Path, name: str, text: str, message: str):
    if name == "u.user":
        _write(tmp_path / "u.data", "1\t1\t5\t1\n")
        read = readers.read_movielens_100k
    else:
        _write(tmp_path / "ratings.dat", "1::1::5::1\n")
        read = readers.read_movielens
    _write(tmp_path / name, text)
    with pytest.raises(DataError, match=message) as err:
        read(tmp_path)
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------- codes


def _small_log() -> tuple:
    """Users 10, 20, 30, 50, 60 with 5 interactions on items seen 5 times; user 40 has too
    few. Profiles: 20, 50 and 60 have none, 40 (filtered out) holds the only 'z', 30's
    group is unknown."""
    rows = [(u, i) for u in (30, 10, 20, 60, 50) for i in range(1, 6)] + [(40, 1), (40, 2)]
    users, items = zip(*rows, strict=True)
    interactions = pa.table(
        {
            "user": pa.array(users, pa.int64()),
            "item": pa.array(items, pa.int64()),
            "timestamp": pa.array([float(t) for t in range(len(rows))]),
        }
    )
    profiles = pa.table(
        {
            "user": pa.array([40, 30, 10], pa.int64()),
            "group": pa.array(["z", None, "b"]),
            "kind": pa.array(["q", "p", "p"]),
        }
    )
    return interactions, profiles


def test_codes_follow_the_user_rows_after_filtering() -> None:
    from mirec.data.log import RawLog

    interactions, profiles = _small_log()
    seqs = build_sequences(RawLog(interactions, (), user_features=profiles))
    assert seqs.user_ids.tolist() == [10, 20, 30, 50, 60]  # 40 filtered out, rows sorted
    assert seqs.user_feature_names.tolist() == ["group", "kind"]
    assert seqs.user_feature_cardinalities.tolist() == [2, 2]  # {b, z} and {p, q}
    assert seqs.user_feature_codes.tolist() == [[1, 1], [0, 0], [0, 1], [0, 0], [0, 0]]
    assert _decoded(seqs, 0) == {"group": "b", "kind": "p"}
    assert _decoded(seqs, 1) == {"group": None, "kind": None}  # no profile row
    assert _decoded(seqs, 2) == {"group": None, "kind": "p"}  # a null value
    profiles = seqs.user_profiles()
    assert profiles is not None and profiles.cardinalities == (2, 2)
    assert build_sequences(RawLog(interactions, ())).user_profiles() is None


def test_ml100k_codes_match_u_user_and_the_cache_round_trips(
    shared_data: Path, private_cache: Path
) -> None:
    fresh = load_sequences("ml-100k", data_dir=shared_data, use_cache=False)
    cached = load_sequences("ml-100k", data_dir=shared_data)  # written, or read if there
    again = load_sequences("ml-100k", data_dir=shared_data)  # read from the cache
    stored = [
        (p / "user_feature_codes.npy").is_file() for p in (private_cache / "sequences").iterdir()
    ]
    assert any(stored)
    for seqs in (cached, again):
        for field in (
            "user_feature_codes",
            "user_feature_names",
            "user_feature_cardinalities",
            "user_feature_values",
        ):
            np.testing.assert_array_equal(getattr(seqs, field), getattr(fresh, field))
    assert fresh.user_feature_codes.shape == (943, 4)
    assert fresh.user_feature_cardinalities.tolist() == list(ML100K_CARDINALITIES)
    raw = readers.read_movielens_100k(shared_data / "ml-100k").user_features
    by_user = {row.pop("user"): row for row in raw.to_pylist()}
    for row, user in enumerate(again.user_ids.tolist()):
        assert _decoded(again, row) == by_user[user]
    assert _decoded(again, 0) == {
        "age": "18-24",
        "gender": "M",
        "occupation": "technician",
        "zip_region": "8",
    }


# --------------------------------------------------------------------------- model


def _ml100k_profiles(n_users: int = 943, seed: int = 0) -> UserProfiles:
    rng = np.random.default_rng(seed)
    codes = np.stack([rng.integers(0, c + 1, n_users) for c in ML100K_CARDINALITIES], axis=1)
    return UserProfiles(codes, USER_FEATURES, ML100K_CARDINALITIES)


def _mind(user_features: bool, profiles: UserProfiles | None = None):
    config = load_config("mind", dataset="ml-100k", fixed={"user_features": user_features})
    torch.manual_seed(0)
    return build_model(config, 1682, 50, profiles)


def _histories(batch: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    histories = torch.randint(1, 1683, (batch, 50), generator=g)
    histories[: batch // 2, :30] = 0  # some short, left-padded histories
    return histories


def test_mind_with_user_features_trains_and_profiles_change_the_interests() -> None:
    model = _mind(True, _ml100k_profiles())
    assert model.uses_user_rows
    d = model.item_embedding.weight.shape[1]
    width = 4 * (d // 4)
    assert model.extractor.tower[0].in_features == d + width  # the tower's input grew
    assert [t.weight.shape for t in model.user_feature_embeddings] == [
        (c + 1, d // 4) for c in ML100K_CARDINALITIES
    ]
    before = [t.weight.detach().clone() for t in model.user_feature_embeddings]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    objective = SampledSoftmax(1682, 256)
    g = torch.Generator().manual_seed(0)
    losses = []
    for step in range(5):
        histories = _histories(32, seed=step)
        targets = torch.randint(1, 1683, (32,), generator=g)
        users = torch.randint(0, 943, (32,), generator=g)
        losses.append(train_step(model, optimizer, histories, targets, objective, g, users).item())
    assert all(math.isfinite(loss) for loss in losses)
    assert all(
        not torch.equal(a, t.weight)
        for a, t in zip(before, model.user_feature_embeddings, strict=True)
    )  # the gradient reaches every feature's table

    model.eval()
    history = _histories(2)[1:].expand(2, -1)  # one history, two users
    profiles = model.user_feature_codes
    a, b = 0, int((profiles != profiles[0]).any(1).nonzero()[0])  # a different profile
    out = model.extract(history, torch.tensor([a, b]))
    assert not torch.allclose(out.interests[0], out.interests[1])
    same = model.extract(history, torch.tensor([a, a]))
    torch.testing.assert_close(same.interests[0], same.interests[1])
    with pytest.raises(ValueError, match="pass the user rows"):
        model.extract(history)


def test_feature_off_builds_the_same_mind_as_before() -> None:
    plain = _mind(False)
    given = _mind(False, _ml100k_profiles())  # profiles present but not asked for
    assert not plain.uses_user_rows and not given.uses_user_rows
    keys = [
        "item_embedding.weight",
        "extractor.eval_logits",
        "extractor.bilinear.weight",
        "extractor.tower.0.weight",
        "extractor.tower.0.bias",
        "extractor.tower.2.weight",
        "extractor.tower.2.bias",
    ]
    assert sorted(plain.state_dict()) == sorted(keys)
    for key, value in plain.state_dict().items():
        assert torch.equal(value, given.state_dict()[key])  # same draws, same order
    on = _mind(True, _ml100k_profiles())
    # the code table is data, not a weight: checkpoints only gain the feature tables
    assert sorted(on.state_dict()) == sorted(
        keys + [f"user_feature_embeddings.{f}.weight" for f in range(4)]
    )


def test_user_features_errors() -> None:
    with pytest.raises(ConfigError, match="dataset 'ml-100k' has no user features"):
        _mind(True, None)
    config = load_config("mind", dataset="amazon-beauty", overrides=["user_features=true"])
    with pytest.raises(ConfigError, match="dataset 'amazon-beauty' has no user features"):
        build_model(config, 100, 20)
    for model in ("comirec-sa", "comirec-dr", "most-popular"):
        config = load_config(model, overrides=["user_features=true"])
        with pytest.raises(ConfigError, match="needs extractor=dynamic_routing"):
            build_model(config, 100, 20, _ml100k_profiles())


# --------------------------------------------------------------------------- trainer, evaluator


def _profiled_data() -> PreparedData:
    """A small synthetic log with a profile for most users (the last ten have none)."""
    log, _ = generate(SyntheticSpec(n_users=300, n_items=120, n_clusters=6))
    users = np.arange(1, 291)
    profiles = pa.table({"user": pa.array(users), "band": pa.array([str(u % 3) for u in users])})
    seqs = build_sequences(replace(log, user_features=profiles))
    split = split_users(seqs.n_users, 42)
    maxlen = 20
    return PreparedData(
        "synthetic-profiled",
        seqs,
        split,
        maxlen,
        evaluation_set(seqs, split.valid, maxlen),
        evaluation_set(seqs, split.test, maxlen),
    )


def test_training_examples_carry_their_user_rows() -> None:
    data = _profiled_data()
    examples = TrainingExamples.of(data, torch.device("cpu"))
    index = torch.arange(len(examples))
    users = examples.users_of(index)
    assert set(users.tolist()) <= set(data.split.train.tolist())
    offsets = torch.from_numpy(data.sequences.offsets)
    assert torch.equal(examples.starts, offsets[users])  # each example within its user


def test_fit_and_evaluate_pass_the_user_rows(tmp_path: Path) -> None:
    data = _profiled_data()
    config = load_config("mind", overrides=["user_features=true", "max_epochs=1"])
    torch.manual_seed(0)
    model = build_model(config, data.sequences.n_items, data.maxlen, data.sequences.user_profiles())
    result = fit(model, data, config, tmp_path, progress=False)
    assert result.epochs == 1 and math.isfinite(result.history[0]["loss"])
    assert 0.0 <= evaluate(model, data.test).metrics["recall@50"] <= 1.0

    class Recording:
        """A retriever that asks for the user rows and records them."""

        num_interests, uses_user_rows = 1, True
        scorer, training = None, False

        def __init__(self) -> None:
            self.seen: list[torch.Tensor] = []

        def extract(self, histories: torch.Tensor, users: torch.Tensor | None = None):
            assert users is not None
            self.seen.append(users)
            return Extracted(torch.ones(len(histories), 1, 1))

        def item_vectors(self) -> torch.Tensor:
            return torch.arange(data.sequences.n_items, 0, -1.0).unsqueeze(1)

        def retrieval_interests(self, extracted: Extracted) -> Extracted:
            return extracted

        def score(self, extracted: Extracted, items: torch.Tensor) -> torch.Tensor:
            return extracted.interests[:, 0] @ items.T

    recording = Recording()
    evaluate(recording, data.valid)
    assert torch.cat(recording.seen).tolist() == data.valid.users.tolist()
