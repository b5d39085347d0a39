"""Named datasets: what files they need, where they live, where to get them, how to read them.

A dataset named ``NAME`` lives in ``<data_dir>/<folder>/``, where the data directory is
``--data-dir``, else ``$MIREC_DATA_DIR``, else ``data`` in the platform's cache folder
(``~/.cache/mirec/data`` on Linux; :mod:`mirec.core.paths`). ``mirec download
NAME`` fetches it when it has a public URL, and checks each file against its published
SHA-256 before anything is put in place.
"""

from __future__ import annotations

import hashlib
import http.client
import urllib.error
import urllib.request
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from mirec.atomic import durable_replace, temp_beside
from mirec.core.paths import default_data_dir
from mirec.data import readers
from mirec.data.log import RawLog
from mirec.data.readers._files import _os_errors
from mirec.errors import ConfigError, DataError

_GROUPLENS = "https://files.grouplens.org/datasets/movielens/"
_S3REC = "https://raw.githubusercontent.com/RUCAIBox/CIKM2020-S3Rec/master/data/"
_TIANCHI = "https://tianchi.aliyun.com/dataset/649"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class DataFile:
    """One file a dataset's reader needs."""

    path: str
    """Relative to ``<data_dir>/<folder>``."""
    sha256: str | None = None
    """Of the file itself; None where no checksum is published."""
    url: str | None = None
    """A direct download of this file; None when it comes from the dataset's archive."""
    member: str | None = None
    """Its path inside the dataset's archive."""


@dataclass(frozen=True)
class DatasetSpec:
    """A named dataset: its format, files, download source and licence."""

    name: str
    description: str
    format: str
    """A reader format (:data:`mirec.data.readers.FORMATS`), or ``synthetic``."""
    folder: str
    files: tuple[DataFile, ...] = ()
    archive_url: str | None = None
    """A zip holding the files (their ``member`` paths)."""
    archive_sha256: str | None = None
    archive_md5: str | None = None
    """Used only when no SHA-256 of the archive is known."""
    manual: str | None = None
    """How to get the files by hand when there is no direct download; ``{path}`` is the
    file's destination."""
    licence: str = ""
    has_categories: bool = False

    @property
    def downloadable(self) -> bool:
        return self.archive_url is not None or (
            bool(self.files) and all(f.url is not None for f in self.files)
        )

    @property
    def generated(self) -> bool:
        return self.format == "synthetic"


_MOVIELENS_LICENCE = (
    "GroupLens research licence: research use, no redistribution; cite F. M. Harper "
    "and J. A. Konstan, The MovieLens Datasets: History and Context, ACM TiiS 5(4), 2015"
)


def _movielens(
    name: str, description: str, files: Sequence[tuple[str, str | None]], **archive: str | None
) -> DatasetSpec:
    fmt = "movielens-100k" if name == "ml-100k" else "movielens"
    return DatasetSpec(
        name=name,
        description=description,
        format=fmt,
        folder=name,
        files=tuple(DataFile(path, sha, member=f"{name}/{path}") for path, sha in files),
        archive_url=f"{_GROUPLENS}{name}.zip",
        licence=_MOVIELENS_LICENCE,
        has_categories=True,
        **archive,
    )


def _s3rec(
    name: str, description: str, stem: str, txt_sha: str, json_sha: str, licence: str
) -> DatasetSpec:
    files = (
        DataFile(f"{stem}.txt", txt_sha, url=f"{_S3REC}{stem}.txt"),
        DataFile(
            f"{stem}_item2attributes.json", json_sha, url=f"{_S3REC}{stem}_item2attributes.json"
        ),
    )
    s3rec = (
        "; as processed by S3-Rec (K. Zhou et al., S3-Rec: Self-Supervised Learning for "
        "Sequential Recommendation with Mutual Information Maximization, CIKM 2020)"
    )
    return DatasetSpec(
        name=name,
        description=description,
        format="sequences",
        folder=name,
        files=files,
        licence=licence + s3rec,
        has_categories=True,
    )


