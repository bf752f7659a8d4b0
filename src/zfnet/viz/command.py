"""``zfnet visualize``: the paper's feature figures for a trained checkpoint or any model (Figs. 2, 4, 6).

:func:`visualize` is what both the CLI and the DVC stage (:mod:`zfnet.stages.visualize`) call:
top-9 projections and patches per layer (Fig. 2), the layer-1 filters with their dead-filter and
frequency numbers (Fig. 6; also for any checkpoints to compare, e.g. the Krizhevsky 11x11/4
replica), and, given milestone checkpoints, the feature evolution (Fig. 4). ``--model
torchvision:alexnet --weights FILE --images DIR --layers features.11`` runs it on your own model
(:mod:`zfnet.viz.network`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Mapping, Sequence

import torch

from zfnet.viz.network import Network


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

    Returns ``{"top9": {layer: path}, "filters": {label: stats}, "evolution": dict | None, "purity":
    {"chance": float, layer: [class purity of each live map's top-9]} | None (an image folder has no
    labels), "images": images scanned for the top-9}``.
    """
    from zfnet.data.folder import ImageFiles
    from zfnet.data.shards import ShardDataset
    from zfnet.viz.evolution import evolution
    from zfnet.viz.filters import filters
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

    data = images(split)
    tops = top9(network.model, data, layers)
    figures = top9_figures(network.model, tops, data.fetch, out, maps, data.pixels, max_batch)
    purity = None
    if folder is None:  # the prepared split has labels: how class-specific each layer's top-9 is
        labels = data.dataset.labels()[: len(data)]
        purity = {"chance": purity_chance(labels),
                  **{layer: [float(v) for v in class_purity(top, labels)] for layer, top in tops.items()}}
    stats = {"conv1": filters(network.model, out / "filters_conv1.png", dead_ratio)}
    for label, path in (compare or {}).items():
        stats[label] = filters(from_checkpoint(path).model, out / f"filters_{label}.png", dead_ratio,
                               title=f"{label}: conv1 filters")
    evolved = None
    if milestones:
        train = images(evolution_split)
        evolved = evolution(milestones, train, train.fetch, out / "evolution.png", evolution_maps, stable,
                            device, max_batch)
    return {"top9": {k: str(v) for k, v in figures.items()}, "filters": stats, "evolution": evolved,
            "purity": purity, "images": len(data)}


def _labelled_checkpoint(text: str) -> tuple[str, str]:
    """``--compare``'s ``LABEL=CHECKPOINT``."""
    from zfnet.cli_options import checkpoint_file

    label, sep, path = text.partition("=")
    if not sep or not label:
        raise argparse.ArgumentTypeError(f"expected LABEL=CHECKPOINT, got {text!r}")
    return label, checkpoint_file(path)


def _milestones(folder: str | None) -> list[Path]:
    from zfnet.cli_options import checkpoint_problem
    from zfnet.config import ConfigError

    if folder is None:
        return []
    milestones = sorted(Path(folder).glob("epoch-*.pt"))
    if not milestones:
        raise ConfigError(f"--milestones: no epoch-NNN.pt checkpoint in {folder}")
    problems = [p for p in map(checkpoint_problem, milestones) if p]
    if problems:
        raise ConfigError(f"--milestones: {problems[0]}")
    return milestones


