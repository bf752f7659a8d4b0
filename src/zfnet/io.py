"""Atomic file writes: the one way every module writes a file that must never be seen half-written.

A file is written to a temp file beside its destination (``.<name>.XXXX.tmp``), flushed and
fsynced, then renamed over the destination (``os.replace``, atomic on POSIX and Windows), and the
folder is fsynced so the rename itself survives a power cut. A crash at any point leaves either
the old file or the new one, never part of one; an exception removes the temp file.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temp path beside ``path`` for the body to write (by name: a library that opens it itself);
    on success it is fsynced and renamed over ``path``. The temp file exists (empty) on entry."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


@contextlib.contextmanager
def atomic_folder(root: str | Path) -> Iterator[Path]:
    """A fresh sibling folder ``.<name>.partial`` for the body to fill; on success it replaces
    ``root`` (``os.replace``), on an exception it is removed. ``root`` and any stale partial folder
    are removed first, so an interrupted run leaves no folder at ``root`` that looks complete."""
    root = Path(root)
    tmp = root.with_name(f".{root.name}.partial")
    for old in (root, tmp):
        if old.exists():
            shutil.rmtree(old)
    try:
        yield tmp
        os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened, as on Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """A file handle (``mode`` ``"wb"`` or ``"w"``) whose content replaces ``path`` once the block ends
    without an exception (:func:`atomic_path`)."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_file: mode must be 'wb' or 'w', got {mode!r}")
    with atomic_path(path) as tmp, open(tmp, mode, encoding=encoding if mode == "w" else None) as fh:
        yield fh


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_file(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def write_json(path: str | Path, data: Any, sort_keys: bool = True) -> None:
    """Write ``data`` as indented JSON (keys sorted unless ``sort_keys`` is False) to ``path`` atomically."""
    write_text(path, json.dumps(data, indent=2, sort_keys=sort_keys) + "\n")


def copy_file(src: str | Path, dst: str | Path) -> None:
    """Copy ``src`` to ``dst`` atomically."""
    with atomic_file(dst) as out, open(src, "rb") as inp:
        shutil.copyfileobj(inp, out, 1 << 20)


def link_file(src: str | Path, dst: str | Path) -> None:
    """Make ``dst`` the file ``src`` is, atomically: a hard link (no second copy of the bytes on the
    disk; ``src`` must never be changed in place, as nothing written atomically is), or a copy
    (:func:`copy_file`) where the filesystem cannot link (another filesystem, no hard links)."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.link")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        copy_file(src, dst)
        return
    os.replace(tmp, dst)
    _fsync_folder(dst.parent)


def write_table(table, stem: str | Path) -> tuple[Path, str]:
    """A results table (a pandas ``DataFrame``) as ``<stem>.csv`` (numbers to 3 decimals, written
    atomically); returns that path and the table as Markdown (2 decimals, NaN shown as ``-``)."""
    csv = Path(stem).with_suffix(".csv")
    write_text(csv, table.to_csv(index=False, float_format="%.3f"))
    shown = table.astype(object).where(table.notna(), None)  # tabulate writes missingval for None only
    return csv, shown.to_markdown(index=False, floatfmt=".2f", missingval="-")
