"""Matplotlib for the figures, configured once: the non-interactive Agg backend (every figure is a
PNG file; no display is needed or used). Import ``plt`` from here, never ``matplotlib.pyplot``
directly, so the backend is chosen before pyplot loads."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

from zfnet.io import write_bytes

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["plt", "save"]


def save(fig, path: str | Path, dpi: float | None = None, layout: bool = True) -> Path:
    """Lay out ``fig`` (``layout``: ``tight_layout``), write it as a PNG at ``path`` atomically
    (:func:`zfnet.io.write_bytes`; folders created), close it; returns the path. ``dpi``: None
    keeps the figure's own."""
    path = Path(path)
    if layout:
        fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", **({} if dpi is None else {"dpi": dpi}))
    plt.close(fig)
    write_bytes(path, buffer.getbuffer())
    return path
