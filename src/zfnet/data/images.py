"""Robust image decoding and the paper's resize + centre crop (docs/paper.md Sec. 3).

Real datasets are messier than their file names: ImageNet has grayscale and CMYK JPEGs, PNGs
named ``.JPEG`` and the odd truncated file. :func:`load_rgb` decodes by content, forces a full
decode (so a truncated file fails here, not inside a training batch), refuses decompression
bombs and returns RGB; anything it cannot turn into an RGB image raises :class:`BadImage` with a
short ``reason``. EXIF orientation is ignored, as in the standard ImageNet pipelines.

A user's photographs can be far larger than the model's input: with ``shrink_to`` a JPEG is
decoded at the smallest 1/2, 1/4 or 1/8 scale that keeps its short side at least that long (draft
mode: a 100-megapixel photo costs what a 1.6-megapixel one does), and any other format is reduced by
an integer factor right after decoding; the bomb limit then counts the pixels actually decoded.

:func:`resize_center_crop` scales the smallest side to ``S`` (bilinear, antialiased when
shrinking) and keeps the centre ``S x S``; :func:`map_box` sends a source-pixel box through the
same resize and crop.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError

BACKGROUND = (128, 128, 128, 255)  # mid-grey: transparent pixels are composited onto it
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # "I": 32-bit int, in practice 16-bit data
# The commands that read a user's images decode up to this many pixels (``--max-pixels`` raises it):
# a 12000 x 12000 scan or a 100-megapixel photo (about 0.4-0.8 GB decoded), not a file that
# declares gigapixels in a few kilobytes.
COMMAND_MAX_PIXELS = 250_000_000


class BadImage(Exception):
    """A file that cannot be decoded into an RGB image; ``reason`` says why in a few words."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class CropTransform(NamedTuple):
    """How :func:`resize_center_crop` maps source pixels to output pixels.

    ``x_out = x_src * scale_x - left`` and ``y_out = y_src * scale_y - top`` (continuous pixel
    coordinates: the source spans ``[0, w] x [0, h]``, the output ``[0, size] x [0, size]``).
    """

    scale_x: float
    scale_y: float
    left: int
    top: int
    size: int


