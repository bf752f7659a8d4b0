"""Readers for the Caltech-101 and Caltech-256 on-disk layouts (real or synthetic).

- Caltech-101: ``101_ObjectCategories/<class>/image_NNNN.jpg``; ``BACKGROUND_Google`` is not an
  object class and is excluded, as is standard (101 classes remain of the real 102 folders).
- Caltech-256: ``256_ObjectCategories/NNN.<class>/NNN_NNNN.jpg``; ``257.clutter`` (any
  ``NNN.clutter``) is excluded (256 classes remain).

``root`` may be the category folder itself, or any folder with it at most 3 levels down (the
real archives unpack to ``caltech-101/101_ObjectCategories``; torchvision expects
``<root>/caltech101/101_ObjectCategories``). Classes are the sorted folder names (the class index
is the position among the kept folders). Every regular, non-hidden file of a class folder is
listed whatever its suffix (real Caltech-256 has a few stray files), and so is a dangling or
looping symbolic link: decoding later decides, and unreadable files are skipped with a reason. Class names are the folder names without the
``NNN.`` prefix for Caltech-256.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from zfnet.data.imagenet import LayoutError, Sample, listed_file

CALTECH101_DIR = "101_ObjectCategories"
CALTECH256_DIR = "256_ObjectCategories"
CALTECH101_EXCLUDED = ("BACKGROUND_Google",)
CALTECH256_EXCLUDED = ("clutter",)  # folder 257.clutter


@dataclass(frozen=True)
class Categories:
    """A dataset of one-label images: ``classes[i]`` is the name of label ``i``; ``samples`` sorted by class, then file."""

    classes: list[str]
    samples: list[Sample]

    def labels(self) -> list[int]:
        return [s.label for s in self.samples]


def find_folder(root: str | Path, name: str, depth: int = 3) -> Path:
    """``root`` if it is called ``name``, else the first folder called ``name`` at most ``depth`` levels below it.

    Raises :class:`LayoutError` if there is none.
    """
    root = Path(root)
    if root.name == name and root.is_dir():
        return root
    level = [root] if root.is_dir() else []
    for _ in range(depth):
        level = sorted(p for d in level for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
        for p in level:
            if p.name == name:
                return p
    raise LayoutError(f"{root}: expected a folder {name}/ (at most {depth} levels down), found none")


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if listed_file(p) and not p.name.startswith("."))


def _read(folder: Path, excluded: tuple[str, ...], strip_number: bool) -> Categories:
    classes, samples = [], []
    for d in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        name = d.name.split(".", 1)[1] if strip_number and "." in d.name else d.name
        if name in excluded:
            continue
        files = _files(d)
        if not files:
            continue
        samples += [Sample(f, len(classes), None) for f in files]
        classes.append(name)
    if len(classes) < 2:
        loose = sum(1 for p in folder.iterdir() if listed_file(p) and not p.name.startswith("."))
        raise LayoutError(f"{folder}: expected at least 2 class folders of images ({folder.name}/<class>/<image>), "
                          f"found {len(classes)}" + (f"; found {loose} files directly in {folder.name}/" if loose else ""))
    return Categories(classes, samples)


def read_caltech101(root: str | Path) -> Categories:
    """The Caltech-101 images under ``root`` (module docstring), ``BACKGROUND_Google`` excluded."""
    return _read(find_folder(root, CALTECH101_DIR), CALTECH101_EXCLUDED, strip_number=False)


def read_caltech256(root: str | Path) -> Categories:
    """The Caltech-256 images under ``root`` (module docstring), the clutter class excluded."""
    return _read(find_folder(root, CALTECH256_DIR), CALTECH256_EXCLUDED, strip_number=True)
