"""The explorer's pages as HTML (Jinja2 templates in ``templates/``) and its pictures as PNG bytes.

The same functions serve the live app (:mod:`zfnet.explore.app`, absolute URLs) and the static
export (:mod:`zfnet.explore.export`, relative file names that open from disk): :class:`Links`
makes every URL, so the two cannot drift apart.

Pages: the overview (the run, the layers, the upload form when live), a layer (every map's
strongest projection, sortable by activation, the layer-1 filters), a channel (its top-9
projections beside their receptive-field patches, with image names, classes and activations, its
evolution over the milestones and its top-9 class histogram), an error page naming what exists.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from urllib.parse import quote

from zfnet.explore.analyze import png
from zfnet.explore.source import Explorer, NotFound

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
KINDS = ("projection", "patch", "evolution", "filter")  # the tiles a page shows
THUMBNAILS = 8  # strongest maps previewed per layer on the overview


@dataclass(frozen=True)
class Links:
    """Every URL of the explorer: absolute paths on the server; with ``static``, paths relative to a
    page ``depth`` folders below the export's root, pages ending in ``.html``."""

    static: bool = False
    depth: int = 0

    def at(self, depth: int) -> "Links":
        return Links(self.static, depth)

    @property
    def root(self) -> str:
        return "../" * self.depth if self.static else "/"

    def _page(self, path: str) -> str:
        return self.root + path + (".html" if self.static else "")

    def home(self) -> str:
        return self.root + ("index.html" if self.static else "")

    def layer(self, layer: str) -> str:
        return self._page(f"layer/{quote(layer, safe='')}")

    def channel(self, layer: str, channel: int) -> str:
        return self._page(f"layer/{quote(layer, safe='')}/{channel}")

    def tile(self, kind: str, layer: str, channel: int, k: int = 0) -> str:
        return f"{self.root}tile/{kind}/{quote(layer, safe='')}/{channel}/{k}.png"

    def asset(self, name: str) -> str:
        return f"{self.root}static/{name}"

    def figure(self, name: str) -> str:
        return f"{self.root}figures/{quote(name, safe='')}"


@lru_cache(maxsize=1)
def environment():
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = lambda v: f"{v:.3g}"
    return env


def _render(template: str, explorer: Explorer | None, links: Links, **context) -> str:
    layers = list(explorer.index.layers) if explorer is not None and explorer.progress.done and \
        not explorer.progress.error else []
    return environment().get_template(template).render(links=links, nav_layers=layers, **context)


def _layer_summary(explorer: Explorer, name: str) -> dict:
    entry = explorer.index.layers[name]
    tops = [row[0] for row in entry["values"]]
    order = sorted(range(len(tops)), key=lambda c: -tops[c])
    return {"name": name, "channels": entry["channels"], "live": sum(v > 0 for v in tops),
            "field": explorer.index.field(name).size, "strongest": order[:THUMBNAILS],
            "evolution": "evolution" in entry, "filters": entry["filters"]}


def overview_page(explorer: Explorer, links: Links, upload: bool = True) -> str:
    """``/``: the run at a glance, the layers with their strongest maps, the upload form (``upload``)."""
    index = explorer.index.data
    layers = [_layer_summary(explorer, name) for name in index["layers"]]
    default_layer = layers[-1]["name"]
    return _render("overview.html.j2", explorer, links, overview=explorer.overview, index=index, layers=layers,
                   upload=upload, default_layer=default_layer, figures=explorer.overview.figures())


def layer_page(explorer: Explorer, layer: str, links: Links) -> str:
    """``/layer/<layer>``: every map's strongest projection, sortable by activation strength."""
    entry = explorer.layer(layer)
    names = list(explorer.index.layers)
    at = names.index(layer)
    channels = [{"channel": c, "value": row[0], "mean": sum(row) / len(row), "live": row[0] > 0}
                for c, row in enumerate(entry["values"])]
    return _render("layer.html.j2", explorer, links, layer=layer, summary=_layer_summary(explorer, layer),
                   channels=channels, tile=entry["tile"], index=explorer.index.data,
                   previous=names[at - 1] if at else None, next=names[at + 1] if at + 1 < len(names) else None)


def channel_page(explorer: Explorer, layer: str, channel: str | int, links: Links) -> str:
    """``/layer/<layer>/<channel>``: the top-9 beside their patches, the evolution, the class histogram."""
    entry = explorer.layer(layer)
    c = explorer.channel(layer, channel)
    index = explorer.index.data
    names, classes = index["image_names"], index["class_names"]
    labels = entry["labels"][c] if entry["labels"] is not None else None
    top = [{"k": k, "value": entry["values"][c][k], "image": image, "y": entry["ys"][c][k], "x": entry["xs"][c][k],
            "name": names[image] if image < len(names) else str(image),
            "class": classes[labels[k]] if labels is not None and labels[k] < len(classes) else None}
           for k, image in enumerate(entry["images"][c])]
    histogram = Counter(t["class"] for t in top if t["class"] is not None).most_common()
    values = [row[0] for row in entry["values"]]
    rank = 1 + sum(v > values[c] for v in values)
    evolution = [{"epoch": e, "value": entry["evolution"][c][i]} for i, e in enumerate(index["epochs"])] \
        if "evolution" in entry else []
    return _render("channel.html.j2", explorer, links, layer=layer, channel=c, channels=entry["channels"], top=top,
                   histogram=histogram, rank=rank, evolution=evolution, tile=entry["tile"],
                   field=explorer.index.field(layer).size, filters=entry["filters"], index=index)


def error_page(status: int, message: str, valid: list[str], links: Links, explorer: Explorer | None = None) -> str:
    """A page saying what went wrong in one line, and what exists instead (``valid``)."""
    return _render("error.html.j2", explorer, links, status=status, message=message, valid=valid)


def building_page(explorer: Explorer, links: Links) -> str:
    """The page shown while the index is computed: its steps so far (it reloads itself)."""
    return _render("building.html.j2", None, links, progress=explorer.progress, overview=explorer.overview)


def tile_counts(explorer: Explorer, layer: str) -> dict[str, int]:
    """How many tiles of each kind (:data:`KINDS`) every map of ``layer`` has."""
    entry, data = explorer.layer(layer), explorer.index.data
    return {"projection": data["k"], "patch": data["k"],
            "evolution": len(data["epochs"] or []) if "evolution" in entry else 0, "filter": int(entry["filters"])}


def tile_png(explorer: Explorer, kind: str, layer: str, channel: str | int, k: str | int) -> bytes:
    """One tile as PNG bytes: ``kind`` (:data:`KINDS`) of map ``channel`` of ``layer``, its ``k``-th
    activation (or epoch). :class:`NotFound` for anything the index does not hold."""
    if kind not in KINDS:
        raise NotFound(f"no tile kind {kind!r}", KINDS)
    count = tile_counts(explorer, layer)[kind]
    c = explorer.channel(layer, channel)
    if not str(k).isdigit() or int(k) >= count:
        raise NotFound(f"no {kind} tile {k!r} of {layer} channel {c}", [f"0..{count - 1}"] if count else [])
    if kind == "patch":
        return explorer.patch_pngs(layer, c)[int(k)]
    sprite = {"projection": "projections", "evolution": "evolution", "filter": "filters"}[kind]
    return png(explorer.index.tile(sprite, layer, c, int(k)))