def read_bytes(path: str | Path) -> bytes:
    """The content of the file at ``path``; raises :class:`BadImage` if it cannot be read."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise BadImage(f"unreadable ({exc.strerror or exc})") from exc


def load_rgb(path: str | Path, max_pixels: int | None = None, shrink_to: int | None = None) -> Image.Image:
    """Decode the image at ``path`` (by content, whatever its extension) into a loaded RGB image:
    :func:`decode_rgb` of its bytes."""
    return decode_rgb(read_bytes(path), max_pixels, shrink_to)


def decode_rgb(data: bytes, max_pixels: int | None = None, shrink_to: int | None = None) -> Image.Image:
    """Decode an image file's bytes ``data`` (by content) into a loaded RGB image.

    Args:
        data: the file's content (read from disk, or uploaded).
        max_pixels: refuse images that would decode to more than this many pixels (decompression
            bombs); ``None`` means PIL's ``Image.MAX_IMAGE_PIXELS`` at call time, with PIL's own
            hard limit (twice that) on top. An explicit limit is the only one (PIL's is raised to it).
        shrink_to: the shortest side the caller needs (``S``); larger images come back smaller,
            short side still >= ``shrink_to`` (JPEG draft mode, else :meth:`PIL.Image.Image.reduce`).
            ``None``: full size (the pipeline's preprocessing).

    Modes: grayscale (``1``, ``L``), 16-bit grayscale (``I;16*``, ``I``; scaled by 255/65535),
    float (``F``; PIL's convention, values clipped to 0..255), CMYK, YCbCr, palette; modes with
    transparency (``RGBA``, ``LA``, ``PA``, palette or grayscale with a transparent colour) are
    composited onto mid-grey.

    Raises:
        BadImage: empty, not an image, a decompression bomb, truncated or corrupt,
            or a mode with no conversion to RGB. No PIL error or ``OSError`` escapes.
    """
    if not data:
        raise BadImage("empty file")
    limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    with warnings.catch_warnings(), _pil_limit(max_pixels):
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limit is checked below
        try:
            img = Image.open(io.BytesIO(data))
        except UnidentifiedImageError as exc:
            raise BadImage("not an image") from exc
        except Image.DecompressionBombError as exc:
            raise BadImage("decompression bomb (over PIL's hard limit)") from exc
        except Exception as exc:  # PIL plugins raise OSError, SyntaxError, ValueError, struct.error...
            raise BadImage(f"corrupt header ({_describe(exc)})") from exc
        if shrink_to and img.format in ("JPEG", "MPO"):  # MPO: a camera's JPEG with a preview inside
            img.draft(None, (shrink_to, shrink_to))  # decode at 1/2, 1/4 or 1/8 scale, short side >= shrink_to
        pixels = img.width * img.height
        if limit is not None and pixels > limit:
            raise BadImage(f"decompression bomb ({pixels} pixels > {limit})")
        try:
            img.load()
        except Exception as exc:
            if "truncated" in str(exc).lower():
                raise BadImage(f"truncated {img.format}") from exc
            raise BadImage(f"corrupt {img.format} ({_describe(exc)})") from exc
    rgb = _to_rgb(img)
    factor = min(rgb.size) // shrink_to if shrink_to else 1
    return rgb.reduce(factor) if factor >= 2 else rgb


@contextlib.contextmanager
def _pil_limit(max_pixels: int | None) -> Iterator[None]:
    """PIL's own bomb check in :func:`PIL.Image.open` (over twice ``Image.MAX_IMAGE_PIXELS``) off
    while an explicit ``max_pixels`` (checked by the caller) is in force."""
    if max_pixels is None:
        yield
        return
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def _describe(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 80 else text[:77] + "..."


def _to_rgb(img: Image.Image) -> Image.Image:
    """A loaded image of any mode -> RGB (see :func:`load_rgb`)."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in _SIXTEEN_BIT:
        values = np.asarray(img).astype(np.float64)
        grey = np.round(np.clip(values, 0, 65535) * (255 / 65535)).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    try:
        if img.has_transparency_data:
            background = Image.new("RGBA", img.size, BACKGROUND)
            return Image.alpha_composite(background, img.convert("RGBA")).convert("RGB")
        return img.convert("RGB")
    except (ValueError, OSError) as exc:
        raise BadImage(f"unsupported mode {mode}") from exc


def resize_center_crop(img: Image.Image, size: int) -> tuple[np.ndarray, CropTransform]:
    """Resize so the smallest side is ``size`` (bilinear, antialiased), then crop the centre.

    Args:
        img: an RGB image, ``w x h``.
        size: ``S``, the output side (256 in the paper).

    Returns:
        ``(S, S, 3)`` uint8 array (HWC) and the :class:`CropTransform` that produced it.
    """
    w, h = img.size
    scale = size / min(w, h)
    new_w = size if w <= h else max(size, round(w * scale))
    new_h = size if h <= w else max(size, round(h * scale))
    left, top = (new_w - size) // 2, (new_h - size) // 2
    resized = img.resize((new_w, new_h), Image.Resampling.BILINEAR)
    crop = np.asarray(resized.crop((left, top, left + size, top + size)))
    return crop, CropTransform(new_w / w, new_h / h, left, top, size)


def map_box(box: tuple[float, float, float, float], transform: CropTransform) -> tuple[float, float, float, float]:
    """A source box ``(x_min, y_min, x_max, y_max)`` in source pixels -> the same box in output
    pixels of :func:`resize_center_crop`, clipped to the crop ``[0, S]``.

    A box entirely outside the crop comes back with zero width or height.
    """
    x0, y0, x1, y1 = box
    t = transform

    def clip(v: float) -> float:
        return float(min(max(v, 0.0), t.size))

    return (
        clip(x0 * t.scale_x - t.left),
        clip(y0 * t.scale_y - t.top),
        clip(x1 * t.scale_x - t.left),
        clip(y1 * t.scale_y - t.top),
    )
