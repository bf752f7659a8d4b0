"""Receptive fields: which input pixels a unit of a conv layer can see.

Each conv and max-pool maps output position ``y`` to the input rows ``[y*s - p, y*s - p + k)``.
Composing these bottom-up gives, for the post-ReLU activation of a layer, an affine rule: unit
``y`` sees rows ``[offset + y*stride, offset + y*stride + size)`` of the input (the same for
columns). Contrast normalisation works across maps, not space, so it leaves the field unchanged.
The field can stick out of the image (padding); :meth:`ReceptiveField.boxes` clips it, and
:func:`crop` cuts the unclipped field out of a zero-padded image so every patch of a layer has the
same size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.nn.modules.utils import _pair

from zfnet.models import ConvNet


@dataclass(frozen=True)
class ReceptiveField:
    """The receptive field of one layer, from its chain of ``(kernel, stride, padding)`` ops, bottom-up.

    Unclipped, unit ``y`` sees input rows ``[offset + y * stride, offset + y * stride + size)``
    (columns alike). Clipped to an image, the walk down clips to each intermediate map too, because
    a pool or conv may ignore the last rows of its input (floor in its output size), and those rows
    then are seen by no unit above.
    """

    ops: tuple[tuple[int, int, int], ...]

    @property
    def size(self) -> int:
        """Side of the unclipped field in input pixels."""
        size, stride = 1, 1
        for k, s, _ in self.ops:
            size, stride = size + (k - 1) * stride, stride * s
        return size

    @property
    def stride(self) -> int:
        """Input pixels between the fields of neighbouring units."""
        return math.prod(s for _, s, _ in self.ops)

    @property
    def offset(self) -> int:
        """First input row of unit 0's unclipped field (negative where padding reaches outside)."""
        offset, stride = 0, 1
        for _, s, p in self.ops:
            offset, stride = offset - p * stride, stride * s
        return offset

    def boxes(self, ys: torch.Tensor, xs: torch.Tensor, image_size: tuple[int, int] | None = None) -> torch.Tensor:
        """``(M, 4)`` int64 boxes ``(top, left, bottom, right)`` (bottom/right exclusive) of units ``(ys, xs)``.

        Without ``image_size`` the unclipped field; with ``image_size`` ``(H, W)`` exactly the input
        pixels the units can see.
        """
        ys, xs = torch.as_tensor(ys).long(), torch.as_tensor(xs).long()
        if image_size is None:
            top, left = self.offset + ys * self.stride, self.offset + xs * self.stride
            return torch.stack([top, left, top + self.size, left + self.size], 1)
        sizes = [tuple(image_size)]
        for k, s, p in self.ops:
            sizes.append(tuple((n + 2 * p - k) // s + 1 for n in sizes[-1]))
        lo = torch.stack([ys, xs], 1)
        hi = lo.clone()  # inclusive
        for (k, s, p), size in zip(reversed(self.ops), reversed(sizes[:-1])):
            limit = torch.tensor(size) - 1
            lo = (lo * s - p).clamp(min=0)
            hi = torch.minimum(hi * s - p + k - 1, limit)
        return torch.cat([lo, hi + 1], 1)


def receptive_field(model: ConvNet, layer: str) -> ReceptiveField:
    """The receptive field of the post-ReLU activation of ``layer`` (``conv1``..``conv5``) in input pixels."""
    ops = []
    for name, block in model.features.named_children():
        modules = [block.conv] if name == layer else [block.conv] + ([block.pool] if hasattr(block, "pool") else [])
        ops += [(_pair(m.kernel_size)[0], _pair(m.stride)[0], _pair(m.padding)[0]) for m in modules]
        if name == layer:
            return ReceptiveField(tuple(ops))
    raise KeyError(f"model has no conv layer {layer!r}")


def crop(images: torch.Tensor, field: ReceptiveField, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """The receptive-field patch of unit ``(ys[i], xs[i])`` in ``images[i]``, zero outside the image.

    ``images`` ``(M, C, H, W)``, ``ys``, ``xs`` ``(M,)`` -> ``(M, C, size, size)``.
    """
    pad = field.size + abs(field.offset)
    padded = F.pad(images, (pad, pad, pad, pad))
    box = field.boxes(ys, xs) + pad
    steps = torch.arange(field.size)
    rows = (box[:, 0, None] + steps)[:, :, None]  # (M, size, 1)
    cols = (box[:, 1, None] + steps)[:, None, :]  # (M, 1, size)
    item = torch.arange(len(box))[:, None, None]
    return padded.permute(0, 2, 3, 1)[item, rows, cols].permute(0, 3, 1, 2)
