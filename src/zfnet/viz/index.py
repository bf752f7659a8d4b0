"""The top-9 index: every feature map's top-9 and its tiles, for browsing every map (``zfnet explore``).

Fig. 2 shows 16 maps per layer; the top-9 pass (:func:`~zfnet.viz.top9.top9`) has recorded all of
them. :func:`write_index` keeps that record and its pictures in a folder:

- ``index.json`` (written last: no ``index.json``, no index): per layer, ``values``, ``images``,
  ``ys``, ``xs`` (each ``C`` rows of ``k``: the activation, the scanned image's index, the position
  in the map) and ``labels`` (each image's class, or null for an unlabelled folder); the receptive
  field's geometry (:class:`~zfnet.viz.receptive.ReceptiveField` ``ops``); the image names and
  class names; with milestones, each map's strongest activation at each epoch (``evolution``);
- ``projections_<layer>.png``: a sprite of ``C`` rows by ``k`` tiles, the deconvnet projection of
  each activation cropped to its receptive field, each ``s x s`` with ``s`` the field's side, at
  most :data:`TILE` (shrunk by area averaging above it), then contrast-normalised per tile (zero at
  mid-grey). The image patches are not stored: :meth:`Top9Index.patches` cuts them from
  the scanned images at their full size (the index stays a few MB);
- ``evolution_<layer>.png``: ``C`` rows by ``E`` epochs, the projection of each map's strongest
  activation at each milestone (Fig. 4 for every map);
- ``filters_<layer>.png`` for the layer of the first convolution on the image: ``C`` rows of one
  tile, each filter contrast-stretched on its own (Fig. 6).

Every file is written atomically (:mod:`zfnet.io`), so a reader never sees half of one.
:class:`Top9Index` reads the folder back: the numbers at once, a sprite when first asked for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from zfnet.data.transforms import center_crop
from zfnet.io import write_bytes, write_json
from zfnet.viz.grids import normalize_minmax, normalize_signed, png_bytes, resize
from zfnet.viz.receptive import ReceptiveField, crop, receptive_field
from zfnet.viz.top9 import Images, TopActivations, project_top

VERSION = 1
TILE = 48  # the largest tile side kept, pixels
SPRITES = ("projections", "evolution", "filters")


def _uint8(tiles: torch.Tensor) -> np.ndarray:
    """``(N, 3, h, w)`` in [0, 1] -> ``(N, h, w, 3)`` uint8."""
    return (tiles.float().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()


def write_sprite(tiles: np.ndarray, path: str | Path) -> None:
    """``(rows, cols, s, s, 3)`` uint8 tiles as one PNG of ``rows * s`` by ``cols * s`` pixels, atomically."""
    rows, cols, s = tiles.shape[:3]
    write_bytes(path, png_bytes(tiles.transpose(0, 2, 1, 3, 4).reshape(rows * s, cols * s, 3)))


def projection_tiles(model: nn.Module, layer: str, top: TopActivations, data: Images, max_batch: int = 256,
                     tile: int = TILE) -> np.ndarray:
    """The deconvnet projection of every recorded activation, cropped to its receptive field:
    ``(C, k, s, s, 3)`` uint8 (module docstring). Projected ``max(1, max_batch // k)`` maps at a
    time, so only the uint8 tiles are ever held whole."""
    receptive = receptive_field(model, layer, data.inputs.size)
    side = min(receptive.size, tile)
    maps, k = top.values.shape
    tiles = np.empty((maps, k, side, side, 3), np.uint8)
    for chosen in torch.arange(maps).split(max(1, max_batch // k)):
        recon, _ = project_top(model, layer, top, chosen, data.fetch, max_batch, receptive)
        shown = normalize_signed(resize(recon.flatten(0, 1), side))  # normalised as shown: a shrunk tile keeps its contrast
        tiles[chosen.numpy()] = _uint8(shown).reshape(len(chosen), k, side, side, 3)
    return tiles


def _first_conv_layer(model: nn.Module, tops: dict[str, TopActivations]) -> str | None:
    """The layer whose maps are the first image convolution's (its filters can be shown), if any."""
    from zfnet.viz.filters import first_filters

    try:
        filters = first_filters(model)
    except ValueError:
        return None
    first = next(iter(tops))
    return first if len(tops[first].values) == len(filters) else None


def _rows(t: torch.Tensor, digits: int | None = None) -> list[list]:
    return [[round(float(v), digits) if digits is not None else int(v) for v in row] for row in t]


@dataclass
class Evolution:
    """Each milestone's strongest activation of every map, projected (Fig. 4 for every map): filled
    by :meth:`add` (:func:`~zfnet.viz.evolution.evolution`'s ``each`` callback), epochs ascending,
    and written by :func:`write_index`."""

    data: Images  # the images the milestones' top-9 passes scan
    max_batch: int = 256
    tile: int = TILE
    epochs: list[int] = field(default_factory=list)
    tiles: dict[str, list[np.ndarray]] = field(default_factory=dict)  # per milestone (C, s, s, 3) uint8
    values: dict[str, list[torch.Tensor]] = field(default_factory=dict)  # per milestone (C,)

    def add(self, epoch: int, model: nn.Module, tops: dict[str, TopActivations]) -> None:
        self.epochs.append(int(epoch))
        for layer, top in tops.items():
            first = top.top(1)
            self.tiles.setdefault(layer, []).append(
                projection_tiles(model, layer, first, self.data, self.max_batch, self.tile)[:, 0])
            self.values.setdefault(layer, []).append(first.values[:, 0])


def write_index(out: str | Path, model: nn.Module, tops: dict[str, TopActivations], data: Images,
                labels: np.ndarray | None = None, class_names: Sequence[str] = (), image_names: Sequence[str] = (),
                evolution: Evolution | None = None, max_batch: int = 256, tile: int = TILE,
                meta: dict | None = None) -> Path:
    """Write the index of ``tops`` (every map of every layer, :func:`~zfnet.viz.top9.top9` over
    ``data``) into the folder ``out`` (module docstring); returns ``out / "index.json"``.

    ``labels``: the ``(N,)`` classes of ``data``'s images (None: unlabelled) named by ``class_names``;
    ``image_names``: a name per image (its file); ``evolution``: the milestones' tiles; ``meta``:
    kept as is (what was scanned, which model).
    """
    out = Path(out)
    filters_of = _first_conv_layer(model, tops)
    layers = {}
    for layer, top in tops.items():
        projections = projection_tiles(model, layer, top, data, max_batch, tile)
        write_sprite(projections, out / f"projections_{layer}.png")
        layers[layer] = {"channels": len(top.values), "tile": projections.shape[2],
                         "field": [list(op) for op in receptive_field(model, layer, data.inputs.size).ops],
                         "values": _rows(top.values, 4), "images": _rows(top.images), "ys": _rows(top.ys),
                         "xs": _rows(top.xs), "filters": layer == filters_of,
                         "labels": None if labels is None else _rows(torch.as_tensor(labels)[top.images])}
        if layer == filters_of:
            from zfnet.viz.filters import first_filters

            weight = normalize_minmax(first_filters(model).detach().float().cpu())
            write_sprite(_uint8(weight)[:, None], out / f"filters_{layer}.png")
    if evolution is not None:
        for layer, tiles in evolution.tiles.items():
            write_sprite(np.stack(tiles, 1), out / f"evolution_{layer}.png")
            layers[layer]["evolution"] = _rows(torch.stack(evolution.values[layer], 1), 4)
    index = {"version": VERSION, "k": next(iter(tops.values())).values.shape[1], "images": len(data),
             "input_size": data.inputs.size, "image_names": list(image_names), "class_names": list(class_names),
             "epochs": evolution.epochs if evolution is not None and evolution.epochs else None,
             "layers": layers, **(meta or {})}
    write_json(out / "index.json", index, sort_keys=False)
    return out / "index.json"


class Top9Index:
    """A folder written by :func:`write_index`, read back: :attr:`data` (``index.json``), the tiles
    (:meth:`tile`; each sprite decoded once, when first asked for) and the image patches
    (:meth:`patches`, cut from the scanned images)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        path = self.folder / "index.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no top-9 index (the visualize stage writes it)")
        self.data = json.loads(path.read_text())
        if self.data.get("version") != VERSION:
            raise ValueError(f"{path}: index version {self.data.get('version')}, this code reads {VERSION}")
        self.layers: dict[str, dict] = self.data["layers"]
        self._sprites: dict[tuple[str, str], np.ndarray] = {}

    def sprite(self, kind: str, layer: str) -> np.ndarray:
        """The ``(C, cols, s, s, 3)`` uint8 tiles of ``kind`` (:data:`SPRITES`) for ``layer``."""
        key = (kind, layer)
        if key not in self._sprites:
            with Image.open(self.folder / f"{kind}_{layer}.png") as img:
                pixels = np.asarray(img.convert("RGB"))
            rows = self.layers[layer]["channels"]
            s = pixels.shape[0] // rows
            self._sprites[key] = pixels.reshape(rows, s, pixels.shape[1] // s, s, 3).transpose(0, 2, 1, 3, 4)
        return self._sprites[key]

    def tile(self, kind: str, layer: str, channel: int, k: int = 0) -> np.ndarray:
        """One ``(s, s, 3)`` uint8 tile: ``kind`` of map ``channel``'s ``k``-th activation (or epoch)."""
        return self.sprite(kind, layer)[channel, k]

    def field(self, layer: str) -> ReceptiveField:
        return ReceptiveField(tuple(tuple(op) for op in self.layers[layer]["field"]))

    def patches(self, layer: str, channel: int, dataset) -> np.ndarray:
        """The receptive-field patches of map ``channel``'s top-k, ``(k, s, s, 3)`` uint8 at the field's
        full side (zero outside the image), cut from ``dataset``: the images the index was made from
        (``get_batch(indices) -> (uint8 (B, 3, S, S), labels)``, as :class:`~zfnet.viz.top9.Images` reads them)."""
        entry = self.layers[layer]
        images, _ = dataset.get_batch(entry["images"][channel])
        x = center_crop(images, self.data["input_size"])
        ys, xs = torch.tensor(entry["ys"][channel]), torch.tensor(entry["xs"][channel])
        return crop(x, self.field(layer), ys, xs).permute(0, 2, 3, 1).numpy()
