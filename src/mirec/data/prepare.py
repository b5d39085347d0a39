"""From a dataset name (or path) to split, ready-to-train sequences, cached on disk.

An ``interactions`` log (a Parquet file, folder or glob, or a delimited text file) is
prepared out of core by DuckDB (:mod:`mirec.data.ingest`), so a log larger than memory
fits; the other formats are read in memory and go through
:func:`~mirec.data.sequences.build_sequences`. Either way the result is a folder of
``.npy`` arrays (:mod:`mirec.data.stored`), loaded memory-mapped.

Reading and filtering a large log takes a while, so the result is stored under the cache
directory (``sequences/<key>/``), keyed by
the dataset reference, the reader settings and each source file's resolved path, size and
modification time (:func:`~mirec.data.locate.file_stamp`): a second run with the same
inputs reads no byte of them and loads the result in milliseconds, however large the log.
A file rewritten since, or touched, has another size or time and is read again. This is the
quick check of make and rsync, with its limit: a rewrite that keeps the size and puts the
old modification time back (or lands within the file system's time resolution) is not seen;
``use_cache=False`` reads the files whatever the cache holds. The published checksums of
named datasets are verified when :func:`~mirec.data.download.download` fetches a file or
finds it already there, not here. Every array of :class:`~mirec.data.sequences.Sequences`
is stored, the user-profile code matrix included. An entry is built in a hidden folder
beside it and renamed into place once complete, so a crash never leaves half an entry; it
records each file's SHA-256, checked whenever it is used, so an entry damaged since (a
file cut short, a flipped bit) is rebuilt, with one line saying so, instead of being read.
A disk that fills up while an entry is built is one error naming the file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from mirec.atomic import fsync_folder, write_failure
from mirec.core.paths import cache_dir
from mirec.data import locate
from mirec.data.examples import EvaluationSet, evaluation_set
from mirec.data.ingest import InMemoryOnly, ingest_interactions
from mirec.data.sequences import (
    Sequences,
    UserSplit,
    build_sequences,
    split_users,
    with_items,
)
from mirec.data.stored import damage, read_sequences, write_checksums, write_sequences
from mirec.data.synthetic import SyntheticSpec, generate
from mirec.errors import ConfigError, WriteError

log = logging.getLogger("mirec.data")

CACHE_VERSION = 7
"""Part of every cache key; bumped when :class:`Sequences` gains fields (2: user-profile
codes), so a cache written before is never loaded as if it had none, when the readers
refuse what they used to accept (4: a mostly-integer id column with odd lines, which used
to turn every id into text, is an error), so no cache outlives the check, when the key
itself changes (5: file stamps instead of file digests), or when the entry's layout does
(6: a folder of memory-mapped ``.npy`` files, int32 items, instead of one ``.npz``; 7: with
the files' checksums)."""
MOVIELENS_MAXLEN, DEFAULT_MAXLEN = 50, 20


@dataclass(frozen=True)
class PreparedData:
    """Sequences, the user split and the evaluation sets of one dataset."""

    name: str
    sequences: Sequences
    split: UserSplit
    maxlen: int
    valid: EvaluationSet
    test: EvaluationSet


def default_maxlen(dataset: str, format: str | None) -> int:
    """docs/protocol.md section 7: 50 for MovieLens, 20 for everything else."""
    movielens = (format or "").startswith("movielens") or dataset.startswith("ml-")
    return MOVIELENS_MAXLEN if movielens else DEFAULT_MAXLEN


def cache_write_error(err: BaseException, path: Path) -> WriteError | None:
    """A full or failing disk under the preprocessing cache (``err`` while writing ``path``
    there) as one line that names the cache and how to move it; None for any other error."""
    failure = write_failure(err, path)
    if failure is None:
        return None
    return WriteError(
        f"{failure}; the preprocessing cache is {cache_dir()} ($MIREC_CACHE_DIR)",
        path=failure.path,
        reason=failure.reason,
    )


def prepare(
    dataset: str,
    *,
    data_dir: Path | None = None,
    format: str | None = None,
    columns: str | None = None,
    sep: str | None = None,
    split_seed: int = 42,
    maxlen: int | None = None,
    use_cache: bool = True,
    id_type: str | None = None,
    keep_items: Sequences | None = None,
) -> PreparedData:
    """``dataset``'s sequences, split and evaluation sets; ``maxlen`` None means
    :func:`default_maxlen` (0 or less is an error, not the default). ``keep_items``: a
    fine-tuned folder's sequences, whose items the log lacks stay in the catalogue
    (``removed_items=keep``: :func:`~mirec.data.sequences.with_items`); the cache holds the
    log's own."""
    if maxlen is not None and maxlen < 1:
        raise ConfigError(f"setting maxlen={maxlen!r}: must be an integer >= 1, or unset")
    seqs = load_sequences(
        dataset,
        data_dir=data_dir,
        format=format,
        columns=columns,
        sep=sep,
        use_cache=use_cache,
        id_type=id_type,
    )
    if keep_items is not None:
        seqs = with_items(seqs, keep_items)
    maxlen = maxlen if maxlen is not None else default_maxlen(dataset, format)
    return split_sequences(dataset, seqs, split_seed, maxlen)


def split_sequences(name: str, seqs: Sequences, split_seed: int, maxlen: int) -> PreparedData:
    """The protocol's split of ``seqs`` and its evaluation sets (docs/protocol.md sections 2, 4)."""
    split = split_users(seqs.n_users, split_seed)
    return PreparedData(
        name=name,
        sequences=seqs,
        split=split,
        maxlen=maxlen,
        valid=evaluation_set(seqs, split.valid, maxlen),
        test=evaluation_set(seqs, split.test, maxlen),
    )


def load_sequences(
    dataset: str,
    *,
    data_dir: Path | None = None,
    format: str | None = None,
    columns: str | None = None,
    sep: str | None = None,
    use_cache: bool = True,
    id_type: str | None = None,
) -> Sequences:
    """Filtered, re-indexed sequences of a named dataset, a path, or ``synthetic[:opts]``;
    ``id_type`` (None, ``int`` or ``str``) says how the reader takes ids."""
    if dataset.split(":")[0] == "synthetic" and format is None:
        key_parts = {"synthetic": repr(SyntheticSpec.parse(dataset))}
        sources: list[Path] = []
        stamps: list[tuple[str, int, int]] = []
    else:
        sources = locate.source_files(dataset, data_dir=data_dir, format=format)
        stamps = [locate.file_stamp(p) for p in sources]
        key_parts = {
            "dataset": dataset,
            "format": format,
            "columns": columns,
            "sep": sep,
            # stamps, not digests: finding the cache must not read a (large) log
            "files": stamps,
            "id_type": id_type,
        }
    key = hashlib.sha256(json.dumps([CACHE_VERSION, key_parts]).encode()).hexdigest()[:24]
    entry = cache_dir() / "sequences" / key
    if use_cache and entry.is_dir():
        damaged = damage(entry)
        if damaged is None:
            return read_sequences(entry)
        # a cache entry is only ever a copy of what the inputs give: built again, not an error
        log.warning("mirec: %s: damaged preprocessing cache entry (%s); rebuilding it",
                    entry, damaged)  # fmt: skip
        _discard(entry)
    try:
        return _build_entry(entry, key, dataset, sources, stamps, data_dir, format, columns,
                            sep, id_type, use_cache)  # fmt: skip
    except Exception as err:  # the disk's failures come as OSError, or DuckDB's own errors
        failure = cache_write_error(err, entry)
        if failure is None:
            raise
        raise failure from err


def _build_entry(
    entry: Path,
    key: str,
    dataset: str,
    sources: list[Path],
    stamps: list[tuple[str, int, int]],
    data_dir: Path | None,
    format: str | None,
    columns: str | None,
    sep: str | None,
    id_type: str | None,
    use_cache: bool,
) -> Sequences:
    """Prepare ``dataset`` in a staging folder beside ``entry``, then publish it there (or,
    when a source changed meanwhile or ``use_cache`` is off, use it without keeping it)."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=entry.parent, prefix=f".{key}.", suffix=".tmp"))
    try:
        _build(staging, dataset, sources, data_dir, format, columns, sep, id_type)
        # stamped before reading: a file that changed meanwhile may have been read half old,
        # half new, so its result is returned but not kept under the old stamp
        if use_cache and [locate.file_stamp(p) for p in sources] == stamps:
            write_checksums(staging)
            _publish(staging, entry)
            return read_sequences(entry)
        # the arrays stay mapped once their files are gone (POSIX), and the disk is freed
        # when they are
        return read_sequences(staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _build(
    folder: Path,
    dataset: str,
    sources: list[Path],
    data_dir: Path | None,
    format: str | None,
    columns: str | None,
    sep: str | None,
    id_type: str | None,
) -> None:
    """Write the sequences of ``dataset`` into ``folder``: out of core (DuckDB, on disk)
    for an ``interactions`` log, in memory for the other formats."""
    if format == "interactions":
        try:
            ingest_interactions(dataset, columns, folder, sep=sep, id_type=id_type)
            return
        except InMemoryOnly:
            pass  # raised before anything was written
    if sources:
        log = locate.load(
            dataset, data_dir=data_dir, format=format, columns=columns, sep=sep, id_type=id_type
        )
    else:
        log, _ = generate(SyntheticSpec.parse(dataset))
    write_sequences(folder, build_sequences(log))


def _discard(entry: Path) -> None:
    """Move a damaged ``entry`` out of the way (renamed, then deleted): a process that is
    reading it keeps its maps, and the rebuilt entry takes the name."""
    aside = Path(tempfile.mkdtemp(dir=entry.parent, prefix=f".{entry.name}.", suffix=".bad"))
    with suppress(OSError):  # another process discarded it already
        entry.rename(aside / entry.name)
    shutil.rmtree(aside, ignore_errors=True)


def _publish(staging: Path, entry: Path) -> None:
    """Rename the finished ``staging`` folder to ``entry``; a process that prepared the
    same inputs meanwhile may have put it there already, which is as good."""
    try:
        staging.rename(entry)
    except OSError:
        if not entry.is_dir():
            raise
        return
    fsync_folder(entry.parent)
