"""The paper's figures and tables (docs/paper.md) and where the pipeline writes each of them.

One :class:`Item` per section of the report. An item names the paper's figures/tables it
reproduces, a caption (what the paper shows and finds), the DVC stages that produce it (their
MLflow runs are linked), and its inputs, relative to the project root, where ``{a.b}`` stands for
the param ``a.b`` (``{viz.out}``: the folder the ``visualize`` stage writes):

- ``figures``: PNG paths or glob patterns, shown in order;
- ``tables``: CSV files (paths or glob patterns) as the stages write them, with the paper's
  numbers in their own columns (a column whose name contains "paper");
- ``numbers``: single values from a metrics JSON next to the paper's value (:class:`Number`).

An input that does not exist is shown as "not produced by this run", so the report works at
every stage of the project (and for profiles that skip an experiment). The ``report`` stage in
``dvc.yaml`` lists every one of these paths that a pipeline stage produces as a dependency
(a test checks it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Number:
    """One of our values (``key`` in the metrics JSON at ``path``) next to the paper's value."""

    label: str
    path: str
    key: str
    paper: str  # the paper's value as the paper states it ("38.4", "converges in a few epochs")
    unit: str = ""


@dataclass(frozen=True)
class Item:
    """One figure or table of the paper as reproduced by this project."""

    key: str  # HTML anchor
    paper: tuple[str, ...]  # the paper's names for it: ("Fig. 2",), ("Table 2", "Table 3")
    title: str
    caption: str
    stages: tuple[str, ...]  # DVC stages that produce it: ``ablate`` (every variant) or ``transfer@voc2012`` (one)
    figures: tuple[str, ...] = ()
    tables: tuple[str, ...] = ()
    numbers: tuple[Number, ...] = ()
    findings: tuple[str, ...] = ()  # ids of the claims it shows (zfnet.findings.FINDINGS)


TRAIN = "metrics/train_details.json"
VISUALIZE = "metrics/visualize.json"
ABLATION = "metrics/ablation.json"
ANALYZE = "metrics/analyze.json"

