"""Readers for the ImageNet 2012 (ILSVRC-2012 CLS-LOC) on-disk layouts, streaming.

``root`` holds ``train/`` and ``val/`` (or is the Kaggle download folder, whose images lie under
``ILSVRC/Data/CLS-LOC/``) and optionally the Kaggle label files at its top:

- ``LOC_synset_mapping.txt``: ``<wnid> <name>`` per line; class index = line number. Without it
  the classes are the sorted folder names of ``train/`` (the name is the wnid).
- ``LOC_{train,val}_solution.csv``: ``ImageId,PredictionString`` with ``"<wnid> x0 y0 x1 y1 ..."``;
  the source of boxes, and of the val labels when ``val/`` is flat.

Train images are ``train/<wnid>/*``. Val images are either ``val/<wnid>/*`` (torchvision's
layout) or flat ``val/*``, labelled by ``LOC_val_solution.csv`` (first wnid of the image) or by a
Caffe-style ``val.txt`` in ``root`` or ``root/val`` (``<filename> <index>``, the index in sorted
wnid order). Every regular, non-hidden file in a class folder is yielded (whatever its suffix),
and so is a dangling or looping symbolic link, so preprocessing can report unreadable files with a reason; a layout that does not match
raises :class:`LayoutError` naming what was expected where.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Iterator, NamedTuple

SYNSET_MAPPING = "LOC_synset_mapping.txt"
KAGGLE_IMAGES = Path("ILSVRC/Data/CLS-LOC")  # where the Kaggle download keeps train/ and val/
SPLITS = ("train", "val")

BoxT = tuple[float, float, float, float]


class LayoutError(ValueError):
    """The folder layout is not one of the ImageNet layouts; the message says what was expected where."""


class Sample(NamedTuple):
    """One image: its file, its class index and its object box ``(x_min, y_min, x_max, y_max)`` in pixels, if known."""

    path: Path
    label: int
    box: BoxT | None


def _image_root(root: Path) -> Path:
    """The folder holding ``train/`` and ``val/``: ``root``, or ``root/ILSVRC/Data/CLS-LOC`` for the Kaggle download."""
    kaggle = root / KAGGLE_IMAGES
    return kaggle if not (root / "train").is_dir() and kaggle.is_dir() else root


def _entries(folder: Path) -> list[os.DirEntry]:
    """The non-hidden entries of ``folder``, sorted by name (one folder's listing, never the whole tree)."""
    with os.scandir(folder) as it:
        return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)


def _class_folders(split_dir: Path, split: str) -> list[os.DirEntry]:
    """The class folders of ``split_dir`` (``train/`` or a foldered ``val/``); none -> :class:`LayoutError`."""
    if not split_dir.is_dir():
        raise LayoutError(f"{split_dir}: expected the {split} folder ({split}/<wnid>/*.JPEG), found none")
    entries = _entries(split_dir)
    folders = [e for e in entries if _is_dir(e)]
    if not folders:
        loose = f"; found {len(entries)} files directly in {split}/" if entries else ""
        raise LayoutError(f"{split_dir}: expected one folder per class ({split}/<wnid>/*.JPEG), found none{loose}")
    return folders


def read_classes(root: str | Path) -> list[tuple[str, str]]:
    """``[(wnid, name), ...]`` in class-index order.

    From ``LOC_synset_mapping.txt`` when present, else the sorted folder names of ``train/``
    (name = wnid).
    """
    root = Path(root)
    mapping = root / SYNSET_MAPPING
    if mapping.is_file():
        classes = []
        for n, line in enumerate(mapping.read_text().splitlines(), 1):
            if line.strip():
                wnid, _, name = line.strip().partition(" ")
                if not (wnid.startswith("n") and wnid[1:].isdigit()):
                    raise LayoutError(f"{mapping}:{n}: expected '<wnid> <name>' (wnid like n01440764), got {line!r}")
                classes.append((wnid, name.strip() or wnid))
        if not classes:
            raise LayoutError(f"{mapping}: expected one '<wnid> <name>' line per class, found none")
        return classes
    return [(e.name, e.name) for e in _class_folders(_image_root(root) / "train", "train")]


def _read_solution(path: Path) -> dict[str, str]:
    """Kaggle ``LOC_*_solution.csv`` -> ``{ImageId: PredictionString}`` (``{}`` when absent)."""
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header != ["ImageId", "PredictionString"]:
            raise LayoutError(f"{path}: expected the header 'ImageId,PredictionString', got {header}")
        return {row[0]: row[1] for row in reader if len(row) >= 2}


def _first_box(prediction: str | None, wnid: str) -> BoxT | None:
    """The first box of class ``wnid`` in a PredictionString ``"<wnid> x0 y0 x1 y1 <wnid> ..."``."""
    tokens = (prediction or "").split()
    for i in range(0, len(tokens) - 4, 5):
        if tokens[i] == wnid:
            x0, y0, x1, y1 = map(float, tokens[i + 1 : i + 5])
            return (x0, y0, x1, y1)
    return None