_AMAZON_LICENCE = (
    "Amazon review data (J. McAuley et al.), research use only; cite R. He and J. McAuley, "
    "Ups and Downs, WWW 2016, and J. McAuley et al., Image-based Recommendations on Styles "
    "and Substitutes, SIGIR 2015"
)
_TAOBAO_LICENCE = (
    "Alibaba Tianchi dataset 649 (User Behavior Data from Taobao), research use under "
    "Tianchi's terms, no redistribution; cite H. Zhu et al., Learning Tree-based Deep Model "
    "for Recommender Systems, KDD 2018"
)

_SPECS = (
    _movielens(
        "ml-100k",
        "MovieLens 100K: 100,000 ratings, 943 users, 1,682 movies, 19 genres",
        [
            ("u.data", "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490"),
            ("u.item", "553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701"),
            ("u.genre", "9757e0d3e6b298159a80dd48eaf938114690e911e39af97a76949ef1663610bb"),
            ("u.user", "f120e114da2e8cf314fd28f99417c94ae9ddf1cb6db8ce0e4b5995d40e90e62c"),
        ],
        archive_sha256="50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
        archive_md5="0e33842e24a9c977be4e0107933c0723",
    ),
    _movielens(
        "ml-latest-small",
        "MovieLens latest-small (2018): 100,836 ratings, 610 users, 9,724 movies, 20 genres",
        [
            ("ratings.csv", "aa289ca83157595d0df6aea1be6a4ded676ddc4385472e8313a8ed9805352646"),
            ("movies.csv", "5a5f32dd9bb3797b8e728a1b98958789d2b13f294a69fdfbc5727f8a9611aa07"),
        ],
        archive_sha256="696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436",
    ),
    DatasetSpec(
        name="ml-1m",
        description="MovieLens 1M: 1,000,209 ratings, 6,040 users, 3,706 movies, 18 genres",
        format="movielens-sequences",
        folder="ml-1m",
        files=(
            DataFile(
                "ml-1m.txt", "41a314c194a8e7e282088f90f8e6b70fc075d63ce72f969745bc8945155c11e8"
            ),
            DataFile(
                "movies.dat", "0140fc2356357c1a851d0f52e893a1e4d3696df632c4141cea8d5bc3d621f0b9"
            ),
            DataFile(
                "users.dat", "1dc3a95300cb19f7c10e027daf29b8cdf1d908dab65b5edfb45950aa389a10a3"
            ),
        ),
        manual=(
            f"ml-1m.txt holds every rating of ratings.dat in {_GROUPLENS}ml-1m.zip as 'user "
            "item' lines, users ascending, each user's movies oldest first: put it at {path} "
            "beside that archive's movies.dat and users.dat, or read the unzipped archive's "
            "folder with --format movielens"
        ),
        licence=_MOVIELENS_LICENCE,
        has_categories=True,
    ),
    _movielens(
        "ml-20m",
        "MovieLens 20M: 20,000,263 ratings, 138,493 users, 26,744 movies, genres",
        [("ratings.csv", None), ("movies.csv", None)],
        archive_sha256="96f243c338a8665f6bcc89c53edf6ee39162a846940de6b7c8c48aeada765ff3",
        archive_md5="cd245b17a1ae2cc31bb14903e1204af3",
    ),
    _s3rec(
        "amazon-beauty",
        "Amazon Beauty 5-core sequences: 198,502 interactions, 22,363 users, 12,101 items",
        "Beauty",
        "226cce9c3105299ca0db9615d7d3fb32b3175e90da43100ae352599f0f0107b8",
        "129e40f67486f6877eff0f5318cfa8530ee8ac23d8b0d1de04e1bb7a2ba0b2d4",
        _AMAZON_LICENCE,
    ),
    _s3rec(
        "amazon-toys",
        "Amazon Toys and Games 5-core sequences: 167,597 interactions, 19,412 users, 11,924 items",
        "Toys_and_Games",
        "176c680c688d497598c4a89a03b402c0fe78d795e5db335c2e78dd5f2d778a3f",
        "d371acd25101eedac04afc727626464b7acec770c4eda708705d51eb76eb1ad0",
        _AMAZON_LICENCE,
    ),
    _s3rec(
        "lastfm",
        "LastFM (HetRec 2011) artist sequences: 52,551 interactions, 1,090 users, 3,646 artists",
        "LastFM",
        "9ded486adb5b0fe9dc761950afa0a9a05e93ff018992e0c52bf11afec529f802",
        "a4ccd678dc9ff6d43fe5073f491db5c9b02eb98dfa4f8c0382913a784be217ef",
        "HetRec 2011 Last.fm data (GroupLens, Last.fm), non-commercial research use; cite "
        "I. Cantador et al., HetRec 2011",
    ),
    DatasetSpec(
        name="taobao-sample",
        description="The first 84,475 rows of the Taobao UserBehavior log: 815 users",
        format="taobao",
        folder="taobao-sample",
        files=(
            DataFile(
                "UserBehavior.csv",
                "e3013a3a225cf384b66dbbd7557f50829f28bd0de2555e31604eef6891ffa0c7",
            ),
        ),
        manual=(
            "it is cut from the full Taobao log, which needs a Tianchi login: download "
            f"UserBehavior.csv.zip from {_TIANCHI}, unzip it, and write its first 84,475 "
            "lines to {path} (head -n 84475 UserBehavior.csv)"
        ),
        licence=_TAOBAO_LICENCE,
        has_categories=True,
    ),
    DatasetSpec(
        name="taobao",
        description="Taobao UserBehavior (Alibaba): about 100M pv/cart/fav/buy events by 987,994 "
        "users",
        format="taobao",
        folder="taobao",
        files=(DataFile("UserBehavior.csv"),),
        manual=(
            "it needs a Tianchi login: get UserBehavior.csv.zip "
            f"from {_TIANCHI}, unzip it, and put UserBehavior.csv at {{path}}"
        ),
        licence=_TAOBAO_LICENCE,
        has_categories=True,
    ),
    DatasetSpec(
        name="synthetic",
        description=(
            "Generated log with planted interests (item clusters as categories), "
            "deterministic by seed: 'synthetic' or 'synthetic:n_users=...,seed=...'"
        ),
        format="synthetic",
        folder="synthetic",
        licence="generated by mirec; no restrictions",
        has_categories=True,
    ),
)

