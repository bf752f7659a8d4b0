"""Procedural images of drawn objects on cluttered backgrounds, written in real dataset layouts.

No dataset can be downloaded here, so the pipeline runs on images drawn by this module: one
object per image at a random position, scale, rotation (at most 30 degrees: objects are upright, as
in photographs) and colour, with shading, on a background of a colour gradient, smooth mottling,
thin lines, small patches and noise. The object's bounding box is known exactly, so localisation
results (occlusion maps, deconvnet projections) can be checked against it.

The classes (:data:`CLASS_NAMES`, in this order; a dataset of ``K`` classes uses the first ``K``)
are chosen so that the paper's findings can appear in them (docs/paper.md):

- **rotation-symmetric controls** (``disc``, ``ring``: any rotation; ``square``, ``plus``: 90
  degrees; ``star``: 72), and **upright classes** (``heart``, ``tee``, ``house``, ``keyhole``) that
  no rotation beyond the training range nor a horizontal flip turns into a training image: Fig. 5's
  "not invariant to rotation, except for rotation-symmetric objects" (:data:`ROTATION_SYMMETRY`);
- **face breeds** (``face_round``, ``face_square``, ``face_triangle``): the same head and mouth,
  opaque eyes (light, with a dark pupil) and a dark nose whose *shape* alone tells the breeds
  apart, so a network must encode the parts (Fig. 8, Table 1; :func:`render_face`);
- **fine textures** (``stripes``, ``checks``): an ellipse filled with a grating or a checkerboard,
  otherwise like ``disc``, of a period of 2-4 pixels at the ablation scale, which a stride-4 first
  layer aliases (Table 2, Fig. 6; :data:`TEXTURES`);
- further shapes used only by the transfer datasets (``triangle``, ``arrow``, ...).

Three layers, each reusable by the writers of other layouts:

- the shape registry :data:`SHAPES`: name -> a function ``rng -> [(points, paint), ...]`` giving
  polygons in unit coordinates (``points`` is ``(K, 2)`` float, x right and y down; ``paint`` True
  paints the object, False cuts a hole, an RGB triple paints an opaque part of that colour on top,
  e.g. an eye), drawn in order; :data:`TEXTURES`: name -> a grating that modulates the object's fill;
- :func:`render_image`: one RGB image of one shape and its box;
- layout writers: :func:`write_imagenet` (``train/<wnid>/``, ``val/``, Kaggle ``LOC_*`` files and
  torchvision's ``meta.bin``).

Every image is drawn from its own generator seeded by ``(seed, split, index)``, so the same
config gives byte-identical files whatever the order or number of processes.

Boxes are ``(x_min, y_min, x_max, y_max)`` in pixels of the written image, continuous
coordinates (pixel ``i`` spans ``[i, i + 1)``): the object covers the pixels
``x_min <= x < x_max``, ``y_min <= y < y_max``, outline included.
"""

from __future__ import annotations

import csv
import time
from contextlib import nullcontext
from multiprocessing import Pool
from pathlib import Path
from typing import Callable, NamedTuple, Union

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

from zfnet.config import ConfigError, SyntheticConfig
from zfnet.io import atomic_folder

Paint = Union[bool, tuple[float, float, float]]  # True: the object's colour, False: a hole, RGB: a part
Polygons = list[tuple[np.ndarray, Paint]]
Box = tuple[int, int, int, int]

SUPERSAMPLE = 4  # the object mask is drawn at 4x and box-filtered down: anti-aliased edges
ROTATION_DEG = 30.0  # objects are rotated by U(-30, 30) degrees: upright-ish, as in photographs
OBJECT_FRACTION = (0.4, 0.7)  # the object's larger box side as a fraction of the image's shorter side
ASPECT = (0.8, 1.25)  # random stretch of the object (width / height)
JPEG_QUALITY = 90
WNID_BASE = 99000001  # synthetic WordNet ids: n99000001, n99000002, ...


