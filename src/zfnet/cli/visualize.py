"""``zfnet visualize``: the paper's feature figures (Figs. 2, 4, 6) for a zfnet checkpoint or your own
model (``--model torchvision:alexnet --weights FILE --images DIR --layers features.11``), written by
:func:`zfnet.viz.visualize.visualize` into a new ``outputs/visualize-<time>/`` unless ``--out`` is given."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from zfnet.viz.visualize import visualize


def _labelled_checkpoint(text: str) -> tuple[str, str]:
    """``--compare``'s ``LABEL=CHECKPOINT``."""
    from zfnet.cli.options import checkpoint_file

    label, sep, path = text.partition("=")
    if not sep or not label:
        raise argparse.ArgumentTypeError(f"expected LABEL=CHECKPOINT, got {text!r}")
    return label, checkpoint_file(path)


def _milestones(folder: str | None) -> list[Path]:
    from zfnet.cli.options import checkpoint_problem
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

    from zfnet.cli.options import device, output_dir
    from zfnet.config import ConfigError
    from zfnet.viz.layers import LayerError, check_maps
    from zfnet.cli.model import from_args
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
        out / "index" if args.index else None,
    )
    print(json.dumps(result, indent=2))
    if result["images"] < 9:
        print(f"zfnet visualize: note: only {result['images']} images, so each top-9 shows {result['images']}, "
              "not 9 (give more images for the paper's 3x3 grids)", file=sys.stderr)
    print(f"zfnet visualize: wrote {out}/", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from zfnet.cli.options import max_pixels_option, mirror, number
    from zfnet.config import VizConfig
    from zfnet.cli.model import add_options

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
    p.add_argument("--index", action="store_true", help="also write DIR/index/: the top-9 and projections of "
                   "every map of the layers, not only the --maps shown (what zfnet explore browses; one "
                   "deconvnet projection per map and image, so minutes for wide layers)")
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
