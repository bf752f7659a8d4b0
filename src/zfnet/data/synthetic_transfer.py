"""Synthetic transfer datasets in the real Caltech-101, Caltech-256 and PASCAL VOC 2012 layouts.

The transfer experiments (docs/paper.md Tables 4-6) need datasets whose classes the pretrained model
has never been trained on, or transfer is no test. The classes here are drawn with the
generator of :mod:`zfnet.data.synthetic` (same clutter, placement, colours, noise) but are
*new categories*: the drawn shapes the pretraining did not use (``hexagon``, ``tee``, ...) and
*patterned* shapes, e.g. ``striped_star`` or ``dotted_heart``: the shape with stripes or a grid of
dots cut out of it, so the background shows through (familiar parts, new categories, as
Caltech's categories relate to ImageNet's). :func:`transfer_classes` lists them, excluding the
pretraining classes.

Layouts, as the real archives unpack and as :mod:`torchvision.datasets` reads them
(``Caltech101(root)``, ``Caltech256(root)``, ``VOCDetection(root, year="2012")``)::

    caltech101/101_ObjectCategories/<class>/image_NNNN.jpg     + BACKGROUND_Google/ (clutter only)
    caltech256/256_ObjectCategories/NNN.<class>/NNN_NNNN.jpg   + <K+1>.clutter/ (as 257.clutter)
    VOCdevkit/VOC2012/JPEGImages/2012_NNNNNN.jpg
    VOCdevkit/VOC2012/Annotations/2012_NNNNNN.xml              objects with names and boxes
    VOCdevkit/VOC2012/ImageSets/Main/{train,val,trainval}.txt
    VOCdevkit/VOC2012/ImageSets/Main/<class>_{train,val,trainval}.txt   "<id>  1" | "<id> -1" | "<id>  0"

Caltech classes hold a varying number of images (real Caltech-101: 31 to 800), a fraction of
them grayscale JPEGs as in the real sets. VOC scenes are a 2 x 2 grid of cells, 1 to 3 of them
holding an object of one of the 20 VOC classes (``aeroplane`` ... ``tvmonitor``, each mapped to a
drawn transfer class), the others clutter only; an object is marked ``difficult`` with
probability 0.05 (label 0 in the class files when it is the class's only instance, as in VOC).
Every image is drawn from its own generator seeded by ``(seed, dataset, index)``.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
from PIL import Image
from tqdm import tqdm

from zfnet.config import ConfigError, TransferSyntheticConfig
from zfnet.data.caltech import CALTECH101_EXCLUDED
from zfnet.data.synthetic import (
    CLASS_NAMES,
    JPEG_QUALITY,
    SHAPES,
    Polygons,
    render_background,
    render_image,
)
from zfnet.data.voc import VOC_CLASSES
from zfnet.io import atomic_folder

PATTERNS = ("striped", "dotted")
DIFFICULT = 0.05  # probability that a VOC object is marked difficult
CALTECH101_BACKGROUND = CALTECH101_EXCLUDED[0]


@dataclass(frozen=True)
class Patterned:
    """Polygon function (like the values of :data:`~zfnet.data.synthetic.SHAPES`): ``shape`` with
    ``pattern`` (``striped``: parallel bars at a random angle; ``dotted``: a grid of round holes)
    cut out of it, scaled to the shape's own box."""

    shape: str
    pattern: str

    def __call__(self, rng: np.random.Generator) -> Polygons:
        polygons = SHAPES[self.shape](rng)
        filled = np.concatenate([p for p, fill in polygons if fill])
        lo, hi = filled.min(axis=0), filled.max(axis=0)
        centre, span = (lo + hi) / 2, float((hi - lo).max())
        if self.pattern == "striped":
            period = rng.uniform(0.26, 0.34) * span
            a = rng.uniform(0.0, np.pi)
            d, n = np.array([np.cos(a), np.sin(a)]), np.array([-np.sin(a), np.cos(a)])
            half_w, length = 0.22 * period, span
            holes = [
                np.stack([c + length * d + half_w * n, c - length * d + half_w * n,
                          c - length * d - half_w * n, c + length * d - half_w * n])
                for t in np.arange(-span, span, period) + rng.uniform(0, period)
                for c in [centre + t * n]
            ]  # fmt: skip
        else:
            step = rng.uniform(0.24, 0.3) * span
            offset = rng.uniform(0, step, 2)
            grid = np.arange(-span, span, step)
            holes = [_circle_at(centre + offset + (x, y), 0.27 * step) for x in grid for y in grid]
        return polygons + [(h, False) for h in holes]


def _circle_at(c: np.ndarray, r: float, n: int = 16) -> np.ndarray:
    """``(n, 2)`` points on the circle of radius ``r`` around ``c``."""
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    return np.stack([c[0] + r * np.cos(t), c[1] + r * np.sin(t)], axis=1)


