"""Fig. 2: the 9 strongest activations of each feature map over a dataset, projected and with their patches.

One streaming pass (:func:`top9`) records, for every feature map of every named layer at once
(any model, :mod:`zfnet.viz.layers`), the ``k`` strongest activations ``(value, image, y, x)``: one
forward per batch, stopped above the highest layer, with a hook on each layer that takes each
image's maximum per map and merges it into a running top-``k`` per map (``torch.topk`` over the
current best and the batch's maxima). Memory is ``O(C * k)`` per layer, independent of the
dataset's size, and the ``k`` come from ``k`` different images, as in the paper.

:func:`project_top` then projects them with the :class:`~zfnet.viz.Deconvnet` (batched over images
and maps) and crops the exact receptive-field patch of each: :func:`top9_figures` draws, per layer,
one PNG in which every shown map is a 3x3 block of projections beside a 3x3 block of patches.

The dataset arrives as a plain iterable of ``(images, indices)`` batches (model input
``(B, 3, H, W)``, dataset indices ``(B,)``) plus a ``fetch(indices) -> images`` callable for random
access; :class:`Images` adapts a prepared split or a folder of image files to both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from zfnet.models.inputs import InputSpec
from zfnet.viz.deconvnet import Deconvnet
from zfnet.viz.grids import normalize_minmax, normalize_signed, resize, save_figure, side_by_side, tile
from zfnet.viz.layers import LayerError, Tap, blocks, names
from zfnet.viz.receptive import ReceptiveField, crop, receptive_field

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]
Fetch = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class TopActivations:
    """The ``k`` strongest activations of each of the ``C`` maps of one layer, strongest first.

    All fields are ``(C, k)``: ``values`` (post-ReLU activation), ``images`` (dataset indices,
    distinct within a row), ``ys``, ``xs`` (position in the layer's map).
    """

    values: torch.Tensor
    images: torch.Tensor
    ys: torch.Tensor
    xs: torch.Tensor

    def top(self, k: int) -> "TopActivations":
        """Only each map's ``k`` strongest recorded activations (fields ``(C, k)``, fewer if fewer were kept)."""
        return TopActivations(self.values[:, :k], self.images[:, :k], self.ys[:, :k], self.xs[:, :k])

    def strongest_maps(self, n: int) -> torch.Tensor:
        """``(min(n, C),)`` indices of the maps with the largest top activation, strongest first."""
        return self.values[:, 0].argsort(descending=True)[:n]


def class_purity(top: TopActivations, labels: np.ndarray) -> torch.Tensor:
    """Per live map (top activation > 0), the share of its top-k images that belong to the map's
    most common class among them: ``(C_live,)`` in [1/k, 1]. ``labels``: the dataset's ``(N,)``
    classes. How class-specific a layer's features are (Fig. 2: higher layers more so)."""
    live = top.values[:, 0] > 0
    classes = torch.as_tensor(np.asarray(labels))[top.images[live]]  # (C_live, k)
    k = classes.shape[1]
    counts = (classes[:, :, None] == classes[:, None, :]).sum(2)  # each image's class count in its row
    return counts.amax(1).float() / k


def purity_chance(labels: np.ndarray, k: int = 9, draws: int = 2000, seed: int = 0) -> float:
    """:func:`class_purity` of ``k`` images drawn at random from the dataset: its chance level."""
    rng = np.random.default_rng(seed)
    picks = np.asarray(labels)[rng.integers(0, len(labels), (draws, k))]
    return float(np.mean([np.bincount(row).max() / k for row in picks]))


class TopRecorder:
    """Running top-``k`` per feature map of ``layers``, fed by :meth:`run` (its hooks live between
    ``__enter__`` and ``__exit__``)."""

    def __init__(self, model: nn.Module, layers: Sequence[str], k: int = 9):
        self.model, self.layers, self.k = model, list(layers), k
        self.indices: torch.Tensor | None = None
        self.best: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}  # values, images, flat positions
        self.width: dict[str, int] = {}
        self._tap = Tap(model, self.layers, self._update)

    def __enter__(self) -> "TopRecorder":
        self._tap.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._tap.__exit__(*exc)

    def run(self, images: torch.Tensor, indices: torch.Tensor) -> None:
        """Merge the activations of ``images`` ``(B, 3, H, W)`` (dataset ``indices`` ``(B,)``) into the record."""
        self.indices = torch.as_tensor(indices, dtype=torch.long)
        self._tap.run(images)

    def _update(self, layer: str, act: torch.Tensor) -> None:
        if act.dim() != 4:
            raise LayerError(f"top-9 needs feature maps (N, C, h, w); layer {layer!r} gives {tuple(act.shape)}")
        value, pos = act.flatten(2).max(2)  # (B, C): each image's strongest activation per map
        images = self.indices.to(act.device)[None].expand(act.shape[1], -1)  # (C, B)
        value, pos = value.T, pos.T
        if layer in self.best:
            best_v, best_i, best_p = self.best[layer]
            value, images, pos = torch.cat([best_v, value], 1), torch.cat([best_i, images], 1), torch.cat([best_p, pos], 1)
        top = value.topk(min(self.k, value.shape[1]), dim=1)
        self.best[layer] = (top.values, images.gather(1, top.indices), pos.gather(1, top.indices))
        self.width[layer] = act.shape[-1]

    def result(self) -> dict[str, TopActivations]:
        """Per layer (in the order given), the top activations recorded so far (on the CPU)."""
        out = {}
        for layer in self.layers:
            value, images, pos = self.best[layer]
            w = self.width[layer]
            out[layer] = TopActivations(value.cpu(), images.cpu(), (pos // w).cpu(), (pos % w).cpu())
        return out


def default_layers(model: nn.Module) -> list[str]:
    """The layers Fig. 2 shows by default: ZFNet's ``conv1``..``conv5`` (those present); other models must name theirs."""
    layers = [name for name in blocks(model) if name.startswith("conv")]
    if not layers:
        raise LayerError(f"name the layers to visualise for a {type(model).__name__} (e.g. {names(model)[:3]})")
    return layers


@torch.inference_mode()
def top9(model: nn.Module, batches: Batches, layers: Sequence[str] | None = None, k: int = 9) -> dict[str, TopActivations]:
    """One pass over ``batches``: the ``k`` strongest activations of every map of ``layers``.

    Args:
        model: any model (its mode is left as is; use eval mode).
        batches: ``(images (B, 3, H, W) model input, indices (B,) dataset indices)`` pairs.
        layers: layer names with ``(N, C, h, w)`` feature maps (:mod:`zfnet.viz.layers`), all
            recorded in each batch's single forward; default :func:`default_layers`.
        k: activations kept per map (9 in the paper), from ``k`` different images.

    Returns ``{layer: TopActivations}`` with ``(C, k)`` fields.
    """
    layers = default_layers(model) if layers is None else list(layers)
    total = len(batches) if isinstance(batches, Images) else None  # images (a progress bar on a terminal)
    with TopRecorder(model, layers, k) as recorder, tqdm(total=total, desc="top-9 pass", unit="img", disable=None,
                                                         leave=False) as bar:
        for images, indices in batches:
            recorder.run(images, indices)
            bar.update(len(indices))
    return recorder.result()


def project_top(
    model: nn.Module,
    layer: str,
    top: TopActivations,
    maps: torch.Tensor,
    fetch: Fetch,
    max_batch: int = 256,
    field: ReceptiveField | None = None,
    pixels: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Deconvnet projections of the recorded activations of ``maps``, and the images they come from.

    Returns ``(projections, images)``, both ``(len(maps), k, 3, H, W)``: raw reconstructions and the
    fetched model input (through ``pixels`` if given, e.g. display pixels). With ``field`` both are
    cropped to each unit's receptive field, ``(len(maps), k, 3, s, s)``; items are fetched,
    projected and cropped ``max_batch`` at a time, so only the crops are ever held.
    """
    k = top.values.shape[1]
    image, channel = top.images[maps].flatten(), maps.repeat_interleave(k)
    ys, xs = top.ys[maps].flatten(), top.xs[maps].flatten()
    device = next(model.parameters()).device
    deconvnet = Deconvnet(model, max_batch)
    recon = shown = None
    for part in image.argsort(stable=True).split(max_batch):  # a chunk's items share few images
        used, item_image = image[part].unique(return_inverse=True)
        x = fetch(used).to(device)
        r = deconvnet.project_at(x, layer, channel[part], ys[part], xs[part], item_image, field)
        p = x if pixels is None else pixels(x)
        p = p[item_image] if field is None else crop(p, field, ys[part], xs[part], item_image)
        if recon is None:
            recon, shown = r.new_empty(len(image), *r.shape[1:]).cpu(), p.new_empty(len(image), *p.shape[1:]).cpu()
        recon[part], shown[part] = r.cpu(), p.cpu()
    return recon.view(len(maps), k, *recon.shape[1:]), shown.view(len(maps), k, *shown.shape[1:])


def top9_figures(
    model: nn.Module,
    tops: dict[str, TopActivations],
    fetch: Fetch,
    out_dir: str | Path,
    maps: int = 16,
    pixels: Callable[[torch.Tensor], torch.Tensor] | None = None,
    max_batch: int = 256,
    min_tile: int = 32,
) -> dict[str, Path]:
    """Write Fig. 2, one PNG per layer: for each of the ``maps`` strongest maps, 3x3 projections | 3x3 patches.

    Args:
        model, tops: the model and its :func:`top9` record.
        fetch: dataset indices ``(M,)`` -> model input ``(M, 3, H, W)``.
        out_dir: where ``top9_<layer>.png`` go.
        maps: feature maps shown per layer (those with the largest top activation).
        pixels: model input ``(M, 3, h, w)`` -> displayable ``[0, 1]`` pixels; default: min-max stretch per patch.
        max_batch: deconvnet chunk size.
        min_tile: patches smaller than this many pixels are enlarged (nearest neighbour) for display.

    Each projection and its patch are cropped to the unit's receptive field (zero outside the image);
    projections are contrast-normalised one by one (:func:`~zfnet.viz.grids.normalize_signed`).
    Returns ``{layer: path}``.
    """
    out_dir = Path(out_dir)
    paths = {}
    for layer, top in tops.items():
        chosen = top.strongest_maps(maps)
        field = receptive_field(model, layer, fetch(top.images[:1, 0]).shape[-1])
        recon, patches = project_top(model, layer, top, chosen, fetch, max_batch, field, pixels)
        n, k = recon.shape[:2]
        shown = patches.flatten(0, 1) if pixels is not None else normalize_minmax(patches.flatten(0, 1))
        size = max(field.size, min_tile)
        proj = resize(normalize_signed(recon.flatten(0, 1)), size).view(n, k, 3, size, size)
        patch = resize(shown, size).view(n, k, 3, size, size)
        side = math.ceil(math.sqrt(k))
        cells = torch.stack([side_by_side(tile(p, side), tile(q, side), gap=4) for p, q in zip(proj, patch)])
        title = f"{layer}: top-{k} activations of {n} feature maps (deconvnet projection | image patch)"
        paths[layer] = save_figure(tile(cells, math.ceil(math.sqrt(n)), pad=8), out_dir / f"top9_{layer}.png", title)
    return paths


class Images:
    """A dataset as the viz passes read it: re-iterable batches of model input, random access, display pixels.

    Args:
        dataset: has ``len()`` and ``get_batch(indices) -> (uint8 (B, 3, S, S), labels)``
            (:class:`zfnet.data.shards.ShardDataset`, :class:`zfnet.data.folder.ImageFiles`), ``S = inputs.resize``.
        inputs: how the model sees them (:class:`~zfnet.models.inputs.InputSpec`).
        batch_size: images per batch of the pass.
        limit: use only the first ``limit`` images (None: all).
        device: where batches are put.
    """

    def __init__(self, dataset, inputs: InputSpec, batch_size: int = 128, limit: int | None = None,
                 device: str | torch.device = "cpu"):
        self.dataset, self.inputs = dataset, inputs
        self.batch_size, self.device = batch_size, torch.device(device)
        self.count = len(dataset) if limit is None else min(limit, len(dataset))

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, self.count, self.batch_size):
            indices = torch.arange(start, min(start + self.batch_size, self.count))
            yield self.fetch(indices), indices

    def fetch(self, indices: torch.Tensor) -> torch.Tensor:
        """Dataset indices ``(M,)`` -> model input ``(M, 3, size, size)`` on :attr:`device`."""
        pixels, _ = self.dataset.get_batch([int(i) for i in indices])
        return self.inputs.model_input(pixels).to(self.device)

    def pixels(self, images: torch.Tensor) -> torch.Tensor:
        """Model input ``(M, 3, h, w)`` -> displayable pixels in [0, 1]."""
        return self.inputs.pixels(images.cpu())


class ShardImages(Images):
    """:class:`Images` from a checkpoint dict's loose ``mean``, ``input_scale`` and ``input_size``
    (for :func:`zfnet.experiments.ablation.conv2_views`; new code passes an InputSpec to :class:`Images`)."""

    def __init__(self, dataset, mean: torch.Tensor | None, input_scale: float, input_size: int,
                 batch_size: int = 128, limit: int | None = None, device: str | torch.device = "cpu"):
        super().__init__(dataset, InputSpec.mean_image(mean, input_scale, input_size), batch_size, limit, device)
