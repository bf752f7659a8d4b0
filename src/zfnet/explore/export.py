"""``zfnet explore --export DIR``: the explorer's pages as static files that open from disk.

The same pages as the live app (:mod:`zfnet.explore.pages`, with :class:`~zfnet.explore.pages.Links`
making relative ``.html`` links), without the upload form: ``index.html``, ``layer/<layer>.html``,
``layer/<layer>/<channel>.html``, every tile under ``tile/``, the run's figures under ``figures/``
and ``static/``. Every file is written atomically; archive the folder next to the report.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

from zfnet.explore.pages import STATIC, Links, channel_page, layer_page, overview_page, tile_counts, tile_png
from zfnet.explore.source import Explorer
from zfnet.io import copy_file, write_text


def _file(out: Path, url: str) -> Path:
    """Where the export writes what ``url`` (relative to its root) names."""
    return out / unquote(url)


def _tiles(explorer: Explorer, layer: str, channel: int, out: Path) -> int:
    """Write every tile of one map; returns how many."""
    from zfnet.io import atomic_file

    counts = tile_counts(explorer, layer)
    links = Links(static=True)
    for kind, count in counts.items():
        for k in range(count):
            with atomic_file(_file(out, links.tile(kind, layer, channel, k))) as fh:
                fh.write(tile_png(explorer, kind, layer, channel, k))
    return sum(counts.values())


def export(explorer: Explorer, out: str | Path) -> dict:
    """Write the static explorer of ``explorer`` into ``out`` (computing the index first if needed).
    Returns ``{"pages": n, "tiles": n, "figures": n, "index": path}``."""
    out = Path(out)
    explorer.wait()
    links = Links(static=True)
    write_text(out / "index.html", overview_page(explorer, links, upload=False))
    pages, tiles = 1, 0
    for layer, entry in explorer.index.layers.items():
        write_text(_file(out, links.layer(layer)), layer_page(explorer, layer, links.at(1)))
        for channel in range(entry["channels"]):
            write_text(_file(out, links.channel(layer, channel)), channel_page(explorer, layer, channel, links.at(2)))
            tiles += _tiles(explorer, layer, channel, out)
        pages += 1 + entry["channels"]
    figures = explorer.overview.figures()
    for name in figures:
        copy_file(explorer.overview.figures_dir / name, _file(out, links.figure(name)))
    for path in STATIC.iterdir():
        copy_file(path, _file(out, links.asset(path.name)))
    return {"pages": pages, "tiles": tiles, "figures": len(figures), "index": str(out / "index.html")}
