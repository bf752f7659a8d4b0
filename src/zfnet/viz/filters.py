"""Fig. 6: the first-layer filters, and numbers for what the paper sees in them.

The paper's finding (Sec. 4.1): the 11x11/4 layer 1 of Krizhevsky et al. has "a mix of extremely
high and low frequency information, with little coverage of the mid frequencies" and some dead
filters; 7x7/2 fixes it; RMS renormalisation stops a few filters dominating. Measured here:

- **dead filters**: a filter (one output channel's ``(3, k, k)`` weights) is dead when its RMS is
  below ``dead_ratio`` (default 0.1) of the layer's median filter RMS. Rationale: a filter that
  never fires receives no gradient and stays at its initial scale, while trained filters grow by
  about an order of magnitude (from N(0, 1e-2) towards the renormalisation radius 1e-1).
- **frequency bands**: each filter's 2D power spectrum (``|FFT|^2`` summed over RGB, zero-padded to
  ``fft_size`` x ``fft_size`` for a finer sampling of the same spectrum) is split by normalised
  radial frequency ``r = |f| / 0.5`` (1 = Nyquist) into low ``[0, 1/3)``, mid ``[1/3, 2/3)`` and
  high ``[2/3, inf)`` (the corners beyond Nyquist along one axis count as high); each band's share
  of the filter's power is averaged over the live filters.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from zfnet.viz.grids import normalize_minmax, resize, save_figure, tile

BANDS = {"low": (0.0, 1 / 3), "mid": (1 / 3, 2 / 3), "high": (2 / 3, math.inf)}


def band_shares(weight: torch.Tensor, fft_size: int = 32) -> torch.Tensor:
    """Share of each filter's spectral power in the low/mid/high bands: ``(F, C, k, k)`` -> ``(F, 3)``, rows sum to 1."""
    power = torch.fft.fft2(weight.detach().double().cpu(), s=(fft_size, fft_size)).abs().pow(2).sum(1)  # (F, n, n)
    freq = torch.fft.fftfreq(fft_size, dtype=torch.float64)
    radius = (freq[:, None] ** 2 + freq[None, :] ** 2).sqrt() / 0.5
    bands = torch.stack([(radius >= lo) & (radius < hi) for lo, hi in BANDS.values()])  # (3, n, n)
    energy = (power[:, None] * bands).sum((2, 3))  # (F, 3)
    return (energy / energy.sum(1, keepdim=True).clamp_min(1e-30)).float()


def filter_stats(weight: torch.Tensor, dead_ratio: float = 0.1, fft_size: int = 32) -> dict:
    """Dead filters and frequency coverage of a conv layer's ``(F, C, k, k)`` weights.

    Returns ``{"filters": F, "dead": n, "dead_fraction": n / F, "rms_median": float,
    "band_energy": {"low": share, "mid": share, "high": share}}`` (shares over live filters, sum 1).
    """
    rms = weight.detach().float().cpu().flatten(1).pow(2).mean(1).sqrt()
    median = float(rms.median())
    dead = rms < dead_ratio * median
    live = ~dead if (~dead).any() else torch.ones_like(dead)
    shares = band_shares(weight, fft_size)[live].mean(0)
    return {
        "filters": int(len(rms)),
        "dead": int(dead.sum()),
        "dead_fraction": float(dead.float().mean()),
        "rms_median": median,
        "band_energy": {name: float(s) for name, s in zip(BANDS, shares)},
    }


def filter_grid(weight: torch.Tensor, tile_size: int = 28) -> torch.Tensor:
    """First-layer filters as one image: each ``(3, k, k)`` filter contrast-stretched on its own, enlarged to ``tile_size``.

    ``(F, 3, k, k)`` -> ``(3, H, W)`` in [0, 1].
    """
    tiles = resize(normalize_minmax(weight.detach().float().cpu()), tile_size)
    return tile(tiles, math.ceil(math.sqrt(len(tiles))), pad=2)


def first_filters(model: nn.Module) -> torch.Tensor:
    """The ``(F, 3, k, k)`` weights of the model's first ``Conv2d`` on the image (ZFNet's ``conv1``)."""
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d) and m.in_channels == 3), None)
    if conv is None:
        raise ValueError(f"{type(model).__name__} has no Conv2d on the 3 image channels")
    return conv.weight


def filters(model: nn.Module, path: str | Path, dead_ratio: float = 0.1, title: str = "") -> dict:
    """Write the layer-1 filter grid of ``model`` to ``path`` (PNG) and return :func:`filter_stats` plus ``"figure"``."""
    weight = first_filters(model)
    stats = filter_stats(weight, dead_ratio)
    k = weight.shape[-1]
    title = title or (
        f"layer-1 filters ({stats['filters']} x {k}x{k}): {stats['dead']} dead; power low/mid/high "
        + " / ".join(f"{stats['band_energy'][b]:.2f}" for b in BANDS)
    )
    stats["figure"] = str(save_figure(filter_grid(weight), path, title))
    return stats
