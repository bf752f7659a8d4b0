"""Matplotlib for the figures, configured once: the non-interactive Agg backend (every figure is a
PNG file; no display is needed or used). Import ``plt`` from here, never ``matplotlib.pyplot``
directly, so the backend is chosen before pyplot loads."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["plt", "save"]


def save(fig, path: str | Path, dpi: float | None = None) -> Path:
    """Lay out ``fig``, write it as a PNG at ``path`` (folders created), close it; returns the path.
    ``dpi``: None keeps the figure's own."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, **({} if dpi is None else {"dpi": dpi}))
    plt.close(fig)
    return path
