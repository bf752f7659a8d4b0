"""Receptive fields: which input pixels a unit of a layer's feature maps can see.

Each conv and pool maps output position ``y`` to the input rows ``[y*s - p, y*s - p + k)`` (``k``
the dilated kernel). Composing these bottom-up gives, for a layer whose modules run in sequence
(:func:`~zfnet.viz.deconvnet.sequential_chain`), an affine rule: unit ``y`` sees rows ``[offset +
y*stride, offset + y*stride + size)`` of the input (the same for columns). ReLU, contrast and
batch normalisation, dropout work per position and leave the field unchanged. For any other graph
(residual adds, concatenations) the field is measured: the support of a unit's input gradient with
every ReLU's backward the identity and every max-pool's spread over its whole window (so that no
path is cut), on an image large enough that the field lies inside it.

The field can stick out of the image (padding); :meth:`ReceptiveField.boxes` clips it, and
:func:`crop` cuts the unclipped field out of a zero-padded image so every patch of a layer has the
same size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair

from zfnet.viz.layers import BackwardRules, LayerError, Tap, sequential_chain


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


def receptive_field(model: nn.Module, layer: str, size: int | None = None) -> ReceptiveField:
    """The receptive field of a unit of ``layer``'s feature maps (:mod:`zfnet.viz.layers`) in input pixels.

    ``size``: the side of the square images the model takes (default ``model.input_size``, else
    224); it decides which modules run, not the field. Raises
    :class:`~zfnet.viz.layers.LayerError` for a layer whose units see the whole image (after a
    ``Linear``, ``Flatten`` or adaptive pool) and for a non-square geometry.
    """
    size = size or getattr(model, "input_size", 224)
    chain = sequential_chain(model, layer, next(model.parameters()).new_zeros(1, 3, size, size))
    if chain is None:
        return _measured(model, layer, size)
    ops = []
    for name in chain:
        module = model.get_submodule(name)
        if isinstance(module, (nn.Linear, nn.Flatten, nn.AdaptiveAvgPool2d)):
            raise LayerError(f"layer {layer!r} has no receptive field: its units see the whole image ({name})")
        if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            geometry = [_pair(getattr(module, a, 1)) for a in ("kernel_size", "stride", "padding", "dilation")]
            if any(a != b for a, b in geometry):
                raise LayerError(f"layer {layer!r}: {name} is not square ({geometry})")
            k, s, p, d = (a for a, _ in geometry)
            ops.append(((k - 1) * d + 1, s, p))
    return ReceptiveField(tuple(ops))


def _spread(module: nn.MaxPool2d, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """A max-pool's backward spread over each whole window (a ones kernel, transposed)."""
    k, s, p, d = (_pair(getattr(module, a)) for a in ("kernel_size", "stride", "padding", "dilation"))
    return torch.nn.grad.conv2d_input(x.shape, grad.new_ones(grad.shape[1], 1, *k), grad, s, p, d, grad.shape[1])


def _passed(module: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    return grad


def _measured(model: nn.Module, layer: str, size: int, largest: int = 8) -> ReceptiveField:
    """The field of a graph's layer from the gradient support of two neighbouring central units,
    on probes of side ``size``, ``2 size``, ... up to ``largest * size`` until it lies inside."""
    side, shape = size, None
    while side <= largest * size:
        x = next(model.parameters()).new_zeros(1, 3, side, side).requires_grad_(True)
        act: dict[str, torch.Tensor] = {}
        with torch.enable_grad(), BackwardRules(model, {nn.ReLU: _passed, nn.LocalResponseNorm: _passed,
                                                        nn.MaxPool2d: _spread}), Tap(model, [layer], act.__setitem__) as tap:
            tap.run(x)
            a = act[layer]
            if a.dim() != 4 or a.shape[-2:] == shape:  # no positions, or as many on a larger image
                raise LayerError(f"layer {layer!r} has no receptive field: its units see the whole image")
            shape = a.shape[-2:]
            cy, cx = a.shape[-2] // 2, a.shape[-1] // 2
            boxes = []
            for y, xx in ((cy, cx), (cy, min(cx + 1, a.shape[-1] - 1))):
                seed = torch.zeros_like(a)
                seed[0, :, y, xx] = 1
                (grad,) = torch.autograd.grad(a, x, seed, retain_graph=True)
                support = grad[0].abs().sum(0) > 0
                rows, cols = support.any(1).nonzero().flatten(), support.any(0).nonzero().flatten()
                boxes.append((int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1))
        (top, left, bottom, right), second = boxes
        if top > 0 and left > 0 and bottom < side and right < side:
            stride = (second[1] - left) or side
            if bottom - top != right - left or top - cy * stride != left - cx * stride:
                raise LayerError(f"layer {layer!r}: its receptive field is not square ({boxes[0]})")
            return ReceptiveField(((right - left, stride, cx * stride - left),))
        side *= 2
    raise LayerError(f"layer {layer!r}: its receptive field is larger than {largest * size} pixels")


def crop(images: torch.Tensor, field: ReceptiveField, ys: torch.Tensor, xs: torch.Tensor,
         image: torch.Tensor | None = None) -> torch.Tensor:
    """The receptive-field patch of unit ``(ys[i], xs[i])`` in ``images[image[i]]`` (default
    ``images[i]``), zero outside the image.

    ``images`` ``(B, C, H, W)``, ``ys``, ``xs``, ``image`` ``(M,)`` -> ``(M, C, size, size)``.
    """
    pad = field.size + abs(field.offset)
    padded = F.pad(images, (pad, pad, pad, pad))
    device = images.device
    box = field.boxes(torch.as_tensor(ys).cpu(), torch.as_tensor(xs).cpu()).to(device) + pad
    steps = torch.arange(field.size, device=device)
    rows = (box[:, 0, None] + steps)[:, :, None]  # (M, size, 1)
    cols = (box[:, 1, None] + steps)[:, None, :]  # (M, 1, size)
    item = torch.arange(len(box), device=device) if image is None else torch.as_tensor(image, device=device)
    return padded.permute(0, 2, 3, 1)[item[:, None, None], rows, cols].permute(0, 3, 1, 2)
