"""Safe extraction of dataset archives (``.tar``, ``.tar.gz``/``.tgz``, ``.zip``).

Real Caltech-101/256 and PASCAL VOC come as archives (``caltech-101.zip`` holding
``101_ObjectCategories.tar.gz``, ``256_ObjectCategories.tar``, ``VOCtrainval_11-May-2012.tar``).
An archive is input we did not write, so every member is checked before anything is written:

- no absolute names, no ``..`` that climbs out of the destination;
- symbolic and hard links only to targets inside the destination (no absolute link targets);
- no device files, FIFOs or other special members.

Any violation raises :class:`ArchiveError` naming the member, and nothing is extracted. Tar
archives are then extracted with :mod:`tarfile`'s ``data`` filter (which enforces the same rules
again, and drops set-uid bits and foreign owners); zip members are written one by one.
"""

from __future__ import annotations

import posixpath
import stat
import tarfile
import zipfile
from pathlib import Path

from zfnet.data.imagenet import LayoutError

SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip")


class ArchiveError(LayoutError):
    """An archive that cannot be extracted safely (or is not an archive); the message names the member."""


def is_archive(path: str | Path) -> bool:
    """Whether ``path`` is a file with one of the :data:`SUFFIXES`."""
    path = Path(path)
    return path.is_file() and path.name.lower().endswith(SUFFIXES)


def _inside(name: str) -> bool:
    """Whether the archive-relative POSIX path ``name`` stays inside the destination."""
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return False
    normal = posixpath.normpath(name.replace("\\", "/"))
    return normal != ".." and not normal.startswith("../")


def _check_tar(archive: Path, tar: tarfile.TarFile) -> None:
    for m in tar.getmembers():
        if not _inside(m.name):
            raise ArchiveError(f"{archive}: member {m.name!r} would be written outside the destination")
        if m.issym():
            target = posixpath.join(posixpath.dirname(m.name), m.linkname)
            if m.linkname.startswith("/") or not _inside(target):
                raise ArchiveError(f"{archive}: symlink {m.name!r} -> {m.linkname!r} points outside the destination")
        elif m.islnk():
            if not _inside(m.linkname):
                raise ArchiveError(f"{archive}: hard link {m.name!r} -> {m.linkname!r} points outside the destination")
        elif not (m.isfile() or m.isdir()):
            raise ArchiveError(f"{archive}: member {m.name!r} is a device, FIFO or other special file")


def _check_zip(archive: Path, zf: zipfile.ZipFile) -> None:
    for info in zf.infolist():
        if not _inside(info.filename):
            raise ArchiveError(f"{archive}: member {info.filename!r} would be written outside the destination")
        kind = stat.S_IFMT(info.external_attr >> 16)  # 0 when the zip records no Unix file type
        if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
            raise ArchiveError(f"{archive}: member {info.filename!r} is a link or special file")


def extract(archive: str | Path, dest: str | Path) -> Path:
    """Check every member of ``archive`` (module docstring), then extract it into ``dest``.

    Returns ``dest``. Raises :class:`ArchiveError` for an unsafe member or a file that is not a
    readable tar or zip archive (nothing is written then).
    """
    archive, dest = Path(archive), Path(dest)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                _check_zip(archive, zf)
                dest.mkdir(parents=True, exist_ok=True)
                zf.extractall(dest)
            return dest
        with tarfile.open(archive) as tar:
            _check_tar(archive, tar)
            dest.mkdir(parents=True, exist_ok=True)
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, filter="data")
            else:  # Python without extraction filters: the checks above are the guard
                tar.extractall(dest)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
        raise ArchiveError(f"{archive}: not a readable tar or zip archive ({exc})") from None
    return dest
