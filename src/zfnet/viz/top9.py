"""Fig. 2: the 9 strongest activations of each feature map over a dataset, projected and with their patches.

One streaming pass (:func:`top9`) records, for every feature map of every conv layer at once, the
``k`` strongest activations ``(value, image, y, x)``: one forward per batch with a hook on each
layer's ReLU that takes each image's maximum per map and merges it into a running top-``k`` per map
(``torch.topk`` over the current best and the batch's maxima). Memory is ``O(C * k)`` per layer,
independent of the dataset's size, and the ``k`` come from ``k`` different images, as in the paper.

:func:`top9_figures` then projects each of them with the :class:`~zfnet.viz.Deconvnet` (batched)
and crops the exact receptive-field patch of the image: per layer, one PNG in which every shown
map is a 3x3 block of projections beside a 3x3 block of patches.

The dataset arrives as a plain iterable of ``(images, indices)`` batches (preprocessed float
``(B, 3, H, W)``, dataset indices ``(B,)``) plus a ``fetch(indices) -> images`` callable for random
access; :class:`ShardImages` adapts a prepared split to both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.hooks import RemovableHandle
from tqdm.auto import tqdm

from zfnet.data.transforms import center_crop, normalize
from zfnet.models import ConvNet
from zfnet.viz.deconvnet import Deconvnet, forward_to
from zfnet.viz.grids import normalize_minmax, normalize_signed, resize, save_figure, side_by_side, tile
from zfnet.viz.receptive import crop, receptive_field

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
    """Running top-``k`` per feature map of ``layers``; hooks live between ``__enter__`` and ``__exit__``.

    Before each forward, set :attr:`indices` to the batch's ``(B,)`` dataset indices.
    """

    def __init__(self, model: ConvNet, layers: Sequence[str], k: int = 9):
        self.model, self.layers, self.k = model, list(layers), k
        self.indices: torch.Tensor | None = None
        self.best: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}  # values, images, flat positions
        self.width: dict[str, int] = {}
        self._handles: list[RemovableHandle] = []

    def __enter__(self) -> "TopRecorder":
        for layer in self.layers:
            self._handles.append(self.model.layer(layer).relu.register_forward_hook(self._update(layer)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _update(self, layer: str):
        def hook(module: nn.Module, inputs: tuple[torch.Tensor], act: torch.Tensor) -> None:
            value, pos = act.flatten(2).max(2)  # (B, C): each image's strongest activation per map
            images = self.indices.to(act.device)[None].expand(act.shape[1], -1)  # (C, B)
            value, pos = value.T, pos.T
            if layer in self.best:
                best_v, best_i, best_p = self.best[layer]
                value, images, pos = torch.cat([best_v, value], 1), torch.cat([best_i, images], 1), torch.cat([best_p, pos], 1)
            top = value.topk(min(self.k, value.shape[1]), dim=1)
            self.best[layer] = (top.values, images.gather(1, top.indices), pos.gather(1, top.indices))
            self.width[layer] = act.shape[-1]

        return hook

    def result(self) -> dict[str, TopActivations]:
        """Per layer, the top activations recorded so far (on the CPU)."""
        out = {}
        for layer, (value, images, pos) in self.best.items():
            w = self.width[layer]
            out[layer] = TopActivations(value.cpu(), images.cpu(), (pos // w).cpu(), (pos % w).cpu())
        return out


@torch.inference_mode()
def top9(model: ConvNet, batches: Batches, layers: Sequence[str] | None = None, k: int = 9) -> dict[str, TopActivations]:
    """One pass over ``batches``: the ``k`` strongest activations of every map of ``layers`` (default: all conv layers).

    Args:
        model: the convnet (its mode is left as is; use eval mode).
        batches: ``(images (B, 3, H, W) preprocessed, indices (B,) dataset indices)`` pairs.
        layers: conv layers to record; all of them share each batch's single forward.
        k: activations kept per map (9 in the paper), from ``k`` different images.

    Returns ``{layer: TopActivations}`` with ``(C, k)`` fields.
    """
    names = [name for name, _ in model.features.named_children()]
    layers = names if layers is None else list(layers)
    top_layer = max(layers, key=names.index)
    total = len(batches) if isinstance(batches, ShardImages) else None  # images (a progress bar on a terminal)
    with TopRecorder(model, layers, k) as recorder, tqdm(total=total, desc="top-9 pass", unit="img", disable=None,
                                                         leave=False) as bar:
        for images, indices in batches:
            recorder.indices = torch.as_tensor(indices, dtype=torch.long)
            forward_to(model, images, top_layer)
            bar.update(len(indices))
    return recorder.result()


def project_top(
    model: ConvNet,
    layer: str,
    top: TopActivations,
    maps: torch.Tensor,
    fetch: Fetch,
    max_batch: int = 256,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Deconvnet projections of the recorded activations of ``maps``, and the images they come from.

    Returns ``(projections, images)``, both ``(len(maps), k, 3, H, W)``: raw reconstructions and the
    fetched preprocessed images.
    """
    k = top.values.shape[1]
    images = fetch(top.images[maps].flatten())
    device = next(model.parameters()).device
    recon = Deconvnet(model, max_batch).project_at(
        images.to(device), layer, maps.repeat_interleave(k), top.ys[maps].flatten(), top.xs[maps].flatten()
    )
    return recon.cpu().view(len(maps), k, *images.shape[1:]), images.cpu().view(len(maps), k, *images.shape[1:])


