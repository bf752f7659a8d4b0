"""The analyses of the trained model (Figs. 5, 7, 8; Table 1): the ``analyze`` stage's work, and the
occlusion and invariance figures that ``zfnet occlude`` / ``zfnet invariance`` (:mod:`zfnet.cli.analysis`)
draw for a user's own image with a zfnet checkpoint or any model (:mod:`zfnet.viz.network`).

:func:`analyze` is what the DVC stage (:mod:`zfnet.stages.analyze`) calls: occlusion maps of the
validation images with the pointing game on their known boxes (Fig. 7), invariance curves
(Fig. 5) and the face-part correspondence table (Fig. 8, Table 1).
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import torch

from zfnet.config import AnalyzeConfig
from zfnet.data.transforms import center_crop
from zfnet.io import atomic_file
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
        with atomic_file(csv_path, "w") as fh:
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
