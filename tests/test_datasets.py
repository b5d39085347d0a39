"""Named datasets: the catalogue, locating files, loading, and verified downloads (offline)."""

from __future__ import annotations

import re
import shutil
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import pyarrow.compute as pc
import pytest

from mirec.core import paths
from mirec.data import catalogue, download, locate, readers
from mirec.data.catalogue import DataFile, DatasetSpec
from mirec.data.prepare import prepare
from mirec.errors import ConfigError, DataError

SHARED = (
    "ml-100k",
    "ml-latest-small",
    "ml-1m",
    "amazon-beauty",
    "amazon-toys",
    "lastfm",
    "taobao-sample",
)
NAMES = (*SHARED[:3], "ml-20m", *SHARED[3:], "taobao", "synthetic")


@pytest.fixture(scope="module")
def data(shared_data: Path) -> Path:
    return shared_data


def test_names_and_specs() -> None:
    assert tuple(catalogue.DATASETS) == NAMES
    for spec in catalogue.DATASETS.values():
        assert spec.format in (*readers.FORMATS, "synthetic")
        assert spec.licence and spec.description
        for f in spec.files:
            assert f.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", f.sha256)
        if spec.name not in ("ml-1m", "taobao", "taobao-sample", "synthetic"):
            assert spec.downloadable
    assert not catalogue.get_spec("taobao").downloadable
    assert catalogue.get_spec("ml-20m").archive_sha256 is not None
    assert not catalogue.get_spec("ml-1m").downloadable  # ml-1m.txt is derived, not published
    assert catalogue.get_spec("synthetic").files == ()


def test_checksums_match_the_shared_files(data: Path) -> None:
    readme = (data / "README.md").read_text()
    published = dict(
        (path, sha) for sha, path in re.findall(r"^([0-9a-f]{64})  (\S+)$", readme, re.M)
    )
    checked = 0
    for name in SHARED:
        spec = catalogue.get_spec(name)
        for f in spec.files:
            rel = f"{spec.folder}/{f.path}"
            assert f.sha256 == published[rel], rel
            assert download.sha256_of(data / rel) == f.sha256, rel
            checked += 1
    assert checked == 16  # ml-100k's u.user and ml-1m's users.dat included


