"""The catalogue of named datasets: what each one is, its reader format, the files it needs
(with their published SHA-256), where to download them or how to get them by hand, and its
licence.

Where a dataset lives on disk and how it is read is :mod:`mirec.data.locate`; fetching and
verifying its files is :mod:`mirec.data.download`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mirec.errors import ConfigError

_GROUPLENS = "https://files.grouplens.org/datasets/movielens/"
_S3REC = "https://raw.githubusercontent.com/RUCAIBox/CIKM2020-S3Rec/master/data/"
_TIANCHI = "https://tianchi.aliyun.com/dataset/649"


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

DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in _SPECS}
"""Every named dataset, by name."""


def get_spec(name: str) -> DatasetSpec:
    """The spec of a named dataset; ``ConfigError`` listing the known names otherwise."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ConfigError(
            f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)} "
            "(or give a file or folder path together with a format)"
        ) from None


def generated_error(spec: DatasetSpec) -> ConfigError:
    """The error for reading or downloading a generated dataset."""
    return ConfigError(
        f"dataset {spec.name!r} is generated, not read from files: use "
        "mirec.data.synthetic.generate (the CLI does this for 'synthetic[:options]')"
    )
