"""Feature invariance (Zeiler & Fergus 2014, Sec. 4.3, Fig. 5).

Images are translated vertically, scaled and rotated by varying amounts; for each amount we
measure the Euclidean distance between the feature vectors of the original and the transformed
image at layer 1 and layer 7 (raw, and divided by the original's norm), and the softmax
probability of the true label. The paper's finding: small transforms move layer 1 a lot and
layer 7 little; the output is stable to translation and scaling, not to rotation (except for
rotationally symmetric objects).

Transforms act on the preprocessed ``S x S`` image *before* the centre crop, as a camera would:
content shifted in from outside the ``input_size`` crop is real image, and only what comes from
outside the ``S x S`` image is filled with grey (the per-pixel mean, i.e. 0 after mean
subtraction). Sampling is bilinear (``grid_sample``); the identity amount reproduces the original up to
float rounding.

For ZFNet, layer 1 is the ``conv1`` block output (after pooling and contrast normalisation),
layer 7 the ``fc7`` output after ReLU (:func:`~zfnet.viz.features.last_hidden` if a variant removed
fc7); any other model names its two layers (:mod:`zfnet.viz.layers`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from torch import nn

from zfnet.data.transforms import center_crop
from zfnet.viz.features import last_hidden, layer_features

TRANSFORMS = ("translation", "scale", "rotation")
PAPER_INPUT = 224  # the paper's input side: its translation range (pixels) is scaled by input_size / 224


def amounts(translation: float, scale: Sequence[float], rotation_step: float, steps: int, input_size: int) -> dict[str, torch.Tensor]:
    """The transform amounts of Fig. 5, ``{transform: (T,)}``.

    Args:
        translation: largest vertical shift in the paper's pixels at 224x224 (60 in Fig. 5),
            scaled to ``input_size``; ``steps`` shifts from ``-t`` to ``t``.
        scale: ``[smallest, largest]`` scale ratio; ``steps`` ratios between them, 1 included.
        rotation_step: degrees between rotations from 0 to 360 (inclusive).
        steps: amounts per translation and scale curve.
        input_size: the model's input side.
    """
    shift = translation * input_size / PAPER_INPUT
    scales = torch.cat([torch.linspace(scale[0], scale[1], steps), torch.ones(1)]).unique()
    return {
        "translation": torch.linspace(-shift, shift, steps),
        "scale": scales,
        "rotation": torch.arange(0.0, 360.0 + rotation_step / 2, rotation_step),
    }


def transform(images: torch.Tensor, kind: str, amount: float) -> torch.Tensor:
    """Translate (vertically, pixels, positive = down), scale (ratio, > 1 enlarges) or rotate
    (degrees) square ``(N, 3, S, S)`` mean-subtracted images about their centre.

    Content from outside the image is 0 (grey). Returns ``(N, 3, S, S)``.
    """
    n, _, h, _ = images.shape
    if kind == "translation":
        theta = [[1.0, 0.0, 0.0], [0.0, 1.0, -2.0 * amount / h]]
    elif kind == "scale":
        theta = [[1.0 / amount, 0.0, 0.0], [0.0, 1.0 / amount, 0.0]]
    elif kind == "rotation":
        a = math.radians(amount)
        theta = [[math.cos(a), math.sin(a), 0.0], [-math.sin(a), math.cos(a), 0.0]]
    else:
        raise ValueError(f"transform must be one of {TRANSFORMS}, got {kind!r}")
    theta = torch.tensor(theta, dtype=images.dtype, device=images.device).expand(n, 2, 3)
    sampling = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, sampling, mode="bilinear", padding_mode="zeros", align_corners=False)


@dataclass
class InvarianceCurves:
    """Fig. 5's curves for N images, per transform ``{transform: (T, N)}`` arrays.

    ``l1`` / ``l7``: Euclidean distance between the original's and the transformed image's feature
    vectors at layer 1 / layer 7 (named ``layer1``, ``layer7``); ``l1_norm`` / ``l7_norm``: divided
    by the original's norm; ``prob``: probability of the true label; ``correct``: top-1 prediction
    is the label.
    """

    amounts: dict[str, torch.Tensor]
    labels: torch.Tensor
    layer7: str
    layer1: str = "conv1"
    l1: dict[str, torch.Tensor] = field(default_factory=dict)
    l1_norm: dict[str, torch.Tensor] = field(default_factory=dict)
    l7: dict[str, torch.Tensor] = field(default_factory=dict)
    l7_norm: dict[str, torch.Tensor] = field(default_factory=dict)
    prob: dict[str, torch.Tensor] = field(default_factory=dict)
    correct: dict[str, torch.Tensor] = field(default_factory=dict)

    def summary(self) -> dict[str, dict[str, float]]:
        """Per transform: ``l1_over_l7`` (mean normalised layer-1 distance / mean normalised layer-7
        distance over images and non-identity amounts: how much less layer 7 moves), ``mean_prob``
        and ``top1`` (fraction correct) over the transformed images."""
        out = {}
        for kind, values in self.amounts.items():
            moved = ~torch.isclose(values, torch.tensor(0.0 if kind != "scale" else 1.0)) & ~torch.isclose(values, torch.tensor(360.0))
            out[kind] = {
                "l1_over_l7": float(self.l1_norm[kind][moved].mean() / self.l7_norm[kind][moved].mean().clamp_min(1e-12)),
                "mean_prob": float(self.prob[kind][moved].mean()),
                "top1": float(self.correct[kind][moved].float().mean()),
            }
        return out


@torch.no_grad()
def invariance(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    input_size: int,
    transforms: dict[str, torch.Tensor],
    max_batch: int = 256,
    layers: Sequence[str] | None = None,
) -> InvarianceCurves:
    """Fig. 5's measurements.

    Args:
        model: any trained model.
        images: ``(N, 3, S, S)`` full images in model units (not yet cropped; grey is 0).
        labels: ``(N,)`` true classes.
        input_size: side of the centre crop fed to the model.
        transforms: ``{transform: (T,) amounts}`` (:func:`amounts`).
        max_batch: images per forward pass.
        layers: the names of layers 1 and 7 (:func:`~zfnet.viz.features.layer_features`); default
            ZFNet's ``conv1`` and :func:`~zfnet.viz.features.last_hidden`.
    """
    layer1, layer7 = layers if layers is not None else ("conv1", last_hidden(model))
    labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
    curves = InvarianceCurves(transforms, labels, layer7, layer1)
    original = layer_features(model, center_crop(images, input_size), [layer1, layer7], max_batch)
    for kind, values in transforms.items():
        moved = torch.cat([center_crop(transform(images, kind, float(a)), input_size) for a in values])
        feats = layer_features(model, moved, [layer1, layer7], max_batch)
        t, n = len(values), len(images)
        for name, raw, norm in ((layer1, curves.l1, curves.l1_norm), (layer7, curves.l7, curves.l7_norm)):
            dist = (feats[name].view(t, n, -1) - original[name]).norm(dim=2)  # (T, N)
            raw[kind] = dist
            norm[kind] = dist / original[name].norm(dim=1).clamp_min(1e-12)
        prob = feats["prob"].view(t, n, -1)
        curves.prob[kind] = prob[:, torch.arange(n), labels]
        curves.correct[kind] = prob.argmax(2) == labels
    return curves


def spread_classes(labels: np.ndarray, num_classes: int, count: int) -> list[int]:
    """Indices of ``count`` images whose classes are spread evenly over ``0..num_classes-1``: for
    class index ``round(linspace(0, K - 1, count))[k]`` its first image not yet picked (fewer if a
    class runs out)."""
    picks: list[int] = []
    taken: dict[int, int] = {}
    for c in np.round(np.linspace(0, num_classes - 1, count)).astype(int):
        of_class = np.flatnonzero(labels == c)
        k = taken.get(int(c), 0)
        taken[int(c)] = k + 1
        if k < len(of_class):
            picks.append(int(of_class[k]))
    return picks


def rotation_groups(class_names: Sequence[str]) -> dict[str, list[int]]:
    """Class indices of the synthetic classes of known rotational symmetry: ``upright`` (no symmetry,
    never seen rotated: :data:`~zfnet.data.synthetic.UPRIGHT`) and ``symmetric`` (the same at every
    angle: order 0 in :data:`~zfnet.data.synthetic.ROTATION_SYMMETRY`). Other datasets' classes are in neither."""
    from zfnet.data.synthetic import ROTATION_SYMMETRY, UPRIGHT

    return {"upright": [c for c, n in enumerate(class_names) if n in UPRIGHT],
            "symmetric": [c for c, n in enumerate(class_names) if ROTATION_SYMMETRY.get(n, -1) == 0]}


