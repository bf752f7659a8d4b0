"""The paper's feature figures for a trained checkpoint or any model (Figs. 2, 4, 6).

:func:`visualize` is what both the DVC stage (:mod:`zfnet.stages.visualize`) and ``zfnet visualize``
(:mod:`zfnet.cli.visualize`) call:
top-9 projections and patches per layer (Fig. 2), the layer-1 filters with their dead-filter and
frequency numbers (Fig. 6; also for any checkpoints to compare, e.g. the Krizhevsky 11x11/4
replica), and, given milestone checkpoints, the feature evolution (Fig. 4). ``--model
torchvision:alexnet --weights FILE --images DIR --layers features.11`` runs it on your own model
(:mod:`zfnet.viz.network`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch

from zfnet.viz.network import Network


def _image_names(dataset, images_dir: str | Path | None) -> list[str]:
    """Each scanned image's name: its source path in the dataset, or its file under ``images_dir``."""
    paths = dataset.paths()
    if images_dir is None:
        return paths
    root = Path(images_dir)
    return [Path(p).name if root.is_file() else Path(p).relative_to(root).as_posix() for p in paths]


def visualize(
    checkpoint: str | Path | Network,
    prepared: str | Path,
    out: str | Path,
    milestones: Sequence[str | Path] = (),
    compare: Mapping[str, str | Path] | None = None,
    split: str = "val",
    evolution_split: str = "train",
    maps: int = 16,
    evolution_maps: int = 4,
    stable: int = 7,
    dead_ratio: float = 0.1,
    max_images: int | None = None,
    batch_size: int = 128,
    max_batch: int = 256,
    device: str | torch.device = "cpu",
    images_dir: str | Path | None = None,
    max_pixels: int | None = None,
    layers: Sequence[str] | None = None,
    index: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Write the figures into ``out`` and return their paths and numbers.

    Args:
        checkpoint: the trained model (``models/model.pt``), or any model as a
            :class:`~zfnet.viz.network.Network` (then ``images_dir`` is needed).
        prepared: the prepared shards folder (``data/prepared``); mean and input scale come from the checkpoint.
        out: output folder: ``top9_<layer>.png``, ``filters_conv1.png``, ``filters_<label>.png``, ``evolution.png``.
        milestones: milestone checkpoints, epochs ascending (empty: no Fig. 4).
        compare: ``{label: checkpoint}`` whose layer-1 filters are drawn too (Fig. 6).
        split: split scanned for the top-9 (the paper uses the validation set).
        evolution_split: split scanned at every milestone (the paper uses the training set).
        maps: feature maps shown per layer in Fig. 2; evolution_maps: in Fig. 4.
        stable: top-9 images shared with the last milestone that count as converged.
        dead_ratio: a filter is dead below this fraction of its layer's median RMS.
        max_images: images used per split (None: all).
        batch_size: images per forward of the passes; max_batch: deconvnet chunk size.
        device: where the models run.
        images_dir: scan this folder of image files (any layout; resized and cropped as the model
            expects) instead of the prepared splits; max_pixels: their decompression-bomb limit.
        layers: the layers of Fig. 2 (:mod:`zfnet.viz.layers`); default ZFNet's ``conv1``..``conv5``.
        index: a folder for the top-9 index of every map (:mod:`zfnet.viz.index`, what ``zfnet
            explore`` browses), with every map's evolution when there are milestones; None: none.
        progress: called with a line saying what starts next (the passes take minutes on a large set).

    Returns ``{"top9": {layer: path}, "filters": {label: stats}, "evolution": dict | None, "purity":
    {"chance": float, layer: [class purity of each live map's top-9]} | None (an image folder has no
    labels), "images": images scanned for the top-9}``.
    """
    from zfnet.data.folder import ImageFiles
    from zfnet.data.shards import ShardDataset
    from zfnet.viz.evolution import evolution
    from zfnet.viz.filters import filters
    from zfnet.viz.index import Evolution, write_index
    from zfnet.viz.network import from_checkpoint
    from zfnet.viz.top9 import Images, class_purity, purity_chance, top9, top9_figures

    out, prepared = Path(out), Path(prepared)
    network = checkpoint if isinstance(checkpoint, Network) else from_checkpoint(checkpoint, device)
    if images_dir is None and network.checkpoint is None:
        raise ValueError("visualize: a model without a zfnet checkpoint needs images_dir (a folder of images)")
    folder = ImageFiles(images_dir, network.inputs.resize, max_pixels) if images_dir is not None else None

    def images(name: str) -> Images:
        dataset = folder if folder is not None else ShardDataset(prepared / name)
        return Images(dataset, network.inputs, batch_size, max_images, device)

    step = progress or (lambda message: None)
    data = images(split)
    step(f"top-9 pass over {len(data)} images")
    tops = top9(network.model, data, layers)
    step(f"top-9 figures of {len(tops)} layers (Fig. 2) and the layer-1 filters (Fig. 6)")
    figures = top9_figures(network.model, tops, data.fetch, out, maps, data.pixels, max_batch)
    purity = labels = None
    if folder is None:  # the prepared split has labels: how class-specific each layer's top-9 is
        labels = data.dataset.labels()[: len(data)]
        purity = {"chance": purity_chance(labels),
                  **{layer: [float(v) for v in class_purity(top, labels)] for layer, top in tops.items()}}
    stats = {"conv1": filters(network.model, out / "filters_conv1.png", dead_ratio)}
    for label, path in (compare or {}).items():
        stats[label] = filters(from_checkpoint(path).model, out / f"filters_{label}.png", dead_ratio,
                               title=f"{label}: conv1 filters")
    evolved = tracked = None
    if milestones:
        step(f"feature evolution over {len(milestones)} milestones (Fig. 4)")
        train = images(evolution_split)
        tracked = Evolution(train, max_batch) if index is not None else None
        evolved = evolution(milestones, train, train.fetch, out / "evolution.png", evolution_maps, stable,
                            device, max_batch, each=tracked.add if tracked else None)
    if index is not None:
        step(f"top-9 index: the projections of every map of {len(tops)} layers")
        write_index(index, network.model, tops, data, labels, [] if folder else data.dataset.class_names,
                    _image_names(data.dataset, images_dir)[: len(data)], tracked, max_batch,
                    meta={"model": network.name, "split": "folder" if folder else split,
                          "evolution_split": evolution_split if tracked else None})
    return {"top9": {k: str(v) for k, v in figures.items()}, "filters": stats, "evolution": evolved,
            "purity": purity, "images": len(data)}
