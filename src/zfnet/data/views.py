"""Image files as the transfer experiments see them (docs/paper.md Tables 4-7): decoded (any mode:
grayscale, CMYK... -> RGB), preprocessed like the pipeline (smallest side to ``S``, centre
``S x S`` crop) and held in memory as uint8 tensors, with the unreadable files skipped and listed."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from zfnet.data.imagenet import LayoutError
from zfnet.data.images import BadImage, load_rgb, resize_center_crop

log = logging.getLogger(__name__)


@dataclass
class Crops:
    """Decoded, preprocessed images: ``images`` uint8 ``(N, 3, S, S)`` (or ``(V, N, 3, S, S)``,
    :func:`load_views`) of the inputs at ``kept``."""

    images: torch.Tensor
    kept: list[int]
    skipped: list[tuple[str, str]]  # (path, reason) of files that could not be decoded


def load_crops(paths: Sequence[str | Path], size: int) -> Crops:
    """Decode ``paths``, smallest side to ``size``, centre crop: ``images`` uint8 ``(N, 3, size, size)``.

    Unreadable files are skipped (logged, listed in :attr:`Crops.skipped`); none readable raises
    :class:`~zfnet.data.imagenet.LayoutError`.
    """
    crops, kept, skipped = [], [], []
    for i, path in enumerate(paths):
        try:
            crop, _ = resize_center_crop(load_rgb(path), size)
        except BadImage as exc:
            log.warning("skipping %s: %s", path, exc.reason)
            skipped.append((str(path), exc.reason))
            continue
        crops.append(np.ascontiguousarray(crop.transpose(2, 0, 1)))
        kept.append(i)
    if not crops:
        raise LayoutError(f"no readable image among {len(paths)} files")
    return Crops(torch.from_numpy(np.stack(crops)), kept, skipped)


def load_views(paths: Sequence[str | Path], size: int, views: int) -> Crops:
    """:func:`load_crops` for ``views`` views of each image: ``images`` uint8 ``(V, N, 3, S, S)``.

    ``views == 1``: the centre crop (``V = 1``). ``views == 5``: the image preprocessed at ``2 S``,
    then its whole ``2S x 2S`` crop scaled down to ``S`` (area average) and its four ``S x S``
    quadrants, each at the scale a single view has twice over.
    """
    if views == 1:
        crops = load_crops(paths, size)
        return Crops(crops.images[None], crops.kept, crops.skipped)
    big = load_crops(paths, 2 * size)
    whole = F.interpolate(big.images.float(), size=(size, size), mode="area").round().clamp(0, 255).to(torch.uint8)
    quadrants = [big.images[:, :, y : y + size, x : x + size] for y in (0, size) for x in (0, size)]
    return Crops(torch.stack([whole, *quadrants]).contiguous(), big.kept, big.skipped)