ITEMS: tuple[Item, ...] = (
    Item(
        key="training",
        findings=('trains',),
        paper=("Sec. 3",),
        title="Training: ZFNet with the paper's recipe",
        caption="SGD with momentum, dropout 0.5 in fc6/fc7, filter RMS renormalisation, the learning "
        "rate warmed up, then annealed (train.schedule: cosine in the default profile, on plateaus in "
        "the paper's); error per epoch on the training mini-batches and on the validation set (centre "
        "crop every epoch, 10 crops at milestones), learning rate per epoch. The paper's numbers are "
        "ImageNet 2012 (1000 classes); ours are the profile's dataset (see run metadata), so only "
        "the trend compares, not the value.",
        stages=("train",),
        figures=("plots/train_curves.png",),
        numbers=(
            Number("val top-1 error (10 crops)", TRAIN, "val_top1_error", "38.4", "%"),
            Number("val top-5 error (10 crops)", TRAIN, "val_top5_error", "16.5", "%"),
            Number("train top-1 error", TRAIN, "train_top1_error", "33.1", "%"),
            Number("chance top-1 error", TRAIN, "chance_top1_error", "99.9", "%"),
            Number("epochs", TRAIN, "epochs", "70"),
        ),
    ),
    Item(
        key="fig2",
        findings=('class_specific',),
        paper=("Fig. 2",),
        title="Feature visualisation: top-9 activations, projected by the deconvnet",
        caption="For feature maps of layers 2-5, the 9 strongest activations over the validation "
        "set, each projected to pixel space by the deconvnet (switch unpooling, rectification, "
        "transposed filters), next to the image patch (receptive field) that caused it. Layer 1 is "
        "shown as well. The paper finds simple edges and colours in layer 2 and increasingly "
        "class-specific, invariant parts in layers 3-5.",
        stages=("visualize",),
        figures=("{viz.out}/top9_conv*.png",),
        numbers=tuple(Number(f"conv{i}: class purity of the top-9", VISUALIZE, f"top9_purity_conv{i}_mean",
                             "rises with depth") for i in range(1, 6))
        + (Number("class purity of 9 random images", VISUALIZE, "top9_purity_chance", "-"),),
    ),
    Item(
        key="fig4",
        findings=('converge_bottom_up',),
        paper=("Fig. 4",),
        title="Feature evolution during training",
        caption="For a few feature maps per layer, the strongest activation over the training set "
        "projected at each milestone epoch. The paper: lower layers converge within a few epochs, "
        "upper layers only after 40-50 epochs. Ours: how close each layer's representation was to "
        "its final form over training (its mean linear CKA with the final model's over the earlier "
        "milestones, on the same images), the first milestone from which its CKA stays at 0.9 or "
        "above, and, as a second view, how settled each layer's top-9 images were on the way (mean "
        "share of the final top-9 over the earlier milestones).",
        stages=("visualize",),
        figures=("{viz.out}/evolution.png",),
        numbers=tuple(
            Number(f"conv{i} converged (CKA >= 0.9) at epoch", VISUALIZE, f"cka_converged_epoch_conv{i}",
                   "a few epochs" if i <= 2 else "40-50 epochs")
            for i in range(1, 6)
        )
        + tuple(Number(f"conv{i} mean CKA with the final model before it", VISUALIZE, f"cka_settled_conv{i}",
                       "higher in lower layers") for i in range(1, 6))
        + tuple(Number(f"conv{i} settled share of the final top-9", VISUALIZE, f"top9_settled_conv{i}",
                       "higher in lower layers") for i in range(1, 6)),
    ),
    Item(
        key="fig5",
        findings=('layer7_steadier', 'output_stable', 'rotation'),
        paper=("Fig. 5",),
        title="Invariance to translation, scale and rotation",
        caption="Images translated, scaled and rotated by varying amounts; per transform, the "
        "Euclidean distance between the feature vectors of the original and the transformed image at "
        "layer 1 and layer 7, and the probability of the true label. The paper: small transforms "
        "change layer 1 a lot and layer 7 little; the output is stable to translation and scaling, "
        "not to rotation (except for rotationally symmetric objects).",
        stages=("analyze",),
        figures=("{analyze.out}/invariance.png",),
        numbers=tuple(
            Number(f"{kind}: layer-1 change / layer-7 change", ANALYZE, f"invariance_{kind}_l1_over_l7",
                   "> 1 (layer 1 changes a lot, layer 7 little)")
            for kind in ("translation", "scale")
        )
        + (Number("top-1 accuracy, untransformed", ANALYZE, "invariance_original_top1", "-"),)
        + tuple(Number(f"{kind}: top-1 accuracy over the transformed images", ANALYZE, f"invariance_{kind}_top1", "stable")
                for kind in ("translation", "scale"))
        + (Number("rotated 60-300 degrees: P(true class), upright classes", ANALYZE, "invariance_rotation_prob_upright", "drops"),
           Number("... rotation-symmetric classes", ANALYZE, "invariance_rotation_prob_symmetric", "stays")),
    ),
    Item(
        key="fig6",
        findings=('renorm', 'krizhevsky_filters'),
        paper=("Fig. 6",),
        title="Architecture selection: first-layer filters",
        caption="First-layer filters. The paper: Krizhevsky's 11x11 stride-4 filters mix very high "
        "and very low frequencies with little mid-frequency coverage and some dead filters; 7x7 "
        "stride-2 filters (ZFNet) fix it; RMS renormalisation stops a few filters from dominating. "
        "Ours: the dead fraction and the low/mid/high spatial-frequency energy of the filters.",
        stages=("visualize", "ablation_report"),
        figures=("{viz.out}/filters_*.png", "figures/ablation/filters_conv1.png",
                 "figures/ablation/*/filters_conv1.png", "figures/ablation/*/top9_conv2.png"),
        numbers=(
            Number("conv1 dead filter fraction (ZFNet)", VISUALIZE, "filters_conv1_dead_fraction", "few"),
            Number("conv1 low-frequency energy share", VISUALIZE, "filters_conv1_low_freq_share", "-"),
            Number("conv1 mid-frequency energy share", VISUALIZE, "filters_conv1_mid_freq_share",
                   "covered (ZFNet), little (11x11/4)"),
            Number("conv1 high-frequency energy share", VISUALIZE, "filters_conv1_high_freq_share", "-"),
        ),
    ),
    Item(
        key="fig7",
        findings=('pointing', 'projection'),
        paper=("Fig. 7",),
        title="Occlusion sensitivity",
        caption="A grey square slid over the image; at each position (b) the total activation of "
        "the layer-5 feature map strongest on the unoccluded image, (c) that map's projection, "
        "(d) the probability of the correct class, (e) the most probable class. The paper: the model "
        "localises the object, not just its context.",
        stages=("analyze",),
        figures=("{analyze.out}/occlusion*.png",),
        numbers=(
            Number("pointing game: occlusion hurts most on the object", ANALYZE, "pointing_game",
                   "the object, not the context"),
            Number("... by chance (object area / image area)", ANALYZE, "pointing_game_chance", "-"),
            Number("activity drop vs projection under the square (correlation)", ANALYZE,
                   "occlusion_projection_corr_mean", "drops where the projection is"),
        ),
    ),
    Item(
        key="table1",
        findings=('correspondence_layer5', 'correspondence_layer7'),
        paper=("Fig. 8", "Table 1"),
        title="Correspondence of object parts across images",
        caption="The same part masked in 5 images of one class, and random regions as control; "
        "Delta_l = sum over image pairs of the Hamming distance between the signs of the "
        "feature-vector changes at layer l, normalised by vector length. Lower = more consistent: the "
        "net implicitly corresponds parts across images; the paper finds parts below random at "
        "layer 5 and the gap closing at layer 7.",
        stages=("analyze",),
        figures=("{analyze.out}/correspondence.png",),
        tables=("{analyze.out}/correspondence.csv",),
        numbers=(
            Number("layer 5: Delta random minus mean Delta of the parts", ANALYZE,
                   "correspondence_gap_layer5_mean", "0.035"),
            Number("layer 7: Delta random minus mean Delta of the parts", ANALYZE,
                   "correspondence_gap_layer7_mean", "0.004"),
        ),
    ),
    Item(
        key="table2-3",
        findings=('kernel_stride', 'no_fc7', 'depth', 'conv_wide', 'fc_wide_overfits'),
        paper=("Table 2", "Table 3"),
        title="Ablations: architecture and depth",
        caption="Train top-1 and validation top-1/top-5 error of the Krizhevsky replica, ZFNet and "
        "their variants (layers removed, fc6/fc7 narrowed or widened, conv3-5 widened), each trained "
        "with the same recipe and schedule at the ablation scale, mean and sd over the seeds. The "
        "paper: depth matters (removing layers 3, 4, 6, 7 is catastrophic) though few layers matter "
        "alone; wider middle conv layers help, wider fc layers overfit.",
        stages=("ablate", "ablation_report"),
        figures=("figures/ablation/errors.png",),
        tables=("results/ablation_table2.csv", "results/ablation.csv"),
        numbers=(
            Number("seeds per variant", ABLATION, "seeds", "1"),
            Number("ZFNet val top-1 error (mean over seeds)", ABLATION, "zfnet_val_top1_error_mean", "38.4", "%"),
            Number("Krizhevsky replica val top-1 error", ABLATION, "krizhevsky_val_top1_error_mean", "40.5", "%"),
        ),
    ),
    Item(
        key="table4",
        findings=('transfer',),
        paper=("Table 4",),
        title="Transfer to Caltech-101: frozen features, a new softmax classifier",
        caption="Layers 1-7 frozen (pretrained) or the same net trained from scratch, a new softmax "
        "classifier trained on 15 or 30 images per class, tested on up to 50 per class: mean "
        "per-class accuracy over random splits. The paper: 83.8 / 86.5 % pretrained against 22.8 / "
        "46.5 % from scratch.",
        stages=("transfer@caltech101",),
        figures=("{transfer.out}/caltech101.png",),
        tables=("results/transfer_caltech101.csv",),
    ),
    Item(
        key="table5",
        findings=('transfer',),
        paper=("Table 5", "Fig. 9"),
        title="Transfer to Caltech-256, accuracy against images per class",
        caption="As Table 4 with 15, 30, 45 and 60 training images per class; Fig. 9 plots the "
        "accuracy against the number of images per class. The paper: pretrained features beat "
        "training from scratch by a wide margin with few examples (65.7 against 9.0 % at 15 per class).",
        stages=("transfer@caltech256",),
        figures=("{transfer.out}/caltech256.png",),
        tables=("results/transfer_caltech256.csv",),
    ),
    Item(
        key="table6",
        findings=('transfer',),
        paper=("Table 6",),
        title="Transfer to PASCAL VOC 2012 (multi-label)",
        caption="A new classifier per class on the frozen features; average precision per class and "
        "its mean. The paper: 79.0 % mean AP, competitive with the best methods of the time.",
        stages=("transfer@voc2012",),
        figures=("{transfer.out}/voc2012.png",),
        tables=("results/transfer_voc2012.csv",),
    ),
    Item(
        key="table7",
        findings=('probe_depth',),
        paper=("Table 7",),
        title="Per-layer features: how discriminative is each layer",
        caption="A linear classifier on the features of layers 1, 2, 3, 4, 5 and 7 (Caltech-101 30 "
        "images per class, Caltech-256 60). The paper: deeper features are more discriminative "
        "(Caltech-101 44.8 -> 85.5 %, Caltech-256 24.6 -> 71.7 % from layer 1 to layer 7).",
        stages=("probe",),
        tables=("results/probes.csv",),
    ),
)


def paper_refs(items: tuple[Item, ...] = ITEMS) -> list[str]:
    """Every figure/table name of the paper the report covers, in report order."""
    return [ref for item in items for ref in item.paper]


def expand(pattern: str, params: dict) -> str:
    """``pattern`` with each ``{a.b}`` replaced by the param ``a.b`` (``params``: nested, as params.yaml)."""

    def value(match: re.Match) -> str:
        found: Any = params
        for part in match.group(1).split("."):
            found = found[part]
        return str(found)

    return re.sub(r"\{([\w.]+)\}", value, pattern)


def inputs(params: dict, items: tuple[Item, ...] = ITEMS) -> list[str]:
    """Every path or glob pattern the report reads (figures, tables, metrics files), expanded, deduplicated."""
    paths = [p for item in items for p in (*item.figures, *item.tables, *(n.path for n in item.numbers))]
    return list(dict.fromkeys(expand(p, params) for p in paths))