def transfer_classes(count: int, exclude: tuple[str, ...] = ()) -> list[str]:
    """The first ``count`` transfer class names, none of them in ``exclude`` (the pretraining classes).

    Order: plain shapes not in ``exclude``, then ``<pattern>_<shape>`` alternating the patterns over
    the shapes (``striped_disc``, ``dotted_square``, ...), then the other pattern of each shape.
    """
    names = [s for s in CLASS_NAMES if s not in exclude]
    names += [f"{PATTERNS[i % 2]}_{s}" for i, s in enumerate(CLASS_NAMES)]
    names += [f"{PATTERNS[(i + 1) % 2]}_{s}" for i, s in enumerate(CLASS_NAMES)]
    if count > len(names):
        raise ConfigError(f"transfer.synthetic: at most {len(names)} transfer classes can be drawn, asked for {count}")
    return names[:count]


def drawing(name: str) -> str | Patterned:
    """What :func:`~zfnet.data.synthetic.render_image` draws for a transfer class name."""
    pattern, _, shape = name.partition("_")
    return Patterned(shape, pattern) if pattern in PATTERNS and shape in SHAPES else name


def _draw(job: tuple) -> None:
    """Write one Caltech image: ``(path, seed, class name or None for clutter, min_side, max_side, grayscale)``."""
    path, seed, name, min_side, max_side, gray = job
    rng = np.random.default_rng(seed)
    size = tuple(int(s) for s in rng.integers(min_side, max_side + 1, 2))
    image = render_background(rng, size) if name is None else render_image(rng, drawing(name), size)[0]
    (image.convert("L") if gray else image).save(path, "JPEG", quality=JPEG_QUALITY)