def _run(args: argparse.Namespace) -> int:
    import sys

    from zfnet.cli_options import device, output_dir
    from zfnet.config import ConfigError
    from zfnet.viz.layers import LayerError, check_maps
    from zfnet.viz.network import from_args
    from zfnet.viz.top9 import default_layers

    network = from_args(args, device(args.device))
    if network.checkpoint is None and args.images is None:
        raise ConfigError("--images: needed with --model (a folder of your images to scan)")
    if network.checkpoint is None and (args.milestones or args.compare):
        raise ConfigError("--milestones, --compare: zfnet checkpoints only, not with --model")
    try:
        check_maps(network.model, args.layers or default_layers(network.model), network.inputs.size)
    except LayerError as exc:
        raise ConfigError(f"--layers: {exc}") from None
    out = output_dir(args.out, "visualize")
    result = visualize(
        network, args.prepared, out, _milestones(args.milestones), dict(args.compare), args.split,
        args.evolution_split, args.maps, args.evolution_maps, args.stable, args.dead_ratio, args.max_images or None,
        args.batch_size, args.max_batch, device(args.device), args.images, args.max_pixels, args.layers,
    )
    print(json.dumps(result, indent=2))
    if result["images"] < 9:
        print(f"zfnet visualize: note: only {result['images']} images, so each top-9 shows {result['images']}, "
              "not 9 (give more images for the paper's 3x3 grids)", file=sys.stderr)
    print(f"zfnet visualize: wrote {out}/", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from zfnet.cli_options import max_pixels_option, mirror, number
    from zfnet.config import VizConfig
    from zfnet.viz.network import add_options

    p = sub.add_parser(
        "visualize",
        help="deconvnet figures of a checkpoint or your own model: top-9 (Fig. 2), evolution (Fig. 4), filters (Fig. 6)",
        description="Project the 9 strongest activations of each feature map of conv1..conv5 (or of the "
        "--layers of your --model) to pixel space with the deconvnet, next to their receptive-field "
        "patches (Fig. 2); draw the layer-1 filters with dead-filter and frequency numbers (Fig. 6); "
        "with --milestones, show how the strongest activations evolve over training and when each "
        "layer converges (Fig. 4). Prints the figure paths and numbers as JSON.",
    )
    add_options(p)
    p.add_argument("--layers", nargs="+", metavar="LAYER", help="layers of Fig. 2 (default: ZFNet's conv1..conv5; "
                   "module names of your --model, e.g. features.11 of torchvision's alexnet, layer3 of resnet18)")
    p.add_argument("--prepared", default="data/prepared", help="prepared shards folder (default: data/prepared)")
    p.add_argument("--images", metavar="DIR", help="a folder of your own image files (any layout) to scan "
                   "instead of the prepared splits; they are resized and cropped as the model expects")
    max_pixels_option(p)
    p.add_argument("--out", metavar="DIR", help="output folder (default: a new outputs/visualize-<time>/; "
                   "the pipeline's figures/visualize is a DVC out)")
    p.add_argument("--milestones", metavar="DIR", help="folder of epoch-NNN.pt milestone checkpoints (Fig. 4)")
    p.add_argument("--compare", nargs="*", default=[], metavar="LABEL=CKPT", type=_labelled_checkpoint,
                   help="more checkpoints whose layer-1 filters to draw, e.g. krizhevsky=models_ablation/krizhevsky/model.pt")
    mirror(p, "--split", VizConfig, "split", "split scanned for the top-9", choices=("train", "val"))
    mirror(p, "--evolution-split", VizConfig, "evolution_split", "split scanned at each milestone",
           choices=("train", "val"))
    mirror(p, "--maps", VizConfig, "maps", "feature maps shown per layer in Fig. 2", type=number(int, gt=0))
    mirror(p, "--evolution-maps", VizConfig, "evolution_maps", "feature maps per layer in Fig. 4",
           type=number(int, gt=0))
    mirror(p, "--stable", VizConfig, "stable", "top-9 images shared with the last milestone that count as "
           "converged, 1..9", type=number(int, ge=1, le=9))
    mirror(p, "--dead-ratio", VizConfig, "dead_ratio", "a filter is dead below this fraction of the layer's "
           "median RMS, in (0, 1)", type=number(float, gt=0, lt=1))
    mirror(p, "--max-images", VizConfig, "max_images", "images used per split, 0 = all", type=number(int, ge=0))
    mirror(p, "--batch-size", VizConfig, "batch_size", "images per forward", type=number(int, gt=0))
    mirror(p, "--max-batch", VizConfig, "max_batch", "deconvnet reconstructions at once", type=number(int, gt=0))
    mirror(p, "--device", VizConfig, "device", "where the models run", choices=("auto", "cpu", "cuda"))
    p.set_defaults(func=_run)
