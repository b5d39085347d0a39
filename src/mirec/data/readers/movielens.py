"""MovieLens readers: 100K (``u.data``/``u.item``/``u.genre``/``u.user``), latest/1M/10M/20M/25M,
and a MovieLens log kept as sequences (``ml-1m.txt`` with ``movies.dat``/``users.dat``).

100K's ``u.user`` and 1M's ``users.dat`` describe the users; they become
:attr:`RawLog.user_features <mirec.data.log.RawLog>` (the categorical user profile MIND
feeds its interest towers, Li et al., CIKM 2019, section 4.3), with the same four features
for both: ``age`` (MovieLens-1M's groups, :data:`AGE_GROUPS`), ``gender``, ``occupation``
and ``zip_region`` (the zip code's first digit, null when it does not start with one).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mirec.data.log import RawLog
from mirec.data.readers._columns import (
    _distinct_pairs,
    _finite_column,
    _first_true,
    _id_column,
    _int_column,
    _require_nonempty,
)
from mirec.data.readers._files import _check_file, _folder_and_file, _is_file, _os_errors
from mirec.data.readers._scan import _F, _scan, _scan_named, _Source
from mirec.data.readers.sequences import read_sequences
from mirec.errors import DataError

ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
"""The 19 genre names of MovieLens 100K, in flag order (used when ``u.genre`` is absent)."""


AGE_GROUPS = ("Under 18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+")
"""MovieLens-1M's age groups; 100K's exact ages are bucketed into them."""
_AGE_GROUP_STARTS = np.array([18, 25, 35, 45, 50, 56])
"""Lower bounds of all groups but the first (1M writes each age as its group's lower bound,
with 1 for under 18, so the same bucketing reads both files)."""

USER_FEATURES = ("age", "gender", "occupation", "zip_region")
"""The user-profile columns the MovieLens readers produce, in this order."""

_GROUPLENS = "https://grouplens.org/datasets/movielens/"


_NO_GENRES = "(no genres listed)"


_RATING_FIELDS = (
    _F("user", "int"),
    _F("item", "int"),
    _F("rating", "skip"),
    _F("timestamp", "num"),
)
"""``user item rating unix_ts`` lines of ``u.data`` and ``ratings.dat``."""


@_os_errors
def read_movielens_100k(folder: str | Path, *, id_type: str | None = None) -> RawLog:
    """Read MovieLens 100K from its folder (or its ``u.data``).

    ``u.data`` (tab-separated ``user item rating unix_ts``) gives the interactions; ``u.item``
    (``|``-separated, latin-1), when present, gives titles and the genre flags, named by
    ``u.genre`` when present, else by :data:`ML100K_GENRES`. ``u.user`` (``user|age|gender|
    occupation|zip``), when present, gives the user profiles (see the module docstring).
    Ids are integers (a line that holds another id is an error) unless ``id_type="str"``.
    """
    data_path, item_path, genre_path, user_path = _ml100k_files(folder)
    scanned = _scan(data_path, _RATING_FIELDS, sep="\t", header=False, quote="")
    interactions = _ratings(*scanned, id_type)
    sources = [data_path]
    categories = titles = None
    if item_path is not None:
        genres = ML100K_GENRES
        if genre_path is not None:
            genres = _read_ml100k_genres(genre_path)
        categories, titles = _read_ml100k_items(item_path, genres, id_type)
        sources += [p for p in (item_path, genre_path) if p is not None]
    profiles = None
    if user_path is not None:
        profiles = _read_ml100k_users(user_path, id_type)
        sources.append(user_path)
    return RawLog(interactions, tuple(sources), categories, titles, user_features=profiles)


@_os_errors
def read_movielens(folder: str | Path, *, id_type: str | None = None) -> RawLog:
    """Read MovieLens latest/1M/10M/20M/25M from its folder (or its ratings file).

    ``ratings.csv`` (header ``userId,movieId,rating,timestamp``) or ``ratings.dat``
    (``::``-separated, no header) gives the interactions; ``movies.csv`` / ``movies.dat``
    (``movieId, title, genres A|B``), when present, gives titles and genres ("(no genres
    listed)" means none). ``movies.dat`` is read as UTF-8, or as latin-1 (ML-1M) when it is
    not valid UTF-8. ML-1M's ``users.dat`` (``user::gender::age::occupation::zip``), when
    it is beside ``ratings.dat``, gives the user profiles (see the module docstring).
    Ids are integers (a line that holds another id is an error) unless ``id_type="str"``.
    """
    ratings, movies, users = _movielens_files(folder)
    if ratings.suffix == ".csv":
        scanned = _scan_named(
            ratings,
            {"user": "userId", "item": "movieId", "timestamp": "timestamp"},
            {"user": "int", "item": "int", "timestamp": "num"},
            sep=",",
        )
    else:
        scanned = _scan(ratings, _RATING_FIELDS, sep="::", header=False, quote="")
    interactions = _ratings(*scanned, id_type)
    profiles = None if users is None else _read_ml1m_users(users, id_type)
    extra = () if users is None else (users,)
    if movies is None:
        return RawLog(interactions, (ratings, *extra), user_features=profiles)
    categories, titles = _read_movies(movies, id_type)
    return RawLog(
        interactions, (ratings, movies, *extra), categories, titles, user_features=profiles
    )


@_os_errors
def read_movielens_sequences(path: str | Path, *, id_type: str | None = None) -> RawLog:
    """Read a MovieLens log kept as time-ordered sequences, with the movie and user files.

    ``path`` is a sequence file (``user item1 item2 ...`` per line, read by
    :func:`~mirec.data.readers.sequences.read_sequences`; ``user item`` per line is one such
    line per interaction), each user's items oldest first, ratings and timestamps dropped
    (as ``ml-1m.txt`` derived from ML-1M's ``ratings.dat``). ``movies.dat`` (or
    ``movies.csv``) beside it, when present, gives titles and genres as for
    :func:`read_movielens`, and ``users.dat`` the user profiles.
    """
    path = Path(path)
    log = read_sequences(path, id_type=id_type)
    movies, users = _movielens_sequences_companions(path)
    item_type = log.interactions.schema.field("item").type
    companion_ids = "str" if pa.types.is_string(item_type) else "int"
    categories = titles = profiles = None
    if movies is not None:
        categories, titles = _read_movies(movies, companion_ids)
    if users is not None:
        profiles = _read_ml1m_users(users, companion_ids)
    sources = tuple(p for p in (path, movies, users) if p is not None)
    return RawLog(log.interactions, sources, categories, titles, user_features=profiles)


def _movielens_sequences_companions(path: Path) -> tuple[Path | None, Path | None]:
    """``movies.dat`` (else ``movies.csv``) and ``users.dat`` beside a sequence file."""
    movies = next(
        (m for m in (path.with_name("movies.dat"), path.with_name("movies.csv")) if _is_file(m)),
        None,
    )
    users = path.with_name("users.dat")
    return movies, users if _is_file(users) else None


def _read_movies(movies: Path, id_type: str | None) -> tuple[pa.Table, pa.Table]:
    """``movies.csv`` / ``movies.dat`` (``movieId, title, genres A|B``): the distinct
    (item, genre) pairs and the titles."""
    if movies.suffix == ".csv":
        mt, msrc = _scan_named(
            movies,
            {"item": "movieId", "title": "title", "genres": "genres"},
            {"item": "int", "title": "text", "genres": "text"},
            sep=",",
        )
    else:
        fields = [_F("item", "int"), _F("title", "text"), _F("genres", "text")]
        mt, msrc = _scan(movies, fields, sep="::", header=False, quote="", latin1_fallback=True)
    items = _id_column(mt, "item", msrc, id_type)
    genre_lists = pc.split_pattern(pc.fill_null(mt.column("genres"), ""), "|")
    flat = pc.list_flatten(genre_lists)
    owner = pc.take(items, pc.list_parent_indices(genre_lists))
    keep = pc.and_(pc.not_equal(flat, ""), pc.not_equal(flat, _NO_GENRES))
    categories = _distinct_pairs(owner.filter(keep), flat.filter(keep))
    titles = pa.table({"item": items, "title": pc.fill_null(mt.column("title"), "")})
    return categories, titles


def _ml100k_files(folder: str | Path) -> tuple[Path, Path | None, Path | None, Path | None]:
    """``u.data`` and, where present, ``u.item``, ``u.genre`` and ``u.user``."""
    what = f"MovieLens 100K files (u.data, u.item, u.genre, u.user from {_GROUPLENS})"
    folder, given = _folder_and_file(folder, what)
    data = given or folder / "u.data"
    _check_file(data, f"u.data of MovieLens 100K ({_GROUPLENS})")
    optional = (folder / name for name in ("u.item", "u.genre", "u.user"))
    item, genre, user = (p if _is_file(p) else None for p in optional)
    return data, item, genre, user


def _movielens_files(folder: str | Path) -> tuple[Path, Path | None, Path | None]:
    """The ratings file and, where present, the movies file and (``.dat`` only) users.dat."""
    what = f"MovieLens files (ratings.csv or ratings.dat, and movies, from {_GROUPLENS})"
    folder, given = _folder_and_file(folder, what)
    ratings = given
    if ratings is None:
        found = [folder / n for n in ("ratings.csv", "ratings.dat") if _is_file(folder / n)]
        if not found:
            raise DataError(
                f"{folder}: no ratings.csv or ratings.dat here; put the MovieLens files "
                f"(from {_GROUPLENS}) in this folder"
            )
        ratings = found[0]
    _check_file(ratings, f"MovieLens ratings file ({_GROUPLENS})")
    if ratings.suffix not in (".csv", ".dat"):
        raise DataError(f"{ratings}: expected a MovieLens ratings.csv or ratings.dat")
    movies = ratings.with_name("movies" + ratings.suffix)
    users = ratings.with_name("users.dat")  # ML-1M only; the csv releases have no user file
    return (
        ratings,
        movies if _is_file(movies) else None,
        users if ratings.suffix == ".dat" and _is_file(users) else None,
    )


def _ratings(table: pa.Table, src: _Source, id_type: str | None) -> pa.Table:
    """The interactions of a MovieLens ratings scan: integer ids, finite timestamps."""
    return pa.table(
        {
            "user": _id_column(table, "user", src, id_type),
            "item": _id_column(table, "item", src, id_type),
            "timestamp": _finite_column(table, "timestamp", src),
        }
    )


def _read_ml100k_genres(path: Path) -> tuple[str, ...]:
    table, src = _scan(
        path,
        [_F("genre", "label"), _F("index", "int")],
        sep="|",
        header=False,
        quote="",
        encoding="latin-1",
    )
    index = _int_column(table, "index", src).to_numpy()
    if sorted(index.tolist()) != list(range(len(index))):
        raise DataError(f"{path}: genre numbers must be 0..{len(index) - 1}, each once")
    names = table.column("genre").to_numpy(zero_copy_only=False)
    return tuple(str(names[i]) for i in np.argsort(index))


def _read_ml100k_items(
    path: Path, genres: Sequence[str], id_type: str | None
) -> tuple[pa.Table, pa.Table]:
    fields = [
        _F("item", "int"),
        _F("title", "text"),
        _F("release", "skip"),
        _F("video", "skip"),
        _F("url", "skip"),
        *(_F(f"g{j}", "text", f"genre flag {name!r}") for j, name in enumerate(genres)),
    ]
    table, src = _scan(path, fields, sep="|", header=False, quote="", encoding="latin-1")
    items = _id_column(table, "item", src, id_type)
    rows, which = [], []
    for j in range(len(genres)):  # a loop over the 19 genres, not over rows
        flags = table.column(f"g{j}")
        bad = pc.invert(pc.is_in(flags, pa.array(["0", "1"])))
        if pc.any(bad).as_py():
            row = _first_true(bad)
            raise src.fail(
                row, f"genre flag {genres[j]!r} must be 0 or 1, not {flags[row].as_py()!r}"
            )
        hit = pc.indices_nonzero(pc.equal(flags, "1")).to_numpy()
        rows.append(hit)
        which.append(np.full(len(hit), j))
    row = np.concatenate(rows)
    genre = np.concatenate(which)
    order = np.lexsort((genre, row))
    names = pa.array(list(genres), pa.string())
    categories = pa.table(
        {
            "item": pc.take(items, pa.array(row[order])),
            "category": pc.take(names, pa.array(genre[order])),
        }
    )
    titles = pa.table({"item": items, "title": pc.fill_null(table.column("title"), "")})
    return categories, titles


def _read_ml100k_users(path: Path, id_type: str | None) -> pa.Table:
    """``u.user``: ``user|age|gender|occupation|zip``, exact ages in years."""
    fields = [
        _F("user", "int"),
        _F("age", "int"),
        _F("gender", "label"),
        _F("occupation", "label"),
        _F("zip", "text"),
    ]
    table, src = _scan(path, fields, sep="|", header=False, quote="", encoding="latin-1")
    return _user_profiles(table, src, id_type)


def _read_ml1m_users(path: Path, id_type: str | None) -> pa.Table:
    """ML-1M's ``users.dat``: ``user::gender::age::occupation::zip``, the age already a group
    (1, 18, 25, ...) and the occupation a code 0-20, kept as written."""
    fields = [
        _F("user", "int"),
        _F("gender", "label"),
        _F("age", "int"),
        _F("occupation", "label"),
        _F("zip", "text"),
    ]
    table, src = _scan(path, fields, sep="::", header=False, quote="", latin1_fallback=True)
    return _user_profiles(table, src, id_type)


def _user_profiles(table: pa.Table, src: _Source, id_type: str | None) -> pa.Table:
    """The four :data:`USER_FEATURES` of a scanned user file, one row per user, checked."""
    users = _id_column(table, "user", src, id_type)
    _require_unique(users, src)
    ages = _int_column(table, "age", src).to_numpy()
    if (ages < 0).any():
        row = int(np.flatnonzero(ages < 0)[0])
        raise src.fail(row, f"{src.label('age')} must not be negative, not {ages[row]}")
    for role in ("gender", "occupation"):
        _require_nonempty(table.column(role), role, src)
    gender = pc.utf8_trim_whitespace(table.column("gender"))
    bad = pc.invert(pc.is_in(gender, pa.array(["M", "F"])))
    if pc.any(bad).as_py():
        row = _first_true(bad)
        raise src.fail(row, f"{src.label('gender')} must be M or F, not {gender[row].as_py()!r}")
    group = np.digitize(ages, _AGE_GROUP_STARTS)  # 0 = under 18, ..., 6 = 56+
    zips = pc.utf8_trim_whitespace(table.column("zip"))
    first = pc.utf8_slice_codeunits(zips, 0, 1)
    # a Canadian or other foreign postcode starts with a letter: its region is unknown
    region = pc.if_else(pc.utf8_is_digit(first), first, pa.scalar(None, pa.string()))
    return pa.table(
        {
            "user": users,
            "age": pc.take(pa.array(AGE_GROUPS), pa.array(group)),
            "gender": gender,
            "occupation": pc.utf8_trim_whitespace(table.column("occupation")),
            "zip_region": region,
        }
    )


def _require_unique(users: pa.ChunkedArray, src: _Source) -> None:
    """Each user on one line only: a second profile for a user names both lines."""
    ids = users.to_numpy()
    _, first, counts = np.unique(ids, return_index=True, return_counts=True)
    if (counts == 1).all():
        return
    seen = np.zeros(len(ids), dtype=bool)
    seen[first] = True
    row = int(np.flatnonzero(~seen)[0])  # the earliest repeat in file order
    earlier = int(np.flatnonzero(ids == ids[row])[0])
    line = src.line_of(earlier)
    raise src.fail(row, f"user {ids[row]} is listed again (first on line {line})")