def _draw_scene(job: tuple) -> list[tuple[int, tuple[int, int, int, int], bool]]:
    """Write one VOC scene: ``(path, seed, min_side, max_side, drawn)``, ``drawn[c]`` the transfer
    class drawn for VOC class ``c``; returns ``[(class, box, difficult)]``."""
    path, seed, min_side, max_side, drawn = job
    rng = np.random.default_rng(seed)
    cw, ch = (int(s) for s in rng.integers(min_side, max_side + 1, 2))
    cells = rng.permutation(4)[: rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2])]
    scene = Image.new("RGB", (2 * cw, 2 * ch))
    objects = []
    for cell in range(4):
        x0, y0 = (cell % 2) * cw, (cell // 2) * ch
        if cell in cells:
            c = int(rng.integers(len(VOC_CLASSES)))
            image, (bx0, by0, bx1, by1) = render_image(rng, drawing(drawn[c]), (cw, ch))
            objects.append((c, (x0 + bx0, y0 + by0, x0 + bx1, y0 + by1), bool(rng.random() < DIFFICULT)))
        else:
            image = render_background(rng, (cw, ch))
        scene.paste(image, (x0, y0))
    scene.save(path, "JPEG", quality=JPEG_QUALITY)
    return objects


def _run(fn, jobs: list, workers: int, desc: str, progress: bool) -> list:
    with Pool(workers) if workers > 1 else nullcontext() as pool:
        results = pool.imap(fn, jobs, chunksize=16) if pool else map(fn, jobs)
        return list(tqdm(results, total=len(jobs), desc=desc, unit="img", disable=None if progress else True))


def _counts(rng: np.random.Generator, classes: int, lo_hi: list[int]) -> list[int]:
    return [int(n) for n in rng.integers(lo_hi[0], lo_hi[1] + 1, classes)]


def write_caltech101(root: Path, cfg: TransferSyntheticConfig, exclude: tuple[str, ...], workers: int = 1,
                     progress: bool = True) -> dict:
    """``root/101_ObjectCategories/<class>/image_NNNN.jpg`` (+ ``BACKGROUND_Google``); returns counts."""
    names = transfer_classes(cfg.caltech101_classes, exclude)
    counts = _counts(np.random.default_rng([cfg.seed, 101]), len(names), cfg.caltech101_images)
    folders = [(n, k) for n, k in zip(names, counts)] + [(CALTECH101_BACKGROUND, cfg.background_images)]
    jobs = []
    for c, (name, k) in enumerate(folders):
        folder = root / "101_ObjectCategories" / name
        folder.mkdir(parents=True)
        drawn = None if name == CALTECH101_BACKGROUND else name
        for i in range(1, k + 1):
            seed = [cfg.seed, 101, c, i]
            gray = np.random.default_rng(seed + [1]).random() < cfg.grayscale
            jobs.append((folder / f"image_{i:04d}.jpg", seed, drawn, cfg.min_side, cfg.max_side, gray))
    _run(_draw, jobs, workers, "synthetic caltech101", progress)
    return {"classes": names, "images": sum(counts), "background": cfg.background_images}


def write_caltech256(root: Path, cfg: TransferSyntheticConfig, exclude: tuple[str, ...], workers: int = 1,
                     progress: bool = True) -> dict:
    """``root/256_ObjectCategories/NNN.<class>/NNN_NNNN.jpg`` (+ ``<K+1>.clutter``); returns counts."""
    names = transfer_classes(cfg.caltech256_classes, exclude)
    counts = _counts(np.random.default_rng([cfg.seed, 256]), len(names), cfg.caltech256_images)
    folders = [(n, k) for n, k in zip(names, counts)] + [("clutter", cfg.background_images)]
    jobs = []
    for c, (name, k) in enumerate(folders):
        folder = root / "256_ObjectCategories" / f"{c + 1:03d}.{name}"
        folder.mkdir(parents=True)
        for i in range(1, k + 1):
            seed = [cfg.seed, 256, c, i]
            gray = np.random.default_rng(seed + [1]).random() < cfg.grayscale
            drawn = None if name == "clutter" else name
            jobs.append((folder / f"{c + 1:03d}_{i:04d}.jpg", seed, drawn, cfg.min_side, cfg.max_side, gray))
    _run(_draw, jobs, workers, "synthetic caltech256", progress)
    return {"classes": names, "images": sum(counts), "background": cfg.background_images}


def _annotation(image_id: str, size: tuple[int, int], objects: list) -> ET.ElementTree:
    """A VOC XML annotation; boxes in VOC's 1-based inclusive pixel coordinates."""
    ann = ET.Element("annotation")
    ET.SubElement(ann, "folder").text = "VOC2012"
    ET.SubElement(ann, "filename").text = f"{image_id}.jpg"
    ET.SubElement(ET.SubElement(ann, "source"), "database").text = "zfnet synthetic"
    size_el = ET.SubElement(ann, "size")
    for tag, v in zip(("width", "height", "depth"), (*size, 3)):
        ET.SubElement(size_el, tag).text = str(v)
    ET.SubElement(ann, "segmented").text = "0"
    for c, (x0, y0, x1, y1), difficult in objects:
        obj = ET.SubElement(ann, "object")
        ET.SubElement(obj, "name").text = VOC_CLASSES[c]
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = str(int(difficult))
        box = ET.SubElement(obj, "bndbox")
        for tag, v in zip(("xmin", "ymin", "xmax", "ymax"), (x0 + 1, y0 + 1, x1, y1)):
            ET.SubElement(box, tag).text = str(v)
    return ET.ElementTree(ann)


def write_voc2012(root: Path, cfg: TransferSyntheticConfig, exclude: tuple[str, ...], workers: int = 1,
                  progress: bool = True) -> dict:
    """``root/VOCdevkit/VOC2012/`` with JPEGImages, Annotations and ImageSets/Main (module docstring)."""
    drawn = transfer_classes(len(VOC_CLASSES), exclude)
    voc = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (voc / sub).mkdir(parents=True)
    ids = [f"2012_{i:06d}" for i in range(1, cfg.voc_images + 1)]
    jobs = [(voc / "JPEGImages" / f"{i}.jpg", [cfg.seed, 2012, k], cfg.min_side, cfg.max_side, tuple(drawn))
            for k, i in enumerate(ids)]
    scenes = _run(_draw_scene, jobs, workers, "synthetic voc2012", progress)
    for image_id, job, objects in zip(ids, jobs, scenes):
        with Image.open(job[0]) as im:
            size = im.size
        _annotation(image_id, size, objects).write(voc / "Annotations" / f"{image_id}.xml")
    half = len(ids) // 2
    splits = {"train": list(range(half)), "val": list(range(half, len(ids)))}
    splits["trainval"] = splits["train"] + splits["val"]
    main = voc / "ImageSets" / "Main"
    for split, members in splits.items():
        (main / f"{split}.txt").write_text("".join(f"{ids[k]}\n" for k in members))
        for c, name in enumerate(VOC_CLASSES):
            lines = []
            for k in members:
                present = [d for cc, _, d in scenes[k] if cc == c]
                label = -1 if not present else (0 if all(present) else 1)
                lines.append(f"{ids[k]} {label:2d}\n")
            (main / f"{name}_{split}.txt").write_text("".join(lines))
    return {"classes": list(VOC_CLASSES), "drawn_as": drawn, "images": len(ids),
            "objects": sum(len(s) for s in scenes)}


def write_transfer(root: str | Path, cfg: TransferSyntheticConfig, exclude: tuple[str, ...] = (),
                   workers: int = 1, progress: bool = True) -> dict:
    """Write the three datasets under ``root`` (``caltech101/``, ``caltech256/``, ``VOCdevkit/``).

    ``exclude``: the pretraining classes, never used as transfer classes. Written into a sibling
    temp folder that replaces ``root`` at the end (an interrupted run leaves no dataset at ``root``).
    Returns ``{"caltech101": {...}, "caltech256": {...}, "voc2012": {...}, "seconds"}``.
    """
    start = time.perf_counter()
    with atomic_folder(root) as tmp:
        summary = {
            "caltech101": write_caltech101(tmp / "caltech101", cfg, exclude, workers, progress),
            "caltech256": write_caltech256(tmp / "caltech256", cfg, exclude, workers, progress),
            "voc2012": write_voc2012(tmp, cfg, exclude, workers, progress),
        }
    return {**summary, "seconds": round(time.perf_counter() - start, 2)}
