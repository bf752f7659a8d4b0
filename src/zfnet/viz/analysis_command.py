"""The analyses of the trained model (Figs. 5, 7, 8; Table 1): the ``analyze`` stage's work and the
``zfnet occlude`` / ``zfnet invariance`` commands on a user's own image, with a zfnet checkpoint or
any model (``--model torchvision:alexnet --weights FILE``, :mod:`zfnet.viz.network`).

:func:`analyze` is what the DVC stage (:mod:`zfnet.stages.analyze`) calls: occlusion maps of the
validation images with the pointing game on their known boxes (Fig. 7), invariance curves
(Fig. 5) and the face-part correspondence table (Fig. 8, Table 1).
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import torch

from zfnet.config import AnalyzeConfig, ConfigError
from zfnet.data.transforms import center_crop
from zfnet.models.inputs import InputSpec


def occlusion_with_figure(model, inputs: InputSpec, images: torch.Tensor, labels: torch.Tensor, class_names,
                          patch: int, stride: int, layer: str, max_batch: int, path: Path | None,
                          shown: list[int] | None = None):
    """Occlusion maps of ``images`` (``(N, 3, S, S)`` full images in model units, centre-cropped here)
    and the deconvnet projection of each image's strongest activation of its strongest map ``(N, 3,
    h, w)``; with ``path``, Fig. 7 for the images at ``shown`` (default: all). Returns both."""
    from zfnet.viz.deconvnet import Deconvnet
    from zfnet.viz.occlusion import occlusion, occlusion_figure

    x = center_crop(images, inputs.size)
    maps = occlusion(model, x, labels, patch, stride, layer=layer, max_batch=max_batch)
    deconvnet = Deconvnet(model)
    projections = torch.cat([deconvnet.project(x[i : i + 1], layer, [int(maps.channel[i])], "max")[:, 0]
                             for i in range(len(x))])
    if path is not None:
        shown = list(range(len(x))) if shown is None else shown
        occlusion_figure(maps.select(shown), inputs.pixels(x[shown]), projections[shown], labels[shown], class_names,
                         path, layer)
    return maps, projections


def invariance_with_figure(model, inputs: InputSpec, images: torch.Tensor, labels: torch.Tensor, names: list[str],
                           cfg, path: Path, csv_path: Path | None = None, layers: tuple[str, str] | None = None):
    """Fig. 5 for ``images`` (``(N, 3, S, S)`` full images in model units): curves, figure, optional CSV
    of every point; ``layers``: layers 1 and 7 (default ZFNet's). Returns the
    :class:`~zfnet.viz.invariance.InvarianceCurves`."""
    from zfnet.viz.invariance import amounts, invariance, invariance_figure

    transforms = amounts(cfg.translation, cfg.scale, cfg.rotation_step, cfg.steps, inputs.size)
    curves = invariance(model, images, labels, inputs.size, transforms, layers=layers)
    invariance_figure(curves, images[0], names, path, inputs.size, inputs.pixels)
    if csv_path is not None:
        with open(csv_path, "w", newline="") as fh:
            out = csv.writer(fh)
            out.writerow(["transform", "amount", "image", "class", "l1", "l1_norm", "l7", "l7_norm", "prob", "correct"])
            for kind, values in curves.amounts.items():
                for t, a in enumerate(values.tolist()):
                    for i, name in enumerate(names):
                        out.writerow([kind, round(a, 4), i, name] + [
                            round(float(d[kind][t, i]), 6) for d in (curves.l1, curves.l1_norm, curves.l7, curves.l7_norm, curves.prob)
                        ] + [int(curves.correct[kind][t, i])])
    return curves


def analyze(checkpoint: str | Path, prepared: str | Path, out: str | Path, cfg: AnalyzeConfig,
            side: tuple[int, int] = (128, 152), device: str | torch.device = "cpu") -> dict:
    """Run the three analyses; write figures and tables into ``out``; return the flat metrics.

    Args:
        checkpoint: the trained model; prepared: the shards folder (its ``val`` split is used).
        out: ``occlusion.png``, ``invariance.png``, ``invariance.csv``, ``correspondence.png``,
            ``correspondence.csv``, ``correspondence.md``.
        cfg: the ``analyze`` params; side: ``[min, max]`` side of the drawn faces (``data.synthetic``).
    """
    import numpy as np

    from zfnet.data.shards import ShardDataset
    from zfnet.stats import mean_se
    from zfnet.viz.correspondence import correspondence, correspondence_figure, table1
    from zfnet.viz.invariance import spread_classes
    from zfnet.viz.network import from_checkpoint
    from zfnet.viz.occlusion import pointing_chance, pointing_game, projection_correlation

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    network = from_checkpoint(checkpoint, device)
    model, inputs, names = network.model, network.inputs, network.class_names
    val = ShardDataset(Path(prepared) / "val")
    metrics: dict[str, float] = {}

    o = cfg.occlusion
    start = time.perf_counter()
    scored = balanced(val.labels(), o.images or len(val))
    images, labels = val.get_batch(scored)
    images, labels = inputs.normalize(images.to(device)), labels.to(device)
    shown = spread_classes(labels.cpu().numpy(), len(names), o.figure_images)
    maps, projections = occlusion_with_figure(model, inputs, images, labels, names, o.patch, o.stride, o.layer,
                                              o.max_batch, out / "occlusion.png", shown)
    boxes = torch.from_numpy(val.boxes()[scored]).to(device) - inputs.offset  # image pixels -> input pixels
    known = ~boxes.isnan().any(1)
    hits, chance = pointing_game(maps, boxes)[known], pointing_chance(maps, boxes)[known]
    metrics["occlusion_seconds"] = time.perf_counter() - start
    metrics["occlusion_images"] = len(scored)
    metrics["pointing_game"] = float(hits.float().mean())
    metrics["pointing_game_chance"] = float(chance.mean())
    metrics["pointing_game_images"] = int(known.sum())
    corr = projection_correlation(maps, projections)
    metrics["occlusion_projection_corr_mean"], metrics["occlusion_projection_corr_se"] = mean_se(corr.cpu().numpy())
    for c, name in enumerate(names):
        of_class = labels[known] == c
        if of_class.any():
            metrics[f"pointing_game_{name}"] = float(hits[of_class].float().mean())

    start = time.perf_counter()
    metrics.update(_invariance_tests(model, inputs, val, names, cfg.invariance, out))
    metrics["invariance_seconds"] = time.perf_counter() - start

    c = cfg.correspondence
    start = time.perf_counter()
    result = correspondence(model, inputs.mean, inputs.scale, inputs.size, c.sets, c.per_set, cfg.seed, side, c.margin)
    table1(result, out)
    correspondence_figure(result["first_set"], out / "correspondence.png", inputs.pixels)
    for mask, row in result["table"].items():
        for layer, (mean, std) in row.items():
            metrics[f"correspondence_{mask}_{layer}_mean"] = mean
            metrics[f"correspondence_{mask}_{layer}_std"] = std
    gaps = {}
    for layer in ("layer5", "layer7"):  # per set: Delta of the random masks minus the parts' mean Delta
        d = result["deltas"]
        gaps[layer] = np.array(d["random"][layer]) - np.mean([d[m][layer] for m in ("left_eye", "right_eye", "nose")], 0)
        metrics[f"correspondence_gap_{layer}_mean"], metrics[f"correspondence_gap_{layer}_se"] = mean_se(gaps[layer])
    metrics["correspondence_gap_layer5_minus_layer7_mean"], metrics["correspondence_gap_layer5_minus_layer7_se"] = \
        mean_se(gaps["layer5"] - gaps["layer7"])
    metrics["correspondence_sets"] = c.sets
    metrics["correspondence_seconds"] = time.perf_counter() - start
    return {k: round(float(v), 5) for k, v in metrics.items()}


def balanced(labels, count: int) -> list[int]:
    """Indices of up to ``count`` images, the first ``ceil(count / K)`` of each of the K classes
    present, in index order."""
    import numpy as np

    classes = np.unique(labels)
    per_class = -(-count // len(classes))
    return sorted(int(i) for c in classes for i in np.flatnonzero(labels == c)[:per_class])[:count] if count < len(labels) \
        else list(range(len(labels)))


def _invariance_tests(model, inputs: InputSpec, val, names: list[str], cfg, out: Path) -> dict:
    """Fig. 5 for ``cfg.images`` images (classes spread, upright and symmetric ones first where the
    dataset has them) and, on ``cfg.test_images`` images of each rotation group, the numbers its
    findings are judged on (:func:`~zfnet.viz.invariance.rotation_groups`)."""
    import numpy as np

    from zfnet.stats import mean_se
    from zfnet.viz.invariance import amounts, invariance, per_image, rotation_groups, spread_classes

    labels = val.labels()
    groups = rotation_groups(names)
    shown = [int(np.flatnonzero(labels == c)[0]) for c in groups["upright"][:3] + groups["symmetric"][:2]
             if (labels == c).any()]
    shown += [i for i in spread_classes(labels, len(names), cfg.images) if i not in shown]
    images, shown_labels = val.get_batch(shown[: cfg.images])
    invariance_with_figure(model, inputs, inputs.normalize(images), shown_labels,
                           [names[int(c)] for c in shown_labels], cfg, out / "invariance.png", out / "invariance.csv")
    metrics: dict[str, float] = {}
    transforms = amounts(cfg.translation, cfg.scale, cfg.rotation_step, cfg.steps, inputs.size)
    tested = balanced(labels, cfg.test_images)
    images, test_labels = val.get_batch(tested)
    curves = invariance(model, inputs.normalize(images), test_labels, inputs.size, transforms)
    for kind in ("translation", "scale"):
        l1, l7 = per_image(curves, kind, "l1_norm"), per_image(curves, kind, "l7_norm")
        metrics[f"invariance_{kind}_l1_over_l7"] = float(l1.mean() / l7.mean().clamp_min(1e-12))
        metrics[f"invariance_{kind}_l7_below_l1"] = float((l7 < l1).float().mean())
        metrics[f"invariance_{kind}_top1"], metrics[f"invariance_{kind}_top1_se"] = mean_se(per_image(curves, kind, "correct"))
    metrics["invariance_images"] = len(tested)
    original = invariance(model, inputs.normalize(images), test_labels, inputs.size, {"translation": torch.zeros(1)})
    metrics["invariance_original_top1"] = float(original.correct["translation"].float().mean())
    for group, classes in groups.items():
        of_group = torch.isin(test_labels, torch.tensor(classes, dtype=test_labels.dtype))
        if not of_group.any():
            continue
        prob = per_image(curves, "rotation", "prob", 60.0, 300.0)[of_group]
        metrics[f"invariance_rotation_prob_{group}"], metrics[f"invariance_rotation_prob_{group}_se"] = mean_se(prob)
        metrics[f"invariance_rotation_images_{group}"] = int(of_group.sum())
    return metrics


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
    from zfnet.cli_options import device as resolve_device
    from zfnet.viz.network import from_args

    device = resolve_device(args.device)
    network = from_args(args, device)
    image = network.inputs.normalize(network.inputs.load(args.image, args.max_pixels).to(device))
    with torch.no_grad():
        predicted = int(network.model(center_crop(image, network.inputs.size)).argmax(1))
    label = torch.tensor([_label(args.label, network.class_names, predicted)], device=device)
    return network, image, label


def _out(args: argparse.Namespace, command: str) -> Path:
    from zfnet.cli_options import output_dir

    out = output_dir(args.out, command)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _done(command: str, out: Path, names: list[str]) -> None:
    """After the JSON: the note on what the model knows, and where the files are (stderr)."""
    import sys

    from zfnet.cli_options import model_note

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
    from zfnet.cli_options import max_pixels_option, mirror
    from zfnet.viz.network import add_options

    p.add_argument("image", help="an image file (any format PIL reads); resized and cropped like the model's input")
    add_options(p)
    p.add_argument("--label", help="true class (name or index); default: the model's prediction")
    p.add_argument("--out", metavar="DIR", help=f"output folder (default: a new outputs/{command}-<time>/)")
    max_pixels_option(p)
    mirror(p, "--device", AnalyzeConfig, "device", "where the model runs", choices=("auto", "cpu", "cuda"))


def register(sub: argparse._SubParsersAction) -> None:
    from zfnet.cli_options import mirror, number
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