REGISTRY: dict[str, DatasetSpec] = {spec.name: spec for spec in _SPECS}
"""Every named dataset, by name."""


# --------------------------------------------------------------------------- lookup


def data_dir(explicit: str | Path | None = None) -> Path:
    """The data directory: ``explicit`` (``--data-dir``) > ``$MIREC_DATA_DIR`` > default."""
    return _resolve(explicit)


def _resolve(explicit: str | Path | None) -> Path:
    if explicit is not None and str(explicit):
        return Path(explicit).expanduser()
    return default_data_dir()


def get_spec(name: str) -> DatasetSpec:
    """The spec of a named dataset; ``ConfigError`` listing the known names otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"unknown dataset {name!r}; known datasets: {', '.join(REGISTRY)} "
            "(or give a file or folder path together with a format)"
        ) from None


def _how_to_get(spec: DatasetSpec, path: Path, file: DataFile) -> str:
    if spec.downloadable:
        source = spec.archive_url or file.url
        return f"run 'mirec download {spec.name}' (fetches {source}) or put the file there"
    assert spec.manual is not None
    return spec.manual.format(path=path)


def _readable_folder(folder: Path, what: str) -> None:
    """A folder that is there must be a folder mirec can list; a missing one is fine here
    (the files it should hold are reported missing, with how to get them)."""
    try:
        if not folder.exists():
            return
        if not folder.is_dir():
            raise DataError(f"{folder}: is a file, expected the {what} (a folder)")
        next(folder.iterdir(), None)
    except OSError as err:
        raise DataError(f"{folder}: {what} cannot be read ({err.strerror or err})") from err


@_os_errors
def locate(name: str, data_dir: str | Path | None = None) -> list[Path]:
    """Paths of the files dataset ``name`` needs; ``DataError`` naming the first missing one,
    where it goes and how to get it."""
    spec = get_spec(name)
    _readable_folder(_resolve(data_dir), "data directory")
    base = _resolve(data_dir) / spec.folder
    _readable_folder(base, f"folder of dataset {name!r}")
    paths = []
    for file in spec.files:
        path = base / file.path
        if not path.is_file():
            raise DataError(
                f"{path}: missing file of dataset {name!r}; {_how_to_get(spec, path, file)}"
            )
        paths.append(path)
    return paths


def _reader_path(spec: DatasetSpec, paths: list[Path]) -> Path:
    # the MovieLens rating-file readers take the folder; the others take their main file
    return paths[0].parent if spec.format in ("movielens", "movielens-100k") else paths[0]


def _generated(spec: DatasetSpec) -> ConfigError:
    return ConfigError(
        f"dataset {spec.name!r} is generated, not read from files: use "
        "mirec.data.synthetic.generate (the CLI does this for 'synthetic[:options]')"
    )


@_os_errors
def load(
    name_or_path: str | Path,
    data_dir: str | Path | None = None,
    format: str | None = None,
    columns: str | Sequence[str] | None = None,
    sep: str | None = None,
    id_type: str | None = None,
) -> RawLog:
    """Read a registry dataset by name, or a file/folder path in ``format``; ``id_type``
    (None, ``int`` or ``str``) says how ids are read (:mod:`mirec.data.readers`)."""
    if format is not None:
        return readers.read_log(name_or_path, format, columns=columns, sep=sep, id_type=id_type)
    spec = _named_spec(name_or_path, columns, sep)
    if spec.generated:
        raise _generated(spec)
    paths = locate(spec.name, data_dir)
    if spec.format == "sequences":
        attributes = paths[1] if len(paths) > 1 else None
        return readers.read_sequences(paths[0], attributes, id_type=id_type)
    return readers.read_log(_reader_path(spec, paths), spec.format, id_type=id_type)


@_os_errors
def source_files(
    name_or_path: str | Path,
    data_dir: str | Path | None = None,
    format: str | None = None,
) -> list[Path]:
    """The files :func:`load` would read for the same arguments (empty for generated data)."""
    if format is not None:
        return readers.source_files(name_or_path, format)
    spec = _named_spec(name_or_path, None, None)
    return [] if spec.generated else locate(spec.name, data_dir)


def _named_spec(
    name_or_path: str | Path, columns: str | Sequence[str] | None, sep: str | None
) -> DatasetSpec:
    name = str(name_or_path)
    if name not in REGISTRY and _exists(Path(name)):
        raise ConfigError(
            f"{name}: a file or folder needs a format, one of: {', '.join(readers.FORMATS)}"
        )
    spec = get_spec(name)
    if columns is not None or sep is not None:
        raise ConfigError(
            f"columns and sep apply to a file read with format 'interactions', not to the "
            f"named dataset {name!r}"
        )
    return spec


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:
        return False  # a path that cannot even be looked at is not a path the user gave


@_os_errors
def status(data_dir: str | Path | None = None) -> list[tuple[DatasetSpec, bool]]:
    """Every named dataset and whether all its files are present locally (generated: True);
    a data directory, or a dataset's folder, that cannot be read is a DataError."""
    base = _resolve(data_dir)
    _readable_folder(base, "data directory")
    for spec in REGISTRY.values():
        _readable_folder(base / spec.folder, f"folder of dataset {spec.name!r}")
    return [
        (spec, all((base / spec.folder / f.path).is_file() for f in spec.files))
        for spec in REGISTRY.values()
    ]