def listed_file(entry: os.DirEntry | Path) -> bool:
    """Whether a folder entry is listed as an image to decode: a regular file, or a symbolic link
    that leads to no folder (dangling, or a loop), so that decoding reports it with its reason
    instead of it vanishing unnoticed. Folders (symlinked or not) are never listed."""
    try:
        return entry.is_file() or (entry.is_symlink() and not entry.is_dir())
    except OSError:  # a symlink loop: os.DirEntry.is_file raises ELOOP (pathlib returns False)
        return entry.is_symlink()


def _is_dir(entry: os.DirEntry) -> bool:
    """``entry.is_dir()``, False for a symlink loop (where ``os.DirEntry.is_dir`` raises ELOOP)."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def _files(folder: Path) -> Iterator[os.DirEntry]:
    """The listed (:func:`listed_file`), non-hidden files of ``folder``, sorted by name."""
    return (e for e in _entries(folder) if listed_file(e))


def _iter_folders(
    split_dir: Path, split: str, classes: list[tuple[str, str]], solution: dict[str, str]
) -> Iterator[Sample]:
    """The samples of a foldered split (``<split>/<wnid>/*``), folder by folder."""
    index = {wnid: i for i, (wnid, _) in enumerate(classes)}
    for folder in _class_folders(split_dir, split):
        if folder.name not in index:
            raise LayoutError(
                f"{folder.path}: class folder {folder.name!r} is not one of the {len(index)} class wnids "
                f"(from {SYNSET_MAPPING}, else the train/ folders; expected {split}/<wnid>/*.JPEG)"
            )
        for f in _files(Path(folder.path)):
            stem = f.name.rsplit(".", 1)[0]
            yield Sample(Path(f.path), index[folder.name], _first_box(solution.get(stem), folder.name))


def _flat_val_labels(
    root: Path, val_dir: Path, classes: list[tuple[str, str]], solution: dict[str, str]
) -> tuple[dict[str, int], list[str]]:
    """Labels of a flat ``val/``: ``({file name or stem: class index}, [label files looked for])``."""
    index = {wnid: i for i, (wnid, _) in enumerate(classes)}
    looked = [str(root / "LOC_val_solution.csv")]
    if solution:
        labels = {}
        for stem, prediction in solution.items():
            wnid = prediction.split(maxsplit=1)[0] if prediction.strip() else ""
            if wnid in index:
                labels[stem] = index[wnid]
        return labels, looked
    sorted_wnids = sorted(index)
    for txt in (root / "val.txt", val_dir / "val.txt"):
        looked.append(str(txt))
        if txt.is_file():
            labels = {}
            for n, line in enumerate(txt.read_text().splitlines(), 1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 2 or not parts[1].isdigit() or int(parts[1]) >= len(sorted_wnids):
                    expected = f"'<filename> <class index 0..{len(sorted_wnids) - 1}>'"
                    raise LayoutError(f"{txt}:{n}: expected {expected}, got {line!r}")
                labels[parts[0]] = index[sorted_wnids[int(parts[1])]]
            return labels, looked
    return {}, looked


def iter_split(root: str | Path, split: str) -> Iterator[Sample]:
    """Stream the :class:`Sample` s of ``split`` (``"train"`` or ``"val"``) in a fixed (sorted) order.

    Classes are taken from :func:`read_classes`; boxes from ``LOC_<split>_solution.csv`` (the
    first box of the image's class), else None. Raises :class:`LayoutError` for a missing split
    folder, images where class folders are expected, a class folder with an unknown wnid, or a
    flat val image without a label.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    root = Path(root)
    classes = read_classes(root)
    solution = _read_solution(root / f"LOC_{split}_solution.csv")
    split_dir = _image_root(root) / split
    if split == "train" or _is_foldered(split_dir):
        yield from _iter_folders(split_dir, split, classes, solution)
        return
    labels, looked = _flat_val_labels(root, split_dir, classes, solution)
    for f in _files(split_dir):
        if f.name == "val.txt":
            continue
        stem = f.name.rsplit(".", 1)[0]
        label = labels.get(f.name, labels.get(stem))
        if label is None:
            raise LayoutError(
                f"{f.path}: flat val image without a label (looked for it in {', '.join(looked)}; "
                "or use the foldered layout val/<wnid>/*.JPEG)"
            )
        yield Sample(Path(f.path), label, _first_box(solution.get(stem), classes[label][0]))


def _is_foldered(val_dir: Path) -> bool:
    """Whether ``val/`` holds class folders (else it is flat); a missing ``val/`` -> :class:`LayoutError`."""
    if not val_dir.is_dir():
        raise LayoutError(f"{val_dir}: expected the val folder (val/<wnid>/*.JPEG or val/*.JPEG), found none")
    with os.scandir(val_dir) as it:
        return any(_is_dir(e) and not e.name.startswith(".") for e in it)


def count_split(root: str | Path, split: str) -> int:
    """How many files :func:`iter_split` yields for ``split``, counted without reading labels."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    split_dir = _image_root(Path(root)) / split
    if split == "train" or _is_foldered(split_dir):
        return sum(sum(1 for _ in _files(Path(d.path))) for d in _class_folders(split_dir, split))
    return sum(1 for f in _files(split_dir) if f.name != "val.txt")
