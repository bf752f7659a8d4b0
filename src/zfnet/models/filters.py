"""Conv filters: their RMS, the paper's RMS renormalisation, and how smooth they are.

A *filter* is one output channel's ``(C_in, k, k)`` weights of a ``Conv2d``. The paper
(docs/paper.md, Sec. 3) renormalises every filter whose RMS exceeds a fixed radius (0.1) back to
it, so that no few filters dominate (Fig. 6a). Trained first-layer filters are oriented edges and
colour blobs, i.e. spatially smooth: their lag-1 spatial autocorrelation is high (a Gabor patch
about 0.7), while white noise, which is what they are at initialisation, has 0.
"""

from __future__ import annotations

import torch
from torch import nn

AT_RADIUS = 0.999  # a filter is "at the radius" when its RMS is at least this fraction of it


def filter_rms(weight: torch.Tensor) -> torch.Tensor:
    """``(F, C, k, k)`` weights -> ``(F,)`` RMS of each filter."""
    return weight.detach().float().flatten(1).pow(2).mean(1).sqrt()


def conv_layers(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """The model's ``Conv2d`` modules with their qualified names, bottom to top."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]


@torch.no_grad()
def renormalize_filters(model: nn.Module, radius: float = 0.1) -> int:
    """Rescale every conv filter whose RMS exceeds ``radius`` back to ``radius`` (in place).

    Returns how many were rescaled.
    """
    count = 0
    for _, m in conv_layers(model):
        w = m.weight
        rms = w.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt()
        scale = (radius / rms).clamp(max=1.0)
        count += int((scale < 1.0).sum())
        w.mul_(scale)
    return count


def at_radius(model: nn.Module, radius: float) -> dict[str, float]:
    """Fraction of filters whose RMS is at (or above) ``radius``: overall (``"all"``) and per conv layer."""
    shares, total, count = {}, 0, 0
    for name, m in conv_layers(model):
        hit = filter_rms(m.weight) >= AT_RADIUS * radius
        shares[name] = float(hit.float().mean())
        total, count = total + int(hit.sum()), count + hit.numel()
    return {"all": total / max(count, 1), **shares}


def spatial_autocorrelation(weight: torch.Tensor) -> torch.Tensor:
    """Lag-1 spatial autocorrelation of each filter: ``(F, C, k, k)`` -> ``(F,)`` in [-1, 1].

    Each filter minus its mean; the sum of products of horizontally and vertically adjacent weights
    (over all input channels) divided by the matching sum of squares. 0 for white noise, near 1
    for a smooth filter, negative for a checkerboard.
    """
    w = weight.detach().double()
    w = w - w.mean(dim=(1, 2, 3), keepdim=True)
    right, left, down, up = w[..., :, 1:], w[..., :, :-1], w[..., 1:, :], w[..., :-1, :]
    products = (right * left).sum((1, 2, 3)) + (down * up).sum((1, 2, 3))
    squares = 0.5 * ((right**2 + left**2).sum((1, 2, 3)) + (down**2 + up**2).sum((1, 2, 3)))
    return (products / squares.clamp_min(1e-30)).float()
