"""Reader for the PASCAL VOC 2012 classification layout (real or synthetic).

``root`` is ``VOC2012/`` itself or any folder with it at most 3 levels down (the real
``VOCtrainval_11-May-2012.tar`` unpacks to ``VOCdevkit/VOC2012``, which is also where
``torchvision.datasets.VOCDetection(root, year="2012")`` looks)::

    JPEGImages/<id>.jpg
    Annotations/<id>.xml                       objects: name, difficult, bndbox (1-based, inclusive)
    ImageSets/Main/<split>.txt                 image ids of the split (train, val, trainval)
    ImageSets/Main/<class>_<split>.txt         "<id> <label>": 1 present, -1 absent, 0 only "difficult"

Classification labels come from the class files (as the VOC devkit evaluates them); the XML
annotations (parsed with :mod:`defusedxml`: the files are input we did not write) give the boxes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from defusedxml import DefusedXmlException
from defusedxml import ElementTree as SafeET

from zfnet.data.caltech import find_folder
from zfnet.data.imagenet import LayoutError

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip


@dataclass(frozen=True)
class VocObject:
    name: str
    difficult: bool
    box: tuple[float, float, float, float]  # (x_min, y_min, x_max, y_max), 0-based continuous pixels


@dataclass(frozen=True)
class VocSplit:
    """One split: ``paths[i]`` has ``targets[i]``, an ``(N, 20)`` int8 array of 1 / 0 (difficult) / -1."""

    classes: tuple[str, ...]
    ids: list[str]
    paths: list[Path]
    targets: np.ndarray


def voc_root(root: str | Path) -> Path:
    """The ``VOC2012`` folder at or below ``root``; :class:`LayoutError` if none."""
    return find_folder(root, "VOC2012")


def read_split(root: str | Path, split: str) -> VocSplit:
    """The images and 20-class labels of ``split`` (``train``, ``val`` or ``trainval``)."""
    voc = voc_root(root)
    main = voc / "ImageSets" / "Main"
    split_file = main / f"{split}.txt"
    if not split_file.is_file():
        raise LayoutError(f"{voc}: expected ImageSets/Main/{split}.txt, found none")
    ids = split_file.read_text().split()
    index = {image_id: i for i, image_id in enumerate(ids)}
    targets = np.full((len(ids), len(VOC_CLASSES)), -1, dtype=np.int8)
    for c, name in enumerate(VOC_CLASSES):
        path = main / f"{name}_{split}.txt"
        if not path.is_file():
            raise LayoutError(f"{voc}: expected ImageSets/Main/{name}_{split}.txt, found none")
        for line_no, line in enumerate(path.read_text().splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or parts[0] not in index or parts[1] not in ("1", "0", "-1"):
                raise LayoutError(f"{path}:{line_no}: expected '<id of {split}.txt> <1|0|-1>', got {line!r}")
            targets[index[parts[0]], c] = int(parts[1])
    if not (voc / "JPEGImages").is_dir():
        raise LayoutError(f"{voc}: expected the images as JPEGImages/<id>.jpg, found no JPEGImages folder")
    paths = [voc / "JPEGImages" / f"{i}.jpg" for i in ids]
    return VocSplit(VOC_CLASSES, ids, paths, targets)


def read_annotation(path: str | Path) -> list[VocObject]:
    """The objects of one ``Annotations/<id>.xml``; boxes converted to 0-based continuous pixels."""
    try:
        tree = SafeET.parse(str(path))
    except DefusedXmlException as exc:  # entity declarations (billion laughs), external entities, DTDs
        raise LayoutError(f"{path}: refused a hostile VOC annotation ({type(exc).__name__}: {exc})") from None
    except (SafeET.ParseError, OSError) as exc:
        raise LayoutError(f"{path}: not a readable VOC annotation ({exc})") from None
    if tree.getroot().tag != "annotation":
        raise LayoutError(f"{path}: expected a VOC annotation (<annotation> root), found <{tree.getroot().tag}>")
    objects = []
    for obj in tree.getroot().iter("object"):
        box = obj.find("bndbox")
        try:
            x0, y0, x1, y1 = (float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        except (AttributeError, TypeError, ValueError):
            raise LayoutError(f"{path}: object without a numeric bndbox") from None
        objects.append(VocObject(obj.findtext("name", "").strip(), obj.findtext("difficult", "0").strip() == "1",
                                 (x0 - 1, y0 - 1, x1, y1)))
    return objects
