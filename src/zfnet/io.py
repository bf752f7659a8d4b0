"""Atomic file writes: the one way every module writes a file that must never be seen half-written.

A file is written to a temp file beside its destination (``.<name>.XXXX.tmp``), flushed and
fsynced, then renamed over the destination (``os.replace``, atomic on POSIX and Windows), and the
folder is fsynced so the rename itself survives a power cut. A crash at any point leaves either
the old file or the new one, never part of one; an exception removes the temp file.

Out of space (a full disk, a quota, a file size limit): any write here raises :class:`DiskFullError`,
one line naming the file, the bytes it needs and the bytes free, and leaves no partial file (only
the old one, if any). :func:`check_free_space` refuses a large job before it starts.

Failpoint for the crash tests: ``ZFNET_WRITE_PAUSE_S`` (seconds, default 0) holds every atomic
write that long between its body and its rename, so a test can kill a process provably inside a
write (``tests/test_reliability.py``); the written bytes are unchanged.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import IO, Any, Iterator


WRITE_PAUSE_ENV = "ZFNET_WRITE_PAUSE_S"
OUT_OF_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})  # disk full, quota exceeded, file size limit


class DiskFullError(OSError):
    """A write that ran out of space (``errno`` ENOSPC); ``str()`` is one line naming the file,
    the bytes it needs and the bytes free."""

    def __init__(self, message: str):
        super().__init__(errno.ENOSPC, message)

    def __str__(self) -> str:
        return self.strerror


def out_of_space(exc: BaseException) -> bool:
    """Whether ``exc`` is an ``OSError`` saying there is no room to write (:data:`OUT_OF_SPACE`)."""
    return isinstance(exc, OSError) and exc.errno in OUT_OF_SPACE


def free_bytes(path: str | Path) -> int | None:
    """Bytes free for this user on the filesystem that holds ``path`` (or its nearest existing
    folder); None where that cannot be asked (a URI, not a local path)."""
    folder = Path(path).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def disk_full(path: str | Path, needed: int | None, cause: OSError, written: int = 0) -> DiskFullError:
    """The :class:`DiskFullError` for ``path``, which could not be written (``cause``): it needs
    ``needed`` bytes (None: unknown, more than the ``written`` that fitted); the bytes free are
    those of the moment it is called."""
    need = f"{needed:,} bytes" if needed is not None else f"more than {written:,} bytes"
    free = free_bytes(path)
    left = f", {free:,} bytes free there" if free is not None else ""
    return DiskFullError(f"{path}: out of space ({cause.strerror or cause}): writing it needs {need}{left}; "
                         "free some space and rerun")


def check_free_space(folder: str | Path, needed: int, what: str) -> None:
    """Refuse a job before it starts when the filesystem of ``folder`` has less than ``needed``
    bytes free: :class:`DiskFullError` naming ``folder``, ``what`` needs the space (with how the
    estimate was made, e.g. ``"the shards of 1,281,167 images of 3 x 256 x 256 bytes"``), the
    estimate and the free bytes. Nothing is checked where the free space cannot be asked."""
    free = free_bytes(folder)
    if free is not None and free < needed:
        raise DiskFullError(f"{folder}: not enough free space for {what}: needs about {needed:,} bytes "
                            f"({needed / 2**30:.2f} GiB, estimated), {free:,} bytes free; free some space "
                            "or put the folder on a bigger disk")


@contextlib.contextmanager
def atomic_path(path: str | Path, size: int | None = None) -> Iterator[Path]:
    """A temp path beside ``path`` for the body to write (by name: a library that opens it itself);
    on success it is fsynced and renamed over ``path``. The temp file exists (empty) on entry.
    Running out of space anywhere on the way raises :func:`disk_full`'s error for ``path``, with
    ``size`` (the bytes the body writes, if known) as the bytes needed."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        yield tmp
        _write_pause()
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        full = out_of_space(exc) and not isinstance(exc, DiskFullError)
        written = tmp.stat().st_size if full and tmp is not None and tmp.exists() else 0
        error = disk_full(path, size, exc, written) if full else None  # the space free when it failed
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        if error is not None:
            raise error from None
        raise
    _fsync_folder(path.parent)


def _write_pause() -> None:
    """The :data:`WRITE_PAUSE_ENV` failpoint (see the module's docstring)."""
    pause = os.environ.get(WRITE_PAUSE_ENV)
    if not pause:
        return
    try:
        time.sleep(float(pause))
    except ValueError:
        raise ValueError(f"{WRITE_PAUSE_ENV}={pause!r}: not a number of seconds") from None


@contextlib.contextmanager
def atomic_folder(root: str | Path) -> Iterator[Path]:
    """A fresh sibling folder ``.<name>.partial`` for the body to fill; on success it replaces
    ``root`` (``os.replace``), on an exception it is removed. ``root`` and any stale partial folder
    are removed first, so an interrupted run leaves no folder at ``root`` that looks complete.
    Running out of space raises :func:`disk_full`'s error for ``root`` (it needs more than what fitted)."""
    root = Path(root)
    tmp = root.with_name(f".{root.name}.partial")
    for old in (root, tmp):
        if old.exists():
            shutil.rmtree(old)
    try:
        yield tmp
        os.replace(tmp, root)
    except BaseException as exc:
        full = out_of_space(exc) and not isinstance(exc, DiskFullError)
        written = sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file()) if full and tmp.is_dir() else 0
        error = disk_full(root, None, exc, written) if full else None  # the space free when it failed
        shutil.rmtree(tmp, ignore_errors=True)
        if error is not None:
            raise error from None
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
def atomic_file(path: str | Path, mode: str = "wb", encoding: str | None = None, size: int | None = None) -> Iterator[IO]:
    """A file handle (``mode`` ``"wb"`` or ``"w"``) whose content replaces ``path`` once the block ends
    without an exception (:func:`atomic_path`; ``size``: the bytes it will write, if known)."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_file: mode must be 'wb' or 'w', got {mode!r}")
    with atomic_path(path, size) as tmp, open(tmp, mode, encoding=encoding if mode == "w" else None) as fh:
        yield fh


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_file(path, size=len(data)) as fh:
        fh.write(data)


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_npy(path: str | Path, array) -> None:
    """A NumPy array as a ``.npy`` file (``numpy.save``'s format) at ``path``, atomically. NumPy
    writes through ``write()`` here (in chunks of 16 MiB), not ``tofile()``, whose short write on a
    full disk says neither errno nor file."""
    import numpy as np

    class Writes:  # not a file object to NumPy
        def __init__(self, fh: IO):
            self.write = fh.write

    with atomic_file(path, size=array.nbytes + 128) as fh:  # + the header: 128 bytes for 1-4 dimensions
        np.save(Writes(fh), array, allow_pickle=False)


def write_json(path: str | Path, data: Any, sort_keys: bool = True) -> None:
    """Write ``data`` as indented JSON (keys sorted unless ``sort_keys`` is False) to ``path`` atomically."""
    write_text(path, json.dumps(data, indent=2, sort_keys=sort_keys) + "\n")


def copy_file(src: str | Path, dst: str | Path) -> None:
    """Copy ``src`` to ``dst`` atomically."""
    with atomic_file(dst, size=os.path.getsize(src)) as out, open(src, "rb") as inp:
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


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` through libyaml's C parser where PyYAML has it (about 10x faster: every
    stage reads ``params.yaml`` and ``dvc.lock``, a few thousand lines, when it starts)."""
    import yaml

    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