def _circle(cx: float, cy: float, r: float, n: int = 72) -> np.ndarray:
    """``(n, 2)`` points on a circle."""
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)


def _regular(n: int, r: float = 1.0, phase_deg: float = -90.0) -> np.ndarray:
    """``(n, 2)`` corners of a regular n-gon, the first corner at ``phase_deg`` (-90: straight up)."""
    t = np.deg2rad(phase_deg) + np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def _poly(*xy: float) -> np.ndarray:
    """``_poly(x0, y0, x1, y1, ...)`` -> ``(K, 2)`` points."""
    return np.asarray(xy, dtype=float).reshape(-1, 2)


def disc(rng: np.random.Generator) -> Polygons:
    return [(_circle(0, 0, 1), True)]


def square(rng: np.random.Generator) -> Polygons:
    return [(_poly(-1, -1, 1, -1, 1, 1, -1, 1), True)]


def triangle(rng: np.random.Generator) -> Polygons:
    return [(_regular(3), True)]


def star(rng: np.random.Generator) -> Polygons:
    inner = rng.uniform(0.38, 0.5)
    outer, inner_pts = _regular(5), _regular(5, inner, -90.0 + 36.0)
    return [(np.stack([outer, inner_pts], axis=1).reshape(-1, 2), True)]


def plus(rng: np.random.Generator) -> Polygons:
    w = rng.uniform(0.28, 0.38)  # half-width of each arm
    return [(_poly(-w, -1, w, -1, w, -w, 1, -w, 1, w, w, w, w, 1, -w, 1, -w, w, -1, w, -1, -w, -w, -w), True)]


def ring(rng: np.random.Generator) -> Polygons:
    return [(_circle(0, 0, 1), True), (_circle(0, 0, rng.uniform(0.5, 0.62)), False)]


def crescent(rng: np.random.Generator) -> Polygons:
    d = rng.uniform(0.45, 0.6)
    return [(_circle(0, 0, 1), True), (_circle(d, -0.15 * d, rng.uniform(0.85, 0.95)), False)]


