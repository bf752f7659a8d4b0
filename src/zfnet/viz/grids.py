"""Image grids for the figures: display normalisation, tiling, and writing PNGs.

Display conventions (the paper's figures are contrast-normalised per tile):
- a **projection** (deconvnet output) is signed: :func:`normalize_signed` maps 0 to mid-grey and
  the tile's largest magnitude to black/white, so the zero background is uniform;
- a **filter** or an image patch is stretched to its own min..max (:func:`normalize_minmax`).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from zfnet.plotting import plt, save


def normalize_signed(tiles: torch.Tensor) -> torch.Tensor:
    """Per tile, ``0.5 + 0.5 * x / max|x|``: ``(N, C, h, w)`` -> values in [0, 1], zero at 0.5."""
    scale = tiles.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, *[1] * (tiles.dim() - 1))
    return 0.5 + 0.5 * tiles / scale


def normalize_minmax(tiles: torch.Tensor) -> torch.Tensor:
    """Per tile, stretch min..max to 0..1: ``(N, C, h, w)`` -> ``(N, C, h, w)`` (a constant tile becomes 0)."""
    flat = tiles.flatten(1)
    lo = flat.amin(1).view(-1, *[1] * (tiles.dim() - 1))
    hi = flat.amax(1).view(-1, *[1] * (tiles.dim() - 1))
    return (tiles - lo) / (hi - lo).clamp_min(1e-12)


def resize(tiles: torch.Tensor, size: int) -> torch.Tensor:
    """``(N, C, h, w)`` -> ``(N, C, size, size)``: nearest-neighbour when enlarging (keeps pixels visible), area when shrinking."""
    if tiles.shape[-1] == size and tiles.shape[-2] == size:
        return tiles
    mode = "nearest" if size >= max(tiles.shape[-2:]) else "area"
    return F.interpolate(tiles.float(), size=(size, size), mode=mode)


def tile(tiles: torch.Tensor, ncol: int, pad: int = 1, pad_value: float = 1.0) -> torch.Tensor:
    """``(N, C, h, w)`` in [0, 1] -> one ``(C, H, W)`` grid, ``ncol`` tiles per row, ``pad`` pixels around each."""
    n, c, h, w = tiles.shape
    nrow = -(-n // ncol)
    grid = torch.full((c, pad + nrow * (h + pad), pad + ncol * (w + pad)), float(pad_value))
    for i, t in enumerate(tiles.float().cpu()):
        y, x = pad + (i // ncol) * (h + pad), pad + (i % ncol) * (w + pad)
        grid[:, y : y + h, x : x + w] = t
    return grid


def side_by_side(left: torch.Tensor, right: torch.Tensor, gap: int = 2, pad_value: float = 1.0) -> torch.Tensor:
    """Two ``(C, H, W)`` images of equal height, ``gap`` pixels apart -> ``(C, H, W1 + gap + W2)``."""
    spacer = left.new_full((left.shape[0], left.shape[1], gap), pad_value)
    return torch.cat([left, spacer, right], 2)


def png_bytes(pixels: np.ndarray, fast: bool = False) -> bytes:
    """``(h, w, 3)`` uint8 pixels as PNG bytes; ``fast``: the quickest compression (small pictures served live)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, "PNG", compress_level=1 if fast else 6)
    return buffer.getvalue()


def save_figure(
    image: torch.Tensor,
    path: str | Path,
    title: str = "",
    row_labels: Sequence[tuple[float, str]] = (),
    col_labels: Sequence[tuple[float, str]] = (),
    scale: float = 2.0,
) -> Path:
    """Write a ``(C, H, W)`` [0, 1] image as a PNG at ``scale`` screen pixels per image pixel, with labels.

    ``row_labels`` / ``col_labels`` are ``(pixel position, text)`` pairs placed left / above.
    Returns the path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = image.clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    h, w = array.shape[:2]
    dpi = 100
    img_w, img_h = w * scale / dpi, h * scale / dpi  # inches
    left = 0.9 if row_labels else 0.1
    top = 0.1 + 0.25 * bool(title) + 0.25 * bool(col_labels)
    fig_w = max(left + img_w + 0.1, 0.07 * len(title) + 0.2)  # wide enough for the title
    fig_h = top + img_h + 0.1
    fig = plt.figure(figsize=(fig_w, fig_h), dpi=dpi)
    x0 = round((left + (fig_w - left - img_w - 0.1) / 2) * dpi) / dpi  # on a whole pixel
    ax = fig.add_axes((x0 / fig_w, 0.1 / fig_h, img_w / fig_w, img_h / fig_h))
    pixels = array.squeeze(-1) if array.shape[-1] == 1 else array
    if float(scale).is_integer():  # drawn pixel for pixel: matplotlib's resampling of a large image is slow
        k = int(scale)
        fig.figimage(pixels.repeat(k, 0).repeat(k, 1), xo=round(x0 * dpi), yo=round(0.1 * dpi), cmap="gray",
                     origin="upper")
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
        ax.patch.set_visible(False)
    else:
        ax.imshow(pixels, cmap="gray", interpolation="nearest")
    ax.set_xticks([p for p, _ in col_labels], [t for _, t in col_labels], fontsize=8)
    ax.set_yticks([p for p, _ in row_labels], [t for _, t in row_labels], fontsize=8)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=9, y=1 - 0.05 / fig_h, va="top")
    return save(fig, path, dpi=dpi, layout=False)
