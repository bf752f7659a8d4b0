"""Per-layer linear probes (docs/paper.md Table 7): how discriminative is each layer's output?

For each of the layers (default conv1..conv5 and fc7) the frozen trained model's block output
(conv blocks after pooling and contrast normalisation, fc7 after ReLU) of the centre crop is
flattened, whole, into one feature vector, as the paper trains its classifier on the layer's
output (:func:`zfnet.experiments.features.features`); a linear softmax
(:func:`zfnet.experiments.classifier.fit_softmaxes`, the fits on every core; extractor and classifier are the transfer rows'
code) is fitted on ``n`` training images per class and scored by mean per-class accuracy on up to
``test_per_class`` others, over ``transfer.splits`` random splits (the same splits as the transfer
experiments). The paper's numbers are its SVM column.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from zfnet.data.caltech import Categories
from zfnet.data.views import Crops, load_crops
from zfnet.experiments.classifier import fit_softmaxes, mean_class_accuracy
from zfnet.experiments.features import features
from zfnet.experiments.transfer import Setup, class_split

log = logging.getLogger(__name__)

# docs/paper.md Table 7 (SVM), mean per-class accuracy in %; Caltech-101 at 30/class, Caltech-256 at 60/class.
PAPER = {
    "caltech101": {"conv1": 44.8, "conv2": 66.2, "conv3": 72.3, "conv4": 76.6, "conv5": 86.2, "fc7": 85.5},
    "caltech256": {"conv1": 24.6, "conv2": 39.6, "conv3": 46.0, "conv4": 51.3, "conv5": 65.6, "fc7": 71.7},
}


def probe(setup: Setup, data: Categories, n_train: int, layers: Sequence[str], crops: Crops | None = None) -> dict:
    """Accuracy of a linear softmax on each layer's features.

    Returns ``{layer: {"accuracy": mean %, "accuracy_std": %, "runs": splits, "dims": feature length}}``.
    """
    s, t = setup, setup.transfer
    crops = crops or load_crops([x.path for x in data.samples], s.mean.shape[-1])
    labels = np.array(data.labels())[crops.kept]
    y = torch.from_numpy(labels).long()
    feats = features(s.model, crops.images, s.mean, layers, t.batch_size, s.device)
    splits = [class_split(labels, n_train, t.test_per_class, s.seed, split) for split in range(t.splits)]
    jobs = [(layer, tr, te) for tr, te in splits for layer in layers]
    fitted = fit_softmaxes(((feats[layer][tr], y[tr]) for layer, tr, _ in jobs), len(data.classes), t.l2, t.max_iter)
    scores: dict[str, list[float]] = {layer: [] for layer in layers}
    for (layer, _, te), clf in zip(jobs, fitted):
        scores[layer].append(mean_class_accuracy(clf(feats[layer][te]).argmax(1), labels[te]))
    out = {}
    for layer in layers:
        out[layer] = {"accuracy": float(np.mean(scores[layer])), "accuracy_std": float(np.std(scores[layer])),
                      "runs": len(scores[layer]), "dims": int(feats[layer].shape[1])}
        log.info("probe %s: %.1f%% +- %.1f (%d dims)", layer, out[layer]["accuracy"], out[layer]["accuracy_std"],
                 out[layer]["dims"])
    return out


def depth_trend(result: dict) -> dict:
    """Does accuracy grow with depth? ``result`` as returned by :func:`probe` (layers bottom to top).

    Returns ``{"spearman": rank correlation of depth and accuracy (1 = strictly growing; layers of
    equal accuracy, to 1e-6 points so that floating-point rounding never decides, share their mean
    rank: ``scipy.stats.spearmanr``; 0 when all are equal),
    "increases": fraction of consecutive layer pairs where accuracy grows, "best_layer": name,
    "top_minus_bottom": accuracy of the top layer minus the bottom one (points)}``.
    """
    from scipy.stats import spearmanr

    layers = list(result)
    acc = np.array([result[layer]["accuracy"] for layer in layers])
    tied = acc.round(6)
    rho = float(spearmanr(np.arange(len(acc)), tied).statistic) if len(acc) > 1 and tied.std() > 0 else 0.0
    return {
        "spearman": rho,
        "increases": float(np.mean(np.diff(acc) > 0)) if len(acc) > 1 else 0.0,
        "best_layer": layers[int(acc.argmax())],
        "top_minus_bottom": float(acc[-1] - acc[0]),
    }


def metrics(result: dict, trend: dict) -> dict:
    """One dataset's ``metrics/probe.json`` entry: ``accuracy_<layer>``, ``accuracy_std_<layer>`` (%),
    ``splits``, ``depth_spearman`` and ``top_minus_bottom`` (:func:`depth_trend`), 3 decimals."""
    return {**{f"accuracy_{layer}": round(v["accuracy"], 3) for layer, v in result.items()},
            **{f"accuracy_std_{layer}": round(v["accuracy_std"], 3) for layer, v in result.items()},
            "splits": next(iter(result.values()))["runs"],
            "depth_spearman": round(trend["spearman"], 3),
            "top_minus_bottom": round(trend["top_minus_bottom"], 3)}


def probe_table(results: dict, counts: dict) -> pd.DataFrame:
    """Table 7: one row per (dataset, layer) with the paper's SVM number beside ours.

    ``results``: ``{dataset: probe(...) result}``; ``counts``: ``{dataset: training images per class}``.
    """
    rows = []
    for dataset, layers in results.items():
        for layer, r in layers.items():
            rows.append({"dataset": dataset, "train_per_class": counts[dataset], "layer": layer,
                         "accuracy": r["accuracy"], "accuracy_std": r["accuracy_std"], "runs": r["runs"],
                         "dims": r["dims"], "paper_accuracy": PAPER.get(dataset, {}).get(layer)})
    return pd.DataFrame(rows)
