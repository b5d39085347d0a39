"""Downloading a named dataset into the data directory and verifying it.

``mirec download NAME`` fetches a dataset that has a public URL (:mod:`mirec.data.catalogue`)
into ``<data_dir>/<folder>/`` (:mod:`mirec.data.locate`), and checks each file against its
published SHA-256 before anything is put in place.
"""

from __future__ import annotations

import hashlib
import http.client
import urllib.error
import urllib.request
import warnings
import zipfile
from pathlib import Path

from tqdm import tqdm

from mirec.atomic import durable_replace, temp_beside
from mirec.data import locate
from mirec.data.catalogue import DataFile, DatasetSpec, generated_error, get_spec
from mirec.data.readers._files import _os_errors
from mirec.errors import DataError

_CHUNK = 1 << 20


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
        raise generated_error(spec)
    base = locate.data_dir(data_dir) / spec.folder
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
