"""``zfnet occlude`` and ``zfnet invariance``: Figs. 7 and 5 for one image of yours, with a zfnet
checkpoint or your own model (``--model torchvision:alexnet --weights FILE``); the figures are
:mod:`zfnet.viz.analysis`'s, written into a new ``outputs/<command>-<time>/`` unless ``--out`` is given."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from zfnet.config import AnalyzeConfig, ConfigError
from zfnet.data.transforms import center_crop
from zfnet.viz.analysis import invariance_with_figure, occlusion_with_figure


def _label(arg: str | None, names: list[str], predicted: int) -> int:
    if arg is None:
        return predicted
    if arg.isdigit() and int(arg) < len(names):
        return int(arg)
    if arg in names:
        return names.index(arg)
    raise ConfigError(f"--label: {arg!r} is neither a class index (0..{len(names) - 1}) nor one of {names}")


def _setup(args: argparse.Namespace):
    """The network (:mod:`zfnet.viz.network`), the image ``(1, 3, S, S)`` in model units and its label ``(1,)``."""
    from zfnet.cli.options import device as resolve_device
    from zfnet.cli.model import from_args

    device = resolve_device(args.device)
    network = from_args(args, device)
    image = network.inputs.normalize(network.inputs.load(args.image, args.max_pixels).to(device))
    with torch.no_grad():
        predicted = int(network.model(center_crop(image, network.inputs.size)).argmax(1))
    label = torch.tensor([_label(args.label, network.class_names, predicted)], device=device)
    return network, image, label


def _out(args: argparse.Namespace, command: str) -> Path:
    from zfnet.cli.options import output_dir

    out = output_dir(args.out, command)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _done(command: str, out: Path, names: list[str]) -> None:
    """After the JSON: the note on what the model knows, and where the files are (stderr)."""
    import sys

    from zfnet.cli.options import model_note

    note = model_note(names)
    if note:
        print(f"zfnet {command}: note: {note}", file=sys.stderr)
    print(f"zfnet {command}: wrote {out}/", file=sys.stderr)


def _occlude(args: argparse.Namespace) -> int:
    from zfnet.viz.layers import LayerError, check_maps

    network, image, label = _setup(args)
    model, inputs, names = network.model, network.inputs, network.class_names
    try:
        check_maps(model, [args.layer], inputs.size)
    except LayerError as exc:
        raise ConfigError(f"--layer: {exc}") from None
    if args.patch > inputs.size:
        raise ConfigError(f"--patch: must be <= the model's input side ({inputs.size}), got {args.patch}")
    out = _out(args, "occlude")
    path = out / "occlusion.png"
    maps, _ = occlusion_with_figure(model, inputs, image, label, names, args.patch, args.stride, args.layer,
                                    args.max_batch, path)
    k = int(maps.prob[0].flatten().argmin())
    y, x = int(maps.ys[k // len(maps.xs)]), int(maps.xs[k % len(maps.xs)])
    print(json.dumps({
        "figure": str(path), "label": names[int(label)], "prob": round(float(maps.base_prob[0]), 4),
        "min_prob": round(float(maps.prob[0].min()), 4), "min_at_square": {"x": x, "y": y, "side": args.patch},
        "feature_map": int(maps.channel[0]),
        "argmax_classes": sorted({names[c] for c in maps.argmax[0].flatten().tolist()}),
    }, indent=2))
    _done("occlude", out, names)
    return 0


def _invariance(args: argparse.Namespace) -> int:
    from zfnet.config import InvarianceConfig
    from zfnet.viz.layers import LayerError, block, blocks, names as layer_names

    low, high = args.scale
    if not low < high:
        raise ConfigError(f"--scale: MIN must be < MAX, got {low:g} {high:g}")
    network, image, label = _setup(args)
    if args.layers is None and not blocks(network.model):
        raise ConfigError(f"--layers: name layers 1 and 7 of {network.name}; its layers: "
                          + ", ".join(layer_names(network.model)))
    try:
        for name in args.layers or ():
            block(network.model, name)
    except LayerError as exc:
        raise ConfigError(f"--layers: {exc}") from None
    cfg = InvarianceConfig(translation=args.translation, scale=[low, high], steps=args.steps,
                           rotation_step=args.rotation_step)
    out = _out(args, "invariance")
    path = out / "invariance.png"
    names = network.class_names
    curves = invariance_with_figure(network.model, network.inputs, image, label, [names[int(label)]], cfg, path,
                                    out / "invariance.csv", args.layers)
    print(json.dumps({"figure": str(path), "label": names[int(label)], "summary": curves.summary()}, indent=2))
    _done("invariance", out, names)
    return 0


def _common(p: argparse.ArgumentParser, command: str) -> None:
    from zfnet.cli.options import max_pixels_option, mirror
    from zfnet.cli.model import add_options

    p.add_argument("image", help="an image file (any format PIL reads); resized and cropped like the model's input")
    add_options(p)
    p.add_argument("--label", help="true class (name or index); default: the model's prediction")
    p.add_argument("--out", metavar="DIR", help=f"output folder (default: a new outputs/{command}-<time>/)")
    max_pixels_option(p)
    mirror(p, "--device", AnalyzeConfig, "device", "where the model runs", choices=("auto", "cpu", "cuda"))


def register(sub: argparse._SubParsersAction) -> None:
    from zfnet.cli.options import mirror, number
    from zfnet.config import InvarianceConfig, OcclusionConfig

    p = sub.add_parser(
        "occlude", help="occlusion maps of one image (Fig. 7)",
        description="Slide a grey square over the image; write occlusion.png with the strongest conv5 "
        "map's total activity, its deconvnet projection, the label's probability and the most probable "
        "class at every position, and print the numbers as JSON.",
    )
    _common(p, "occlude")
    mirror(p, "--patch", OcclusionConfig, "patch", "square side, input pixels", type=number(int, gt=0))
    mirror(p, "--stride", OcclusionConfig, "stride", "step between positions, input pixels", type=number(int, gt=0))
    mirror(p, "--layer", OcclusionConfig, "layer", "layer whose strongest feature map is map (b): ZFNet's "
           "conv1..conv5, or a module name of your --model (e.g. features.11 of torchvision's alexnet)")
    mirror(p, "--max-batch", OcclusionConfig, "max_batch", "occluded images per forward", type=number(int, gt=0))
    p.set_defaults(func=_occlude)

    p = sub.add_parser(
        "invariance", help="invariance curves of one image (Fig. 5)",
        description="Translate, scale and rotate the image; write invariance.png and invariance.csv with "
        "the layer-1 and layer-7 feature distances and the label's probability, and print per transform "
        "how much less layer 7 moves than layer 1 (l1_over_l7), the mean probability and top-1.",
    )
    _common(p, "invariance")
    mirror(p, "--translation", InvarianceConfig, "translation", "largest vertical shift in the paper's pixels "
           "at 224 (scaled to the input)", type=number(float, gt=0))
    mirror(p, "--scale", InvarianceConfig, "scale", "scale ratio range, 0 < MIN < MAX", type=number(float, gt=0),
           nargs=2, metavar=("MIN", "MAX"))
    mirror(p, "--steps", InvarianceConfig, "steps", "amounts per translation/scale curve", type=number(int, gt=0))
    mirror(p, "--rotation-step", InvarianceConfig, "rotation_step", "degrees between rotations, in (0, 360]",
           type=number(float, gt=0, le=360))
    p.add_argument("--layers", nargs=2, metavar=("L1", "L7"), help="the layers compared as layers 1 and 7 "
                   "(default: ZFNet's conv1 and fc7; name them for your --model, e.g. features.1 classifier.5)")
    p.set_defaults(func=_invariance)
