"""Batched crops and normalisation of preprocessed ``uint8`` images (docs/paper.md Sec. 3).

Shards hold ``S x S`` centre crops (256 in the paper). Model input is ``(pixel - per-pixel mean)
* input_scale``, the mean subtracted from the whole ``S x S`` image *before* cropping, so each
crop has the mean of its own pixels subtracted. Training takes one ``crop x crop`` sub-crop per
image: one of the paper's 10 (``ten``) or a random window with a random horizontal flip
(``random``); evaluation averages the softmax over the 10 crops (4 corners + centre, each with and
without flip).
"""

from __future__ import annotations

import torch


def normalize(images: torch.Tensor, mean: torch.Tensor, input_scale: float) -> torch.Tensor:
    """``(N, 3, h, w)`` uint8 (or float) pixels -> float model input; ``mean`` is ``(3, h, w)`` or broadcastable."""
    return (images.float() - mean) * input_scale


def crop_batch(images: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, flips: torch.Tensor, crop: int) -> torch.Tensor:
    """Image ``n``'s ``crop x crop`` window at ``(ys[n], xs[n])``, mirrored where ``flips[n]``: one
    gather for the whole batch, no per-image loop.

    ``images`` ``(N, C, S, S)`` (any dtype); ``ys``, ``xs`` ``(N,)`` integer offsets; ``flips``
    ``(N,)`` bool. Returns ``(N, C, crop, crop)``.
    """
    steps = torch.arange(crop, device=images.device)
    rows = ys.to(images.device)[:, None] + steps  # (N, crop)
    cols = xs.to(images.device)[:, None] + torch.where(flips.to(images.device)[:, None], crop - 1 - steps, steps)
    n = torch.arange(len(images), device=images.device)[:, None, None]
    return images[n, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)  # (N, crop, crop, C) -> NCHW


def random_crops(images: torch.Tensor, crop: int, generator: torch.Generator) -> torch.Tensor:
    """Random ``crop x crop`` sub-crops with random horizontal flips (``train.crops: random``).

    Args:
        images: ``(N, C, S, S)`` tensor (any dtype).
        crop: output side, ``<= S``.
        generator: the source of randomness (seeded per epoch for determinism).

    Returns ``(N, C, crop, crop)``; the offsets and flips are drawn as ``(N,)`` tensors from ``generator``.
    """
    n, _, h, w = images.shape
    ys = torch.randint(0, h - crop + 1, (n,), generator=generator)
    xs = torch.randint(0, w - crop + 1, (n,), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5
    return crop_batch(images, ys, xs, flips, crop)


def random_ten_crops(images: torch.Tensor, crop: int, generator: torch.Generator) -> torch.Tensor:
    """One of the paper's 10 sub-crops (:func:`ten_crops`) per image, drawn uniformly (``train.crops: ten``).

    ``(N, C, S, S)`` -> ``(N, C, crop, crop)``; the choices are drawn from ``generator``.
    """
    n, _, h, w = images.shape
    choice = torch.randint(0, 10, (n,), generator=generator)
    view = choice % 5  # 0-3: corners (top-left, top-right, bottom-left, bottom-right), 4: centre
    ys = torch.tensor([0, 0, h - crop, h - crop, (h - crop) // 2])[view]
    xs = torch.tensor([0, w - crop, 0, w - crop, (w - crop) // 2])[view]
    return crop_batch(images, ys, xs, choice >= 5, crop)


CROPS = {"random": random_crops, "ten": random_ten_crops}  # train.crops -> the training crop


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
