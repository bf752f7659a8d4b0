"""Safe extraction of dataset archives (``.tar``, ``.tar.gz``/``.tgz``, ``.zip``).

Real Caltech-101/256 and PASCAL VOC come as archives (``caltech-101.zip`` holding
``101_ObjectCategories.tar.gz``, ``256_ObjectCategories.tar``, ``VOCtrainval_11-May-2012.tar``).
An archive is input we did not write, so every member is checked before anything is written:

- no absolute names, no ``..`` that climbs out of the destination;
- symbolic and hard links only to targets inside the destination (no absolute link targets),
  judged after following the archive's own symlinks (a chain of links that are each harmless
  alone, or a member written through a linked folder, cannot climb out either);
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


def _resolve(name: str, links: dict[str, str], follow_last: bool = True) -> str | None:
    """Where the archive-relative path ``name`` lands once the archive's own symlinks (``links``:
    normalised member name -> link target) are followed, as the file system will; None if that is
    outside the destination (or a symlink loop). ``follow_last``: follow a link in the last part too."""
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    out: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if not out:
                return None
            out.pop()
            continue
        out.append(part)
        target = links.get("/".join(out))
        if target is not None and (parts or follow_last):
            hops += 1
            if hops > 40 or target.startswith("/"):  # the kernel's ELOOP limit is 40 too
                return None
            out.pop()
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
    return "/".join(out)


def _check_tar(archive: Path, tar: tarfile.TarFile) -> None:
    members = tar.getmembers()
    # Every symlink of the archive, wherever it comes: a member written through one, or a link
    # aimed through one, is judged by where it really lands (``a/up -> ..`` then ``a/up2 -> up/..``).
    links = {posixpath.normpath(m.name): m.linkname for m in members if m.issym()}
    for m in members:
        if not _inside(m.name):
            raise ArchiveError(f"{archive}: member {m.name!r} would be written outside the destination")
        if _resolve(m.name, links, follow_last=False) is None:
            raise ArchiveError(f"{archive}: member {m.name!r} would be written outside the destination or "
                               "into a symlink loop, through the archive's own links")
        if m.issym():
            target = posixpath.join(posixpath.dirname(m.name), m.linkname)
            if m.linkname.startswith("/") or not _inside(target):
                raise ArchiveError(f"{archive}: symlink {m.name!r} -> {m.linkname!r} points outside the destination")
            if _resolve(target, links) is None:
                raise ArchiveError(f"{archive}: symlink {m.name!r} -> {m.linkname!r} points outside the destination "
                                   "or into a symlink loop once the archive's other links are followed")
        elif m.islnk():
            if not _inside(m.linkname) or _resolve(m.linkname, links) is None:
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
    except getattr(tarfile, "FilterError", ()) as exc:  # the data filter caught what the checks above let through
        raise ArchiveError(f"{archive}: unsafe member refused while extracting ({exc})") from None
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
        raise ArchiveError(f"{archive}: not a readable tar or zip archive ({exc})") from None
    return dest