# --------------------------------------------------------------------------- download


@_os_errors
def file_stamp(path: Path) -> tuple[str, int, int]:
    """``path``'s resolved path, size in bytes and modification time in nanoseconds: what
    tells, without reading it, that a file may have changed (the quick check of make and
    rsync; a rewrite that keeps the size and restores the time is not seen)."""
    resolved = path.resolve()
    info = resolved.stat()
    return str(resolved), info.st_size, info.st_mtime_ns


@_os_errors
def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    return _digest(path, "sha256")


def _digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def download(
    name: str | DatasetSpec, data_dir: str | Path | None = None, *, progress: bool = True
) -> list[Path]:
    """Fetch a dataset's files into ``<data_dir>/<folder>`` and verify them; their paths.

    Files already there whose checksum matches are kept. Each download goes to a temporary
    file beside its destination and is renamed into place only once verified, so a failed or
    interrupted download leaves nothing half-written. A file with no published checksum (nor
    one of its archive) is kept with a warning that it is unverified.
    """
    spec = name if isinstance(name, DatasetSpec) else get_spec(name)
    if spec.generated:
        raise _generated(spec)
    base = _resolve(data_dir) / spec.folder
    targets = [base / f.path for f in spec.files]
    if not spec.downloadable:
        first = next(iter(spec.files))
        raise DataError(
            f"dataset {spec.name!r} cannot be downloaded by mirec: "
            f"{spec.manual.format(path=base / first.path) if spec.manual else 'no source known'}"
        )
    todo = [
        (f, t)
        for f, t in zip(spec.files, targets, strict=True)
        if not (t.is_file() and (f.sha256 is None or sha256_of(t) == f.sha256))
    ]
    if not todo:
        return targets
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"{base}: cannot create the dataset folder ({err.strerror})") from err
    if spec.archive_url is not None:
        _download_archive(spec, base, todo, progress)
    else:
        for file, target in todo:
            assert file.url is not None
            _download_file(file, target, progress)
    return targets


