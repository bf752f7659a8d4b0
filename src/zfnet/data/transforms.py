"""Batched crops and normalisation of preprocessed ``uint8`` images (PAPER.md Sec. 3).

Shards hold ``S x S`` centre crops (256 in the paper). Training takes random ``crop x crop``
sub-crops with random horizontal flips; evaluation averages the softmax over 10 crops
(4 corners + centre, each with and without flip). Model input is
``(pixel - per-pixel mean) * input_scale``.
"""

from __future__ import annotations

import torch


def normalize(images: torch.Tensor, mean: torch.Tensor, input_scale: float) -> torch.Tensor:
    """``(N, 3, h, w)`` uint8 (or float) pixels -> float model input; ``mean`` is ``(3, h, w)`` or broadcastable."""
    return (images.float() - mean) * input_scale


def random_crops(images: torch.Tensor, crop: int, generator: torch.Generator) -> torch.Tensor:
    """Random ``crop x crop`` sub-crops with random horizontal flips.

    Args:
        images: ``(N, C, S, S)`` tensor (any dtype).
        crop: output side, ``<= S``.
        generator: the source of randomness (seeded per epoch for determinism).

    Returns ``(N, C, crop, crop)``; the offsets and flips are drawn as ``(N,)`` tensors from ``generator``.
    """
    n, _, h, w = images.shape
    ys = torch.randint(0, h - crop + 1, (n,), generator=generator).tolist()
    xs = torch.randint(0, w - crop + 1, (n,), generator=generator).tolist()
    flips = torch.rand(n, generator=generator) < 0.5
    out = torch.stack([images[i, :, y : y + crop, x : x + crop] for i, (y, x) in enumerate(zip(ys, xs))])
    if flips.any():
        out[flips] = out[flips].flip(-1)
    return out


def center_crop(images: torch.Tensor, crop: int) -> torch.Tensor:
    """``(N, C, S, S)`` -> the centre ``(N, C, crop, crop)``."""
    h, w = images.shape[-2:]
    y, x = (h - crop) // 2, (w - crop) // 2
    return images[..., y : y + crop, x : x + crop]


def ten_crops(images: torch.Tensor, crop: int) -> torch.Tensor:
    """The paper's 10 test crops: 4 corners + centre, and their horizontal flips.

    ``(N, C, S, S)`` -> ``(10, N, C, crop, crop)``.
    """
    h, w = images.shape[-2:]
    corners = [(0, 0), (0, w - crop), (h - crop, 0), (h - crop, w - crop)]
    five = [images[..., y : y + crop, x : x + crop] for y, x in corners] + [center_crop(images, crop)]
    return torch.stack(five + [c.flip(-1) for c in five])