def per_image(curves: InvarianceCurves, kind: str, data: str, lo: float = -math.inf, hi: float = math.inf) -> torch.Tensor:
    """``(N,)`` each image's mean of ``data`` (``l1_norm``, ``l7_norm``, ``prob``, ``correct``) over the
    amounts of ``kind`` in ``[lo, hi]`` other than the identity (shift 0, scale 1, rotation 0 / 360)."""
    values = curves.amounts[kind]
    identity = torch.isclose(values, torch.tensor(1.0 if kind == "scale" else 0.0)) | torch.isclose(values, torch.tensor(360.0))
    keep = ~identity & (values >= lo) & (values <= hi)
    return getattr(curves, data)[kind][keep].float().mean(0)


def invariance_figure(
    curves: InvarianceCurves, example: torch.Tensor, names: Sequence[str], path: str | Path,
    input_size: int, pixels=None,
) -> Path:
    """Fig. 5: columns translation / scale / rotation; rows: the first image transformed (5 amounts),
    normalised layer-1 distance, normalised layer-7 distance, probability of the true label; one
    curve per image, labelled with ``names`` (its class).

    ``example`` is one ``(3, S, S)`` mean-subtracted image; ``pixels`` maps ``(N, 3, h, w)`` model input
    to displayable ``[0, 1]`` images (default: per-image min-max).
    """
    from zfnet.plotting import plt, save
    from zfnet.viz.grids import normalize_minmax

    show = pixels or normalize_minmax
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    units = {"translation": "vertical shift (input px)", "scale": "scale ratio", "rotation": "rotation (degrees)"}
    fig, axes = plt.subplots(4, 3, figsize=(13, 13), gridspec_kw={"height_ratios": [0.8, 1, 1, 1]})
    for col, kind in enumerate(TRANSFORMS):
        values = curves.amounts[kind]
        picks = np.unique(np.round(np.linspace(0, len(values) - 1, 5)).astype(int))
        strip = torch.cat([center_crop(transform(example[None], kind, float(values[i])), input_size)
                           for i in picks])
        strip = show(strip).permute(0, 2, 3, 1).clamp(0, 1).numpy()
        axes[0, col].imshow(np.concatenate(list(strip), axis=1))
        axes[0, col].set_xticks((np.arange(len(picks)) + 0.5) * input_size,
                                [f"{round(float(values[i]), 2):g}" for i in picks])
        axes[0, col].set_yticks([])
        axes[0, col].set_title(f"{kind} ({names[0]})")
        rows = [(curves.l1_norm, f"layer 1 ({curves.layer1}): ||x - x'|| / ||x||"),
                (curves.l7_norm, f"layer 7 ({curves.layer7}): ||x - x'|| / ||x||"),
                (curves.prob, "P(true class)")]
        for row, (data, label) in enumerate(rows, 1):
            ax = axes[row, col]
            for i, name in enumerate(names):
                ax.plot(values.numpy(), data[kind][:, i].numpy(), marker=".", label=name)
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            if row == 3:
                ax.set_xlabel(units[kind])
                ax.set_ylim(-0.02, 1.02)
    axes[1, 0].legend(fontsize=8)
    fig.suptitle("Feature invariance (Fig. 5): distance of layer-1 / layer-7 features from the original, and P(true class)")
    return save(fig, path, dpi=80)