def _fetch(url: str, dest: Path, progress: bool, what: str) -> None:
    """Stream ``url`` into ``dest`` with a progress bar; ``DataError`` on any network failure."""
    try:
        with urllib.request.urlopen(url, timeout=60) as response, dest.open("wb") as out:
            total = response.headers.get("Content-Length")
            with tqdm(
                total=int(total) if total and total.isdigit() else None,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=url.rsplit("/", 1)[-1],
                disable=not progress,
            ) as bar:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as err:
        reason = getattr(err, "reason", None) or err
        raise DataError(
            f"cannot download {url} ({reason}); check the internet connection, or download it "
            f"by hand and put {what}"
        ) from err


def _check(path: Path, expected: str | None, algorithm: str, url: str) -> bool:
    """Compare a checksum; ``DataError`` on mismatch. False when there is none to check."""
    if expected is None:
        return False
    actual = _digest(path, algorithm)
    if actual != expected:
        raise DataError(
            f"{url}: {algorithm.upper()} mismatch (expected {expected}, got {actual}); "
            "the download is corrupt or the published file changed, so nothing was kept"
        )
    return True


def _unverified(path: Path, url: str) -> None:
    warnings.warn(
        f"{path}: unverified: no checksum is published for {url}, so its content was not checked",
        UserWarning,
        stacklevel=3,
    )


def _download_file(file: DataFile, target: Path, progress: bool) -> None:
    assert file.url is not None
    tmp = temp_beside(target, ".part")
    try:
        _fetch(file.url, tmp, progress, f"it at {target}")
        if not _check(tmp, file.sha256, "sha256", file.url):
            _unverified(target, file.url)
        durable_replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _download_archive(
    spec: DatasetSpec, base: Path, todo: list[tuple[DataFile, Path]], progress: bool
) -> None:
    url = spec.archive_url
    assert url is not None
    archive = temp_beside(base / f"{spec.name}.zip", ".part")
    extracted: list[tuple[Path, Path]] = []
    try:
        _fetch(url, archive, progress, f"its files in {base}")
        verified = _check(archive, spec.archive_sha256, "sha256", url)
        if not verified:
            verified = _check(archive, spec.archive_md5, "md5", url)
        try:
            with zipfile.ZipFile(archive) as zf:
                for file, target in todo:
                    member = file.member or file.path
                    try:
                        info = zf.getinfo(member)
                    except KeyError:
                        raise DataError(f"{url}: the archive has no {member}") from None
                    tmp = temp_beside(target, ".part")
                    extracted.append((tmp, target))
                    with zf.open(info) as src, tmp.open("wb") as out:
                        while chunk := src.read(_CHUNK):
                            out.write(chunk)
                    if not _check(tmp, file.sha256, "sha256", f"{url}:{member}") and not verified:
                        _unverified(target, url)
        except (zipfile.BadZipFile, zipfile.LargeZipFile) as err:
            raise DataError(f"{url}: not a readable zip archive ({err})") from err
        # only once every file checked out does any of them take its place
        for tmp, target in extracted:
            durable_replace(tmp, target)
    finally:
        archive.unlink(missing_ok=True)
        for tmp, _ in extracted:
            tmp.unlink(missing_ok=True)