def top9_figures(
    model: ConvNet,
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
        model, tops: the convnet and its :func:`top9` record.
        fetch: dataset indices ``(M,)`` -> preprocessed images ``(M, 3, H, W)``.
        out_dir: where ``top9_<layer>.png`` go.
        maps: feature maps shown per layer (those with the largest top activation).
        pixels: preprocessed ``(M, 3, H, W)`` -> displayable ``[0, 1]`` pixels; default: min-max stretch per patch.
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
        recon, images = project_top(model, layer, top, chosen, fetch, max_batch)
        n, k = recon.shape[:2]
        field = receptive_field(model, layer)
        ys, xs = top.ys[chosen].flatten(), top.xs[chosen].flatten()
        shown = pixels(images.flatten(0, 1)) if pixels is not None else images.flatten(0, 1)
        size = max(field.size, min_tile)
        proj = resize(normalize_signed(crop(recon.flatten(0, 1), field, ys, xs)), size).view(n, k, 3, size, size)
        patch = crop(shown, field, ys, xs)
        patch = resize(patch if pixels is not None else normalize_minmax(patch), size).view(n, k, 3, size, size)
        side = math.ceil(math.sqrt(k))
        cells = torch.stack([side_by_side(tile(p, side), tile(q, side), gap=4) for p, q in zip(proj, patch)])
        title = f"{layer}: top-{k} activations of {n} feature maps (deconvnet projection | image patch)"
        paths[layer] = save_figure(tile(cells, math.ceil(math.sqrt(n)), pad=8), out_dir / f"top9_{layer}.png", title)
    return paths


class ShardImages:
    """A prepared split as the viz passes read it: re-iterable batches, random access, display pixels.

    Model input is the centre ``input_size`` crop of ``(pixels - mean) * input_scale``, as in training.

    Args:
        dataset: has ``len()`` and ``get_batch(indices) -> (uint8 (B, 3, S, S), labels)``
            (:class:`zfnet.data.shards.ShardDataset`).
        mean: ``(3, S, S)`` per-pixel mean (0..255) or None (no mean subtracted).
        input_scale: the checkpoint's input scale.
        input_size: the model's input side.
        batch_size: images per batch of the pass.
        limit: use only the first ``limit`` images (None: all).
        device: where batches are put.
    """

    def __init__(self, dataset, mean: torch.Tensor | None, input_scale: float, input_size: int,
                 batch_size: int = 128, limit: int | None = None, device: str | torch.device = "cpu"):
        self.dataset, self.input_scale, self.input_size = dataset, input_scale, input_size
        self.mean = center_crop(mean.float(), input_size) if mean is not None else torch.zeros(3, input_size, input_size)
        self.batch_size, self.device = batch_size, torch.device(device)
        self.count = len(dataset) if limit is None else min(limit, len(dataset))

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, self.count, self.batch_size):
            indices = torch.arange(start, min(start + self.batch_size, self.count))
            yield self.fetch(indices), indices

    def fetch(self, indices: torch.Tensor) -> torch.Tensor:
        """Dataset indices ``(M,)`` -> model input ``(M, 3, input_size, input_size)`` on :attr:`device`."""
        pixels, _ = self.dataset.get_batch([int(i) for i in indices])
        return normalize(center_crop(pixels, self.input_size), self.mean, self.input_scale).to(self.device)

    def pixels(self, images: torch.Tensor) -> torch.Tensor:
        """Model input ``(M, 3, h, w)`` -> displayable pixels in [0, 1]."""
        return ((images.cpu() / self.input_scale + self.mean) / 255).clamp(0, 1)
