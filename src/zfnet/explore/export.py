"""``zfnet explore --export DIR``: the explorer's pages as static files that open from disk.

The same pages as the live app (:mod:`zfnet.explore.pages`, with :class:`~zfnet.explore.pages.Links`
making relative ``.html`` links), without the upload form: ``index.html``, ``layer/<layer>.html``,
``layer/<layer>/<channel>.html``, every tile under ``tile/``, the run's figures under ``figures/``
and ``static/``; archive the folder next to the report.

Thousands of small files: they are written into ``.DIR.partial`` beside ``DIR``, renamed to ``DIR``
when all are there (:func:`zfnet.io.atomic_folder`; a previous export in ``DIR`` is replaced), so
``DIR`` is never a half-written export, without the cost of an fsync per tile.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

from zfnet.explore.pages import STATIC, Links, channel_page, layer_page, overview_page, tile_counts, tile_png
from zfnet.explore.source import Explorer
from zfnet.io import atomic_folder

MARK = Path("static/explore.css")  # what makes a folder a previous export (replaced without asking)


def _write(out: Path, url: str, data: bytes | str) -> None:
    """Write ``data`` where the export's ``url`` (relative to its root) points."""
    path = out / unquote(url)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


def _pages(explorer: Explorer, out: Path) -> dict[str, int]:
    """Every page and tile into ``out``; returns their counts."""
    links = Links(static=True)
    _write(out, "index.html", overview_page(explorer, links, upload=False))
    pages, tiles = 1, 0
    for layer, entry in explorer.index.layers.items():
        _write(out, links.layer(layer), layer_page(explorer, layer, links.at(1)))
        counts = tile_counts(explorer, layer)
        for channel in range(entry["channels"]):
            _write(out, links.channel(layer, channel), channel_page(explorer, layer, channel, links.at(2)))
            for kind, count in counts.items():
                for k in range(count):
                    _write(out, links.tile(kind, layer, channel, k), tile_png(explorer, kind, layer, channel, k))
            tiles += sum(counts.values())
        pages += 1 + entry["channels"]
    figures = explorer.overview.figures()
    for name in figures:
        _write(out, links.figure(name), (explorer.overview.figures_dir / name).read_bytes())
    for path in STATIC.iterdir():
        _write(out, links.asset(path.name), path.read_bytes())
    return {"pages": pages, "tiles": tiles, "figures": len(figures)}


def export(explorer: Explorer, out: str | Path) -> dict:
    """Write the static explorer of ``explorer`` as the folder ``out`` (computing the index first if
    needed). ``out`` must not exist, be empty or hold a previous export. Returns ``{"pages": n,
    "tiles": n, "figures": n, "index": path}``."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MARK).is_file():
        raise FileExistsError(f"{out}: not empty and not a previous export (choose a new folder)")
    explorer.wait()
    with atomic_folder(out) as tmp:
        counts = _pages(explorer, tmp)
    return {**counts, "index": str(out / "index.html")}
