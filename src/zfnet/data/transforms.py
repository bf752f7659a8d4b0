"""Batched crops and normalisation of preprocessed ``uint8`` images (docs/paper.md Sec. 3).

Shards hold ``S x S`` centre crops (256 in the paper). Model input is ``(pixel - per-pixel mean)
* input_scale``, the mean subtracted from the whole ``S x S`` image *before* cropping, so each
crop has the mean of its own pixels subtracted. Training takes one ``crop x crop`` sub-crop per
image: one of the paper's 10 (``ten``) or a random window with a random horizontal flip
(``random``); evaluation averages the softmax over the 10 crops (4 corners + centre, each with and
without flip).

The training data path draws each batch's windows (:data:`WINDOWS`) on the CPU, then cuts them
from the ``uint8`` images wherever those are (the GPU, when training runs there) and subtracts the
same windows of the mean (:func:`crop_normalize`): one gather per batch, no per-image loop, and
the same numbers as normalising the whole image first and cropping it after (a crop only moves
pixels; each one gets ``(pixel - its mean) * input_scale`` either way).
"""

from __future__ import annotations

from typing import NamedTuple

import torch


def normalize(images: torch.Tensor, mean: torch.Tensor, input_scale: float) -> torch.Tensor:
    """``(N, 3, h, w)`` uint8 (or float) pixels -> float model input; ``mean`` is ``(3, h, w)`` or broadcastable."""
    return (images.float() - mean) * input_scale


class Windows(NamedTuple):
    """Where each image of a batch is cropped: ``ys``, ``xs`` ``(N,)`` int64 top-left offsets and
    ``flips`` ``(N,)`` bool (mirror the crop)."""

    ys: torch.Tensor
    xs: torch.Tensor
    flips: torch.Tensor

    def part(self, rows: slice) -> "Windows":
        """The windows of the images in ``rows`` (a rank's slice of a global batch)."""
        return Windows(self.ys[rows], self.xs[rows], self.flips[rows])


def random_windows(n: int, size: int, crop: int, generator: torch.Generator) -> Windows:
    """``n`` random ``crop x crop`` windows of an ``size x size`` image with random horizontal flips
    (``train.crops: random``), drawn from ``generator`` in the order ``ys``, ``xs``, ``flips``."""
    ys = torch.randint(0, size - crop + 1, (n,), generator=generator)
    xs = torch.randint(0, size - crop + 1, (n,), generator=generator)
    return Windows(ys, xs, torch.rand(n, generator=generator) < 0.5)


def ten_windows(n: int, size: int, crop: int, generator: torch.Generator) -> Windows:
    """One of the paper's 10 sub-crops (:func:`ten_crops`) per image, drawn uniformly from
    ``generator`` (``train.crops: ten``)."""
    choice = torch.randint(0, 10, (n,), generator=generator)
    view = choice % 5  # 0-3: corners (top-left, top-right, bottom-left, bottom-right), 4: centre
    far, mid = size - crop, (size - crop) // 2
    ys = torch.tensor([0, 0, far, far, mid])[view]
    xs = torch.tensor([0, far, 0, far, mid])[view]
    return Windows(ys, xs, choice >= 5)


WINDOWS = {"random": random_windows, "ten": ten_windows}  # train.crops -> how the training windows are drawn


def crop_batch(images: torch.Tensor, windows: Windows, crop: int) -> torch.Tensor:
    """Image ``n``'s ``crop x crop`` window at ``(ys[n], xs[n])``, mirrored where ``flips[n]``: one
    gather for the whole batch, on ``images``' device.

    ``images`` ``(N, C, S, S)`` (any dtype; an expanded view is not copied). Returns a contiguous
    ``(N, C, crop, crop)``.
    """
    n, c, h, w = images.shape
    device = images.device
    steps = torch.arange(crop, device=device)
    rows = windows.ys.to(device)[:, None] + steps  # (N, crop)
    cols = windows.xs.to(device)[:, None] + torch.where(windows.flips.to(device)[:, None], crop - 1 - steps, steps)
    index = (rows[:, :, None] * w + cols[:, None, :]).view(n, 1, crop * crop).expand(n, c, crop * crop)
    return images.reshape(n, c, h * w).gather(2, index).view(n, c, crop, crop)


def crop_normalize(images: torch.Tensor, mean: torch.Tensor, windows: Windows, crop: int,
                   input_scale: float) -> torch.Tensor:
    """The model input of a training batch: ``uint8`` ``images`` ``(N, 3, S, S)`` cut at ``windows``
    and normalised with the same windows of ``mean`` ``(3, S, S)`` (on ``images``' device), float
    ``(N, 3, crop, crop)``; equal to cropping :func:`normalize` of the whole images."""
    mean = mean.to(images.device)[None].expand(len(images), *mean.shape)
    return normalize(crop_batch(images, windows, crop), crop_batch(mean, windows, crop), input_scale)


def random_crops(images: torch.Tensor, crop: int, generator: torch.Generator) -> torch.Tensor:
    """Random ``crop x crop`` sub-crops of ``images`` ``(N, C, S, S)`` with random horizontal flips,
    the windows drawn from ``generator`` (:func:`random_windows`); ``(N, C, crop, crop)``."""
    return crop_batch(images, random_windows(len(images), images.shape[-1], crop, generator), crop)


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
