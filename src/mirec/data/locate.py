"""Named datasets on disk: the data directory, the files a dataset needs there, and reading
a dataset by name (or a file or folder by path and format).

A dataset named ``NAME`` lives in ``<data_dir>/<folder>/``, where the data directory is
``--data-dir``, else ``$MIREC_DATA_DIR``, else ``data`` in the platform's cache folder
(``~/.cache/mirec/data`` on Linux; :mod:`mirec.core.paths`). What each dataset's folder holds
is the catalogue's (:mod:`mirec.data.catalogue`); a missing file is reported with where it
goes and how to get it (``mirec download NAME``, :mod:`mirec.data.download`, where the
dataset has a public URL).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mirec.core.paths import default_data_dir
from mirec.data import readers
from mirec.data.catalogue import DATASETS, DataFile, DatasetSpec, generated_error, get_spec
from mirec.data.log import RawLog
from mirec.data.readers._files import _os_errors
from mirec.errors import ConfigError, DataError


def data_dir(explicit: str | Path | None = None) -> Path:
    """The data directory: ``explicit`` (``--data-dir``) > ``$MIREC_DATA_DIR`` > default."""
    return _resolve(explicit)


def _resolve(explicit: str | Path | None) -> Path:
    if explicit is not None and str(explicit):
        return Path(explicit).expanduser()
    return default_data_dir()


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


@_os_errors
def load(
    name_or_path: str | Path,
    data_dir: str | Path | None = None,
    format: str | None = None,
    columns: str | Sequence[str] | None = None,
    sep: str | None = None,
    id_type: str | None = None,
) -> RawLog:
    """Read a named dataset (:mod:`mirec.data.catalogue`), or a file/folder path in
    ``format``; ``id_type`` (None, ``int`` or ``str``) says how ids are read
    (:mod:`mirec.data.readers`)."""
    if format is not None:
        return readers.read_log(name_or_path, format, columns=columns, sep=sep, id_type=id_type)
    spec = _named_spec(name_or_path, columns, sep)
    if spec.generated:
        raise generated_error(spec)
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
    if name not in DATASETS and _exists(Path(name)):
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
    for spec in DATASETS.values():
        _readable_folder(base / spec.folder, f"folder of dataset {spec.name!r}")
    return [
        (spec, all((base / spec.folder / f.path).is_file() for f in spec.files))
        for spec in DATASETS.values()
    ]


@_os_errors
def file_stamp(path: Path) -> tuple[str, int, int]:
    """``path``'s resolved path, size in bytes and modification time in nanoseconds: what
    tells, without reading it, that a file may have changed (the quick check of make and
    rsync; a rewrite that keeps the size and restores the time is not seen)."""
    resolved = path.resolve()
    info = resolved.stat()
    return str(resolved), info.st_size, info.st_mtime_ns