def test_data_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(paths.DATA_DIR_VAR, raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    # platformdirs' cache folder: on Linux the one mirec always had
    expected = Path.home() / ".cache" / "mirec" / "data" if sys.platform == "linux" else None
    assert locate.data_dir() == (expected or paths.user_cache_dir() / "data")
    monkeypatch.setenv(paths.DATA_DIR_VAR, str(tmp_path / "env"))
    assert locate.data_dir() == tmp_path / "env"
    assert locate.data_dir(tmp_path / "cli") == tmp_path / "cli"


def test_unknown_dataset_lists_names() -> None:
    with pytest.raises(ConfigError) as exc:
        catalogue.get_spec("ml-2m")
    message = str(exc.value)
    assert "'ml-2m'" in message
    for name in NAMES:
        assert name in message
    with pytest.raises(ConfigError, match="unknown dataset 'nope'"):
        locate.load("nope")


def test_status(data: Path) -> None:
    present = {spec.name: ok for spec, ok in locate.status(data)}
    assert present == {name: name in SHARED or name == "synthetic" for name in NAMES}


def test_locate(data: Path) -> None:
    paths = locate.locate("amazon-beauty", data)
    assert paths == [
        data / "amazon-beauty" / "Beauty.txt",
        data / "amazon-beauty" / "Beauty_item2attributes.json",
    ]
    assert locate.locate("synthetic", data) == []


def test_locate_missing_says_where_and_how(tmp_path: Path) -> None:
    with pytest.raises(DataError) as exc:
        locate.locate("ml-20m", tmp_path)
    message = str(exc.value)
    assert "\n" not in message
    assert str(tmp_path / "ml-20m" / "ratings.csv") in message
    assert "mirec download ml-20m" in message and "ml-20m.zip" in message
    with pytest.raises(DataError) as exc:
        locate.locate("ml-1m", tmp_path)
    message = str(exc.value)
    assert str(tmp_path / "ml-1m" / "ml-1m.txt") in message
    assert "ml-1m.zip" in message and "--format movielens" in message
    with pytest.raises(DataError) as exc:
        locate.locate("taobao", tmp_path)
    message = str(exc.value)
    assert (
        "tianchi.aliyun.com" in message and str(tmp_path / "taobao" / "UserBehavior.csv") in message
    )


def test_load_names_and_paths(data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(paths.DATA_DIR_VAR, str(data))
    expected = {
        "ml-100k": (100_000, 943),
        "ml-latest-small": (100_836, 610),
        "ml-1m": (1_000_209, 6_040),
        "amazon-beauty": (198_502, 22_363),
        "amazon-toys": (167_597, 19_412),
        "lastfm": (52_551, 1_090),
        "taobao-sample": (84_475, 815),
    }
    for name, (rows, users) in expected.items():
        log = locate.load(name)  # data dir from the environment
        assert (log.interactions.num_rows, len(pc.unique(log.interactions["user"]))) == (
            rows,
            users,
        ), name
        assert log.item_categories is not None and log.item_categories.num_rows > 0, name
        assert list(log.sources) == locate.source_files(name), name
    by_path = locate.load(data / "lastfm" / "LastFM.txt", format="sequences")
    assert by_path.interactions.num_rows == 52_551 and by_path.item_categories is not None
    digi = data / "diginetica-sample" / "sample_train-item-views.csv"
    log = locate.load(digi, format="interactions", columns="session_id,item_id,timeframe", sep=";")
    assert log.interactions.num_rows == 12_391
    assert locate.source_files(digi, format="interactions") == [digi]


def test_load_path_without_format(data: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        locate.load(data / "ml-100k")
    for name in readers.FORMATS:
        assert name in str(exc.value)
    with pytest.raises(ConfigError, match="unknown format 'csv'"):
        locate.load(data / "ml-100k", format="csv")
    with pytest.raises(ConfigError, match="apply to a file"):
        locate.load("ml-100k", data, columns="a,b")


def test_synthetic_is_generated_not_loaded(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="generated"):
        locate.load("synthetic", tmp_path)
    with pytest.raises(ConfigError, match="generated"):
        download.download("synthetic", tmp_path)
    assert locate.source_files("synthetic", tmp_path) == []


# --------------------------------------------------------------------------- download


def _spec_for(files: tuple[DataFile, ...], **kw: object) -> DatasetSpec:
    return DatasetSpec(
        name="test-set",
        description="test",
        format="movielens-100k",
        folder="test-set",
        files=files,
        licence="test",
        **kw,
    )


def test_download_without_network(tmp_path: Path) -> None:
    # nothing listens on port 9 of this machine: the connection is refused at once
    spec = _spec_for((DataFile("u.genre", None, url="http://127.0.0.1:9/u.genre"),))
    with pytest.raises(DataError) as exc:
        download.download(spec, tmp_path, progress=False)
    message = str(exc.value)
    assert "cannot download http://127.0.0.1:9/u.genre" in message
    assert str(tmp_path / "test-set" / "u.genre") in message
    assert list((tmp_path / "test-set").iterdir()) == []  # nothing half-written


def test_download_cannot_for_manual_datasets(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"Tianchi login.*taobao/UserBehavior.csv"):
        download.download("taobao", tmp_path)


def test_download_file_verifies_checksum(data: Path, tmp_path: Path) -> None:
    source = tmp_path / "remote" / "u.genre"
    source.parent.mkdir()
    shutil.copy(data / "ml-100k" / "u.genre", source)
    good = catalogue.get_spec("ml-100k").files[2]
    assert good.path == "u.genre"
    spec = _spec_for((DataFile("u.genre", good.sha256, url=source.as_uri()),))
    target = tmp_path / "dl" / "test-set" / "u.genre"
    assert download.download(spec, tmp_path / "dl", progress=False) == [target]
    assert target.read_bytes() == source.read_bytes()
    # present and verified: kept, the (now unreachable) source is not asked again
    source.unlink()
    assert download.download(spec, tmp_path / "dl", progress=False) == [target]

    shutil.copy(data / "ml-100k" / "u.genre", source)
    bad = _spec_for((DataFile("u.genre", "0" * 64, url=source.as_uri()),))
    with pytest.raises(DataError, match=r"SHA256 mismatch \(expected 0{64}, got 9757e0d3"):
        download.download(bad, tmp_path / "bad", progress=False)
    assert list((tmp_path / "bad" / "test-set").iterdir()) == []


def test_download_unverified_file_warns(data: Path, tmp_path: Path) -> None:
    source = tmp_path / "u.genre"
    shutil.copy(data / "ml-100k" / "u.genre", source)
    spec = _spec_for((DataFile("u.genre", None, url=source.as_uri()),))
    with pytest.warns(UserWarning, match="unverified"):
        (path,) = download.download(spec, tmp_path / "dl", progress=False)
    assert path.read_bytes() == source.read_bytes()


def test_download_archive_extracts_and_verifies(data: Path, tmp_path: Path) -> None:
    archive = tmp_path / "ml-100k.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name in ("u.data", "u.item", "u.genre", "u.user"):
            zf.write(data / "ml-100k" / name, f"ml-100k/{name}")
    spec = replace(
        catalogue.get_spec("ml-100k"),
        archive_url=archive.as_uri(),
        archive_sha256=download.sha256_of(archive),
    )
    paths = download.download(spec, tmp_path / "dl", progress=False)
    assert [p.name for p in paths] == ["u.data", "u.item", "u.genre", "u.user"]
    assert sorted(p.name for p in (tmp_path / "dl" / "ml-100k").iterdir()) == [
        "u.data",
        "u.genre",
        "u.item",
        "u.user",
    ]  # the archive itself is gone
    assert locate.load("ml-100k", tmp_path / "dl").interactions.num_rows == 100_000

    wrong = replace(spec, archive_sha256="f" * 64)
    with pytest.raises(DataError, match="SHA256 mismatch"):
        download.download(wrong, tmp_path / "wrong", progress=False)
    assert list((tmp_path / "wrong" / "ml-100k").iterdir()) == []

    # a right archive with a file that does not match its own checksum: nothing is kept
    files = (replace(spec.files[0], sha256="e" * 64), *spec.files[1:])
    with pytest.raises(DataError, match=r"ml-100k/u.data: SHA256 mismatch"):
        download.download(replace(spec, files=files), tmp_path / "part", progress=False)
    assert list((tmp_path / "part" / "ml-100k").iterdir()) == []


def test_ml1m_after_the_protocol_filter(
    data: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MIREC_CACHE_DIR", str(tmp_path))
    prepared = prepare("ml-1m", data_dir=data)
    seqs = prepared.sequences
    # 5-core drops 290 movies (and 598 ratings); every user keeps 5 or more
    assert (seqs.n_users, seqs.n_items, len(seqs.items)) == (6_040, 3_416, 999_611)
    assert prepared.maxlen == 50  # PROTOCOL.md section 7: MovieLens
    assert (len(prepared.split.train), len(prepared.split.test)) == (4_832, 604)
    index = list(seqs.item_ids).index(2858)
    assert seqs.item_titles is not None and seqs.item_titles[index] == "American Beauty (1999)"
    lo, hi = seqs.item_category_offsets[index : index + 2]
    assert list(seqs.category_names[seqs.item_category_codes[lo:hi]]) == ["Comedy", "Drama"]
    assert list(seqs.user_feature_names) == ["age", "gender", "occupation", "zip_region"]