def heart(rng: np.random.Generator) -> Polygons:
    t = np.linspace(0.0, 2.0 * np.pi, 96, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return [(np.stack([x, y], axis=1), True)]


def arrow(rng: np.random.Generator) -> Polygons:
    h = rng.uniform(0.2, 0.3)  # half-height of the shaft
    head_x, head_h = rng.uniform(0.0, 0.25), rng.uniform(0.75, 0.95)
    return [(_poly(-1, -h, head_x, -h, head_x, -head_h, 1, 0, head_x, head_h, head_x, h, -1, h), True)]


def lightning(rng: np.random.Generator) -> Polygons:
    j = rng.uniform(-0.1, 0.1)
    return [(_poly(-0.15, -1, 0.65, -1, 0.2 + j, -0.2, 0.7, -0.2, -0.45, 1, -0.05 + j, 0.12, -0.5, 0.12), True)]


EYE = (232.0, 232.0, 226.0)  # the opaque parts' colours: the same in every face, whatever the head's
PUPIL = (28.0, 24.0, 24.0)
NOSE = (70.0, 48.0, 44.0)
MOUTH = (40.0, 24.0, 24.0)


def _part(kind: str, centre: np.ndarray, rx: float, ry: float) -> np.ndarray:
    """``(K, 2)`` outline of a face part of shape ``kind`` (round | square | triangle) in the box
    ``centre +- (rx, ry)``; triangles point up."""
    if kind == "round":
        unit = _circle(0, 0, 1)
    elif kind == "square":
        unit = _poly(-1, -1, 1, -1, 1, 1, -1, 1)
    else:
        unit = _poly(0, -1, 1, 1, -1, 1)
    return centre + unit * (rx, ry)


def _face(kind: str, rng: np.random.Generator) -> Polygons:
    """A frontal face whose eyes (light, with a dark pupil of the same shape) and nose (dark) are
    of shape ``kind``; head and mouth are the same for every kind.

    The polygons are in the order of :data:`FACE_PARTS` (``left_eye`` is the eye on the image's
    left), so the parts can be located after placement (:func:`render_face`).
    """
    eye_x, eye_y = rng.uniform(0.3, 0.36), rng.uniform(-0.3, -0.22)
    eye_r = rng.uniform(0.15, 0.18)  # half-size of each eye
    nose_y, nose_r = rng.uniform(0.08, 0.16), rng.uniform(0.11, 0.14)
    mouth_y, mouth_w = rng.uniform(0.5, 0.56), rng.uniform(0.3, 0.38)
    polygons: Polygons = [(_circle(0, 0, 1) * (0.8, 1.0), True)]
    for side in (-1, 1):
        centre = np.array([side * eye_x, eye_y])
        polygons += [(_part(kind, centre, eye_r, eye_r), EYE), (_part(kind, centre, 0.45 * eye_r, 0.45 * eye_r), PUPIL)]
    polygons.append((_part(kind, np.array([0.0, nose_y]), nose_r, nose_r), NOSE))
    x = np.linspace(-mouth_w, mouth_w, 16)
    bend = 1.0 - (x / mouth_w) ** 2  # a smile: lower edge 0.14 below the corners, upper edge 0.04
    polygons.append((np.concatenate([np.stack([x, mouth_y + 0.14 * bend], 1),
                                     np.stack([x[::-1], mouth_y + 0.04 * bend[::-1]], 1)]), MOUTH))
    return polygons


def face_round(rng: np.random.Generator) -> Polygons:
    return _face("round", rng)


def face_square(rng: np.random.Generator) -> Polygons:
    return _face("square", rng)


def face_triangle(rng: np.random.Generator) -> Polygons:
    return _face("triangle", rng)


FACES = ("face_round", "face_square", "face_triangle")  # the breeds: they differ only in the parts' shape
FACE_PARTS: dict[str, int] = {"left_eye": 1, "right_eye": 3, "nose": 5}  # part -> index of its polygon in a face


def house(rng: np.random.Generator) -> Polygons:
    roof = rng.uniform(0.7, 0.9)  # height of the roof's peak above the walls' top
    door_w, door_h = rng.uniform(0.16, 0.22), rng.uniform(0.55, 0.75)
    return [(_poly(-0.8, 1, -0.8, 0, -1, 0, 0, -roof, 1, 0, 0.8, 0, 0.8, 1), True),
            (_poly(-door_w, 1, -door_w, 1 - door_h, door_w, 1 - door_h, door_w, 1), False)]


def keyhole(rng: np.random.Generator) -> Polygons:
    r = rng.uniform(0.42, 0.5)  # radius of the round top
    foot = rng.uniform(0.5, 0.6)  # half-width of the foot
    return [(_circle(0, -1 + r, r), True), (_poly(-0.45 * r, -1 + r, 0.45 * r, -1 + r, foot, 1, -foot, 1), True)]


def stripes(rng: np.random.Generator) -> Polygons:
    """An ellipse like :func:`disc`, its fill a grating (:data:`TEXTURES`)."""
    return disc(rng)


def checks(rng: np.random.Generator) -> Polygons:
    """An ellipse like :func:`disc`, its fill a checkerboard (:data:`TEXTURES`)."""
    return disc(rng)


def _grating(rng: np.random.Generator, shape: tuple[int, int], checker: bool) -> np.ndarray:
    """``(h, w)`` a fine periodic pattern in -1..1: a smoothed square wave of period
    :data:`TEXTURE_PERIOD` at a random angle and phase, or the product of two (a checkerboard)."""
    period, angle = rng.uniform(*TEXTURE_PERIOD), rng.uniform(0.0, np.pi)
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    u = xs * np.cos(angle) + ys * np.sin(angle)
    v = -xs * np.sin(angle) + ys * np.cos(angle)
    wave = lambda t: np.tanh(3.0 * np.sin(2.0 * np.pi * t / period + rng.uniform(0, 2 * np.pi)))  # noqa: E731
    return wave(u) * wave(v) if checker else wave(u)


# Period in pixels of the written image: 3.4-7.5 in the default run's 128-pixel images and 1.9-4.2
# at the ablation scale (72 pixels), where Table 2 compares the 7x7/2 and 11x11/4 first layers.
TEXTURE_PERIOD = (4.0, 7.5)
TEXTURES: dict[str, Callable[[np.random.Generator, tuple[int, int]], np.ndarray]] = {
    "stripes": lambda rng, shape: _grating(rng, shape, checker=False),
    "checks": lambda rng, shape: _grating(rng, shape, checker=True),
}
TEXTURE_CONTRAST = (0.35, 0.5)  # the pattern's amplitude relative to the fill colour


def hexagon(rng: np.random.Generator) -> Polygons:
    return [(_regular(6, phase_deg=0.0), True)]


def tee(rng: np.random.Generator) -> Polygons:
    bar, w = rng.uniform(0.35, 0.5), rng.uniform(0.2, 0.3)  # bar height, stem half-width
    return [(_poly(-1, -1, 1, -1, 1, -1 + bar, w, -1 + bar, w, 1, -w, 1, -w, -1 + bar, -1, -1 + bar), True)]


def hourglass(rng: np.random.Generator) -> Polygons:
    w = rng.uniform(0.1, 0.2)  # half-width of the waist
    return [(_poly(-1, -1, 1, -1, w, 0, 1, 1, -1, 1, -w, 0), True)]


def frame(rng: np.random.Generator) -> Polygons:
    r = rng.uniform(0.45, 0.6)
    return [(_poly(-1, -1, 1, -1, 1, 1, -1, 1), True), (_poly(-r, -r, r, -r, r, r, -r, r), False)]


def ell(rng: np.random.Generator) -> Polygons:
    t = rng.uniform(0.4, 0.6)  # thickness of both strokes
    return [(_poly(-1, -1, -1 + t, -1, -1 + t, 1 - t, 1, 1 - t, 1, 1, -1, 1), True)]


def semicircle(rng: np.random.Generator) -> Polygons:
    t = np.linspace(np.pi, 2.0 * np.pi, 48)
    return [(np.stack([np.cos(t), np.sin(t)], axis=1), True)]


SHAPES: dict[str, Callable[[np.random.Generator], Polygons]] = {
    f.__name__: f
    for f in (disc, ring, square, plus, star, heart, tee, house, keyhole, face_round, face_square, face_triangle,
              stripes, checks, triangle, crescent, arrow, lightning, hexagon, hourglass, frame, ell, semicircle)
}
CLASS_NAMES: tuple[str, ...] = tuple(SHAPES)  # class i of a synthetic dataset is CLASS_NAMES[i]

# Order of rotational symmetry (0: every angle). Classes not listed have none, and no flip maps
# their rotation by 60-300 degrees onto a training image: rotation must change their features.
ROTATION_SYMMETRY: dict[str, int] = {"disc": 0, "ring": 0, "stripes": 0, "checks": 0, "square": 4, "plus": 4,
                                     "star": 5, "triangle": 3, "hexagon": 6, "hourglass": 2, "frame": 4}
UPRIGHT: tuple[str, ...] = ("heart", "tee", "house", "keyhole", *FACES)  # asymmetric, never seen rotated


def wnid_for(i: int) -> str:
    """The synthetic WordNet id of class ``i``: ``n99000001`` for class 0."""
    return f"n{WNID_BASE + i:08d}"


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    """``(3,)`` float RGB in 0..255."""
    return rng.uniform(0.0, 255.0, 3)


def _mottle(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """``(h, w, 3)`` smooth colour variation (zero mean, a few to 20 levels): a coarse random grid,
    bicubically enlarged, as the slow variations of light and surface in photographs."""
    cells = rng.integers(3, 7, 2)
    coarse = np.clip(128 + 40 * rng.standard_normal((cells[1], cells[0], 3)), 0, 255).astype(np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC), dtype=np.float32)
    return (smooth - 128.0) * (rng.uniform(4.0, 20.0) / 40.0)


def _background(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """A smooth two-colour gradient along a random direction, mottled (:func:`_mottle`), with thin
    lines and small patches.

    The clutter's colours are random colours mixed half-and-half with the gradient's mean: visible,
    but with less contrast than the object gets (:func:`_contrasting_colour`).
    """
    c0, c1 = _random_colour(rng), _random_colour(rng)
    theta = rng.uniform(0.0, 2.0 * np.pi)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    t = xs * np.cos(theta) + ys * np.sin(theta)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    img = Image.fromarray(np.clip(c0 + (c1 - c0) * t[..., None] + _mottle(rng, w, h), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)

    def clutter_colour() -> tuple[int, ...]:
        return tuple(((_random_colour(rng) + (c0 + c1) / 2) / 2).astype(int))

    side = min(w, h)
    for _ in range(rng.integers(4, 11)):  # small blobs and patches
        bw, bh = rng.uniform(0.04, 0.12, 2) * side
        x, y = rng.uniform(-bw / 2, w - bw / 2), rng.uniform(-bh / 2, h - bh / 2)
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([x, y, x + bw, y + bh], fill=clutter_colour())
    for _ in range(rng.integers(3, 9)):  # thin lines
        x0, x1 = rng.uniform(0, w, 2)
        y0, y1 = rng.uniform(0, h, 2)
        draw.line([x0, y0, x1, y1], fill=clutter_colour(), width=int(rng.integers(1, 3)))
    return img


class Pose(NamedTuple):
    """How an object is placed: rotation drawn from ``U(-rotation_deg, rotation_deg)``, larger box side
    ``U(*fraction)`` of the image's shorter side, position uniform over the central ``shift``
    fraction of the free range (1: anywhere it fits, 0: centred)."""

    rotation_deg: float = ROTATION_DEG
    fraction: tuple[float, float] = OBJECT_FRACTION
    shift: float = 1.0


CANONICAL = Pose(rotation_deg=5.0, fraction=(0.6, 0.7), shift=0.25)  # "frontal pose": near-upright, centred, large


def _object_mask(
    rng: np.random.Generator, shape: str | Callable[[np.random.Generator], Polygons], w: int, h: int, pose: Pose = Pose()
) -> tuple[np.ndarray, list[tuple[np.ndarray, tuple[float, float, float]]], Polygons]:
    """One randomly placed, scaled, stretched, rotated ``shape`` (a key of :data:`SHAPES` or a
    polygon function like its values) in a ``w x h`` image.

    Returns the object's ``(h, w)`` coverage in 0..1 (its parts included), its opaque parts as
    ``[(coverage (h, w), RGB)]`` in drawing order, and its polygons in pixel coordinates.
    """
    polygons = (SHAPES[shape] if isinstance(shape, str) else shape)(rng)
    filled = np.concatenate([p for p, paint in polygons if paint is not False])
    lo, hi = filled.min(axis=0), filled.max(axis=0)
    centre, half = (lo + hi) / 2, (hi - lo).max() / 2
    aspect = np.exp(rng.uniform(*np.log(ASPECT)))
    stretch = np.array([np.sqrt(aspect), 1 / np.sqrt(aspect)])
    a = np.deg2rad(rng.uniform(-pose.rotation_deg, pose.rotation_deg))
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    polygons = [((p - centre) / half * stretch @ rot.T, paint) for p, paint in polygons]
    filled = np.concatenate([p for p, paint in polygons if paint is not False])
    lo, hi = filled.min(axis=0), filled.max(axis=0)
    scale = rng.uniform(*pose.fraction) * min(w, h) / (hi - lo).max()
    margin = 3.0  # pixels kept free on every side (room for the outline)
    low, high = margin - lo * scale, np.array([w, h]) - margin - hi * scale
    high = np.maximum(high, low)
    pad = (1.0 - pose.shift) / 2 * (high - low)
    offset = rng.uniform(low + pad, high - pad)
    placed = [(p * scale + offset, paint) for p, paint in polygons]
    mask = _coverage([(p, paint is not False) for p, paint in placed], w, h)
    parts = [(_coverage([(p, True)], w, h), paint) for p, paint in placed if not isinstance(paint, bool)]
    return mask, parts, placed


def _coverage(polygons: list[tuple[np.ndarray, bool]], w: int, h: int) -> np.ndarray:
    """``(h, w)`` anti-aliased coverage in 0..1 of pixel-coordinate polygons drawn in order (True
    fills, False cuts), drawn at :data:`SUPERSAMPLE` x and box-filtered down."""
    mask = Image.new("L", (w * SUPERSAMPLE, h * SUPERSAMPLE), 0)
    draw = ImageDraw.Draw(mask)
    for p, fill in polygons:
        draw.polygon([tuple(q) for q in p * SUPERSAMPLE], fill=255 if fill else 0)
    return np.asarray(mask.resize((w, h), Image.BOX), dtype=np.float32) / 255.0


def _contrasting_colour(rng: np.random.Generator, against: np.ndarray, tries: int = 20) -> np.ndarray:
    """A random colour far (RGB distance) from the ``(3,)`` colour ``against``: the best of ``tries``."""
    candidates = rng.uniform(0.0, 255.0, (tries, 3))
    return candidates[np.argmax(np.linalg.norm(candidates - against, axis=1))]


def render_image(rng: np.random.Generator, shape: str | Callable[[np.random.Generator], Polygons], size: tuple[int, int]) -> tuple[Image.Image, Box]:
    """One RGB image of ``shape`` (a key of :data:`SHAPES`) on clutter, and the object's box.

    Args:
        rng: the image's own generator (everything random is drawn from it).
        shape: the object's class: a key of :data:`SHAPES`, or a polygon function like its values.
        size: ``(W, H)`` in pixels.

    Returns the ``W x H`` RGB image and ``(x_min, y_min, x_max, y_max)`` of the object (module
    docstring: pixel ``i`` spans ``[i, i + 1)``).
    """
    image, box, _ = _render(rng, shape, size, Pose())
    return image, box


def render_face(rng: np.random.Generator, size: tuple[int, int], pose: Pose = CANONICAL,
                breed: str = FACES[0]) -> tuple[Image.Image, Box, dict[str, tuple[float, float, float, float]]]:
    """One image of a face of ``breed`` (one of :data:`FACES`) in ``pose`` (default: the canonical
    frontal pose), its box, and its parts.

    Returns the ``W x H`` RGB image, the face's box, and ``{part: (x_min, y_min, x_max, y_max)}``
    for each part of :data:`FACE_PARTS`: the bounding box of the part's polygon, in continuous
    pixel coordinates of the image.
    """
    image, box, placed = _render(rng, breed, size, pose)
    parts = {}
    for name, k in FACE_PARTS.items():
        (x0, y0), (x1, y1) = placed[k][0].min(axis=0), placed[k][0].max(axis=0)
        parts[name] = (float(x0), float(y0), float(x1), float(y1))
    return image, box, parts


def _render(rng: np.random.Generator, shape: str | Callable[[np.random.Generator], Polygons], size: tuple[int, int], pose: Pose) -> tuple[Image.Image, Box, Polygons]:
    """:func:`render_image` in ``pose``, also returning the object's polygons in pixel coordinates."""
    w, h = size
    background = np.asarray(_background(rng, w, h), dtype=np.float32)
    coverage, parts, placed = _object_mask(rng, shape, w, h, pose)
    behind = background[coverage > 0.5].mean(axis=0)
    colour = _contrasting_colour(rng, behind)
    gy, gx = rng.uniform(-0.25, 0.25, 2) / max(w, h)  # mild shading across the object
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    shading = (1.0 + gx * (xs - w / 2) + gy * (ys - h / 2))[..., None]
    if isinstance(shape, str) and shape in TEXTURES:
        shading = shading * (1.0 + rng.uniform(*TEXTURE_CONTRAST) * TEXTURES[shape](rng, (h, w))[..., None])
    fill = np.clip(colour * shading, 0, 255)
    image = background
    if rng.random() < 0.5:  # an outline 1-2 px wide, darker or lighter than the fill
        width = int(rng.integers(1, 3))
        outer = Image.fromarray((coverage * 255).astype(np.uint8)).filter(ImageFilter.MaxFilter(2 * width + 1))
        coverage_outline = np.asarray(outer, dtype=np.float32)[..., None] / 255.0
        tone = colour * 0.3 if colour.mean() > 110 else colour + (255 - colour) * 0.7
        image = image * (1 - coverage_outline) + tone * coverage_outline
        extent = coverage_outline[..., 0]
    else:
        extent = coverage
    image = image * (1 - coverage[..., None]) + fill * coverage[..., None]
    for part, rgb in parts:  # opaque parts, shaded like the object, colour jittered by a few levels
        tone = np.clip(np.asarray(rgb) * shading + rng.normal(0.0, 6.0, 3), 0, 255)
        image = image * (1 - part[..., None]) + tone * part[..., None]
    image = image + rng.normal(0.0, rng.uniform(3.0, 8.0), image.shape)
    ys_in, xs_in = np.nonzero(extent > 0)
    box = (int(xs_in.min()), int(ys_in.min()), int(xs_in.max()) + 1, int(ys_in.max()) + 1)
    return Image.fromarray(np.clip(np.rint(image), 0, 255).astype(np.uint8)), box, placed


def _render_to(job: tuple[Path, list[int], str, int, int]) -> Box:
    """Draw one image from the generator seeded by ``seed`` and write it as JPEG; return its box.

    ``job`` is ``(path, seed, shape, min_side, max_side)``; the size ``(W, H)`` is drawn first.
    """
    path, seed, shape, min_side, max_side = job
    rng = np.random.default_rng(seed)
    size = tuple(int(s) for s in rng.integers(min_side, max_side + 1, 2))
    image, box = render_image(rng, shape, size)
    image.save(path, "JPEG", quality=JPEG_QUALITY)
    return box


def _check(cfg: SyntheticConfig) -> None:
    if not 2 <= cfg.classes <= len(CLASS_NAMES):
        raise ConfigError(f"data.synthetic.classes: must be in 2..{len(CLASS_NAMES)} (drawn shapes), got {cfg.classes}")
    if cfg.min_side < 16 or cfg.max_side < cfg.min_side:
        raise ConfigError(f"data.synthetic: need 16 <= min_side <= max_side, got {cfg.min_side}, {cfg.max_side}")
    if cfg.val_layout not in ("folders", "flat"):
        raise ConfigError(f"data.synthetic.val_layout: must be 'folders' or 'flat', got {cfg.val_layout!r}")


def _write_solution(path: Path, rows: list[tuple[str, str, Box]]) -> None:
    """Kaggle ``LOC_*_solution.csv``: ``ImageId,PredictionString`` with ``"<wnid> x0 y0 x1 y1"``."""
    with open(path, "w", newline="") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(["ImageId", "PredictionString"])
        for image_id, wnid, box in rows:
            out.writerow([image_id, " ".join([wnid, *map(str, box)])])


def write_imagenet(root: str | Path, cfg: SyntheticConfig, progress: bool = True, workers: int = 1) -> dict:
    """Write a synthetic dataset in the ImageNet 2012 layout at ``root`` (replacing what is there).

    Layout (``K = cfg.classes``, class ``i`` = shape ``CLASS_NAMES[i]`` with wnid ``wnid_for(i)``)::

        train/<wnid>/<wnid>_<k>.JPEG               k = 1..train_per_class
        val/<wnid>/ILSVRC2012_val_<8 digits>.JPEG  val_layout "folders" (torchvision's layout)
        val/ILSVRC2012_val_<8 digits>.JPEG         val_layout "flat" (labels in LOC_val_solution.csv)
        LOC_synset_mapping.txt                     "<wnid> <name>", sorted by wnid = class index
        LOC_train_solution.csv, LOC_val_solution.csv   Kaggle boxes (module docstring)
        meta.bin                                   torchvision.datasets.ImageNet's (wnid_to_classes, val_wnids)

    Val indices run 1..K*val_per_class over a shuffled class order. Everything is written into a
    sibling temp folder that replaces ``root`` at the end: an existing ``root`` is removed first,
    so an interrupted run leaves no dataset at ``root``. ``workers > 1`` draws in that many
    processes (same bytes: each image has its own seed).

    Returns ``{"classes", "train", "val", "val_layout", "seconds"}`` (image counts per split).
    """
    _check(cfg)
    start = time.perf_counter()
    wnids = [wnid_for(i) for i in range(cfg.classes)]
    order = np.random.default_rng([cfg.seed, 2]).permutation(np.repeat(np.arange(cfg.classes), cfg.val_per_class))
    val_labels = [int(c) for c in order]
    rows = {  # split -> [(image id, class index, seed)]
        "train": [
            (f"{w}_{k}", c, [cfg.seed, 0, c, k]) for c, w in enumerate(wnids) for k in range(1, cfg.train_per_class + 1)
        ],
        "val": [(f"ILSVRC2012_val_{i:08d}", c, [cfg.seed, 1, i]) for i, c in enumerate(val_labels, 1)],
    }

    def folder(split: str, c: int) -> Path:  # relative to the dataset's root
        return Path(split) if split == "val" and cfg.val_layout == "flat" else Path(split, wnids[c])

    with atomic_folder(root) as tmp:
        jobs = [
            (tmp / folder(split, c) / f"{image_id}.JPEG", seed, CLASS_NAMES[c], cfg.min_side, cfg.max_side)
            for split in ("train", "val")
            for image_id, c, seed in rows[split]
        ]
        for path in {job[0].parent for job in jobs}:
            path.mkdir(parents=True)
        with Pool(workers) if workers > 1 else nullcontext() as pool:
            drawn = pool.imap(_render_to, jobs, chunksize=32) if pool else map(_render_to, jobs)
            quiet = None if progress else True  # None: a bar only on a terminal
            boxes = list(tqdm(drawn, total=len(jobs), desc="synthetic imagenet", unit="img", disable=quiet))
        (tmp / "LOC_synset_mapping.txt").write_text("".join(f"{w} {CLASS_NAMES[i]}\n" for i, w in enumerate(wnids)))
        n_train = len(rows["train"])
        for split, split_boxes in (("train", boxes[:n_train]), ("val", boxes[n_train:])):
            solution = [(image_id, wnids[c], box) for (image_id, c, _), box in zip(rows[split], split_boxes)]
            _write_solution(tmp / f"LOC_{split}_solution.csv", solution)
        wnid_to_classes = {w: (CLASS_NAMES[i],) for i, w in enumerate(wnids)}
        torch.save((wnid_to_classes, [wnids[c] for c in val_labels]), tmp / "meta.bin")
    return {
        "classes": cfg.classes,
        "train": n_train,
        "val": len(val_labels),
        "val_layout": cfg.val_layout,
        "seconds": round(time.perf_counter() - start, 2),
    }


def render_background(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """A ``W x H`` RGB image of clutter only, no object (Caltech's background class, empty scene cells)."""
    image = np.asarray(_background(rng, *size), dtype=np.float32)
    image = image + rng.normal(0.0, rng.uniform(3.0, 8.0), image.shape)
    return Image.fromarray(np.clip(np.rint(image), 0, 255).astype(np.uint8))
