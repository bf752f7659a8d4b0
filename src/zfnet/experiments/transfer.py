"""Transfer of the trained layers 1-7 to other datasets (docs/paper.md Tables 4-6, Fig. 9).

The method, as in the paper: layers 1-7 of the trained model are frozen and only a new softmax
classifier is trained on their output. Concretely:

1. every image is preprocessed like the pipeline (smallest side to ``S``, the checkpoint's mean
   size; centre ``S x S`` crop) and its centre ``crop x crop`` (the checkpoint's input size),
   minus the checkpoint's per-pixel mean, times its ``input_scale``, goes through the model in
   eval mode once; the fc7 output (after ReLU; dropout is off in eval mode) is its feature;
2. a multinomial logistic regression ("softmax") is fitted on the training features
   (:func:`fit_softmax`: features centred and scaled, L2 penalty, full-batch L-BFGS); for the
   multi-label VOC task one logistic regression per class (sigmoid + binary cross-entropy);
3. Caltech: ``n`` training images per class, up to ``test_per_class`` of the rest for testing,
   mean per-class accuracy (%) over ``splits`` random splits, mean +- std. VOC: train on the
   ``train`` split, average precision per class on ``val`` (VOC 2010+ all-points AP, "difficult"
   labels ignored), and their mean (mAP). With ``transfer.voc_views = 5`` an image's feature is
   the mean over five views (:func:`load_views`: the whole image and its four quadrants, each at
   the model's scale) rather than the centre crop alone: a VOC image holds several objects
   anywhere in the frame, often small, which one centre crop misses or shrinks away
   (measured on the default synthetic VOC: mAP 14.5 % with the centre crop, 38.4 % with 5 views).
   The paper's protocol is one view (``experiment=paper`` sets 1).

The paper's "non-pretrained" rows: the same architecture trained from scratch on the same
training images (:func:`train_scratch`: the profile's initialisation, SGD recipe and filter
renormalisation, random crops + flips; the same budget of ``scratch_steps`` SGD steps for every
training-set size, with a cosine learning-rate decay in place of annealing on a validation
plateau; its own per-pixel mean), evaluated the same way with its own softmax output. Training from scratch is the expensive part, so it runs on the
first ``scratch_splits`` splits only (std over those).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from zfnet.config import Config, ModelConfig, TrainConfig, TransferConfig
from zfnet.data.caltech import Categories
from zfnet.data.images import BadImage, load_rgb, resize_center_crop
from zfnet.data.imagenet import LayoutError
from zfnet.data.transforms import center_crop, normalize, random_crops
from zfnet.models import ConvNet, build
from zfnet.models.filters import renormalize_filters
from zfnet.train.loop import init_weights, sgd

log = logging.getLogger(__name__)

# docs/paper.md "Transfer (Tables 4-6)": (dataset, training images per class) -> {model: (mean %, std %)}.
PAPER = {
    ("caltech101", 15): {"pretrained": (83.8, 0.5), "scratch": (22.8, 1.5)},
    ("caltech101", 30): {"pretrained": (86.5, 0.5), "scratch": (46.5, 1.7)},
    ("caltech256", 15): {"pretrained": (65.7, None), "scratch": (9.0, None)},
    ("caltech256", 30): {"pretrained": (70.6, None), "scratch": (22.5, None)},
    ("caltech256", 45): {"pretrained": (72.7, None), "scratch": (31.2, None)},
    ("caltech256", 60): {"pretrained": (74.2, None), "scratch": (38.8, None)},
    ("voc2012", None): {"pretrained": (79.0, None)},
}


@dataclass
class Crops:
    """Decoded, preprocessed images: ``images`` uint8 ``(N, 3, S, S)`` of the inputs at ``kept``."""

    images: torch.Tensor
    kept: list[int]
    skipped: list[tuple[str, str]]  # (path, reason) of files that could not be decoded


def load_crops(paths: Sequence[str | Path], size: int) -> Crops:
    """Decode ``paths`` (any mode: grayscale, CMYK... -> RGB), smallest side to ``size``, centre crop.

    Unreadable files are skipped (logged, listed in :attr:`Crops.skipped`).
    """
    crops, kept, skipped = [], [], []
    for i, path in enumerate(paths):
        try:
            crop, _ = resize_center_crop(load_rgb(path), size)
        except BadImage as exc:
            log.warning("skipping %s: %s", path, exc.reason)
            skipped.append((str(path), exc.reason))
            continue
        crops.append(np.ascontiguousarray(crop.transpose(2, 0, 1)))
        kept.append(i)
    if not crops:
        raise LayoutError(f"no readable image among {len(paths)} files")
    return Crops(torch.from_numpy(np.stack(crops)), kept, skipped)


def load_views(paths: Sequence[str | Path], size: int, views: int) -> Crops:
    """:func:`load_crops` for ``views`` views of each image: ``images`` uint8 ``(V, N, 3, S, S)``.

    ``views == 1``: the centre crop (``V = 1``). ``views == 5``: the image preprocessed at ``2 S``,
    then its whole ``2S x 2S`` crop scaled down to ``S`` (area average) and its four ``S x S``
    quadrants, each at the scale a single view has twice over.
    """
    if views == 1:
        crops = load_crops(paths, size)
        return Crops(crops.images[None], crops.kept, crops.skipped)
    big = load_crops(paths, 2 * size)
    whole = F.interpolate(big.images.float(), size=(size, size), mode="area").round().clamp(0, 255).to(torch.uint8)
    quadrants = [big.images[:, :, y : y + size, x : x + size] for y in (0, size) for x in (0, size)]
    return Crops(torch.stack([whole, *quadrants]).contiguous(), big.kept, big.skipped)


def _model_input(images: torch.Tensor, mean: torch.Tensor, input_scale: float, crop: int) -> torch.Tensor:
    """uint8 ``(B, 3, S, S)`` -> the model's input: centre ``crop``, minus the mean, times ``input_scale``."""
    return normalize(center_crop(images, crop), center_crop(mean, crop), input_scale)


@torch.no_grad()
def extract_features(model: ConvNet, images: torch.Tensor, mean: torch.Tensor, input_scale: float,
                     layers: Sequence[str], batch_size: int = 256, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The outputs of ``layers`` (block outputs: conv blocks after pool/norm, fc6/fc7 after ReLU) for each image.

    Args:
        model: the trained model; run in eval mode (no dropout), its input crop is ``model.input_size``.
        images: uint8 ``(N, 3, S, S)``; mean: ``(3, S, S)`` in 0..255 units.
        layers: names such as ``conv1`` .. ``conv5``, ``fc7``.

    Returns ``{layer: float (N, D)}``, each output flattened (``D = C * H * W`` for a conv layer).
    Forward hooks are removed before returning.
    """
    model.eval().to(device)
    out: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    handles = [model.layer(name).register_forward_hook(
        lambda _m, _i, output, name=name: out[name].append(output.flatten(1).float().cpu())) for name in layers]
    try:
        for i in range(0, len(images), batch_size):
            model(_model_input(images[i : i + batch_size], mean, input_scale, model.input_size).to(device))
    finally:
        for h in handles:
            h.remove()
    return {name: torch.cat(chunks) for name, chunks in out.items()}


class LinearClassifier(nn.Module):
    """``logits = W ((x - mu) / scale) + b``: a linear classifier on centred, scaled features.

    ``mu`` is the training features' mean per dimension, ``scale`` one number: the root mean
    variance over dimensions (so the L2 penalty means the same for every layer's features, and
    dimensions that are constant on the training set do not blow up).
    """

    def __init__(self, mu: torch.Tensor, scale: torch.Tensor, outputs: int):
        super().__init__()
        self.register_buffer("mu", mu)
        self.register_buffer("scale", scale)
        self.linear = nn.Linear(len(mu), outputs)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear((x - self.mu) / self.scale)


def fit_softmax(x: torch.Tensor, y: torch.Tensor, outputs: int, l2: float = 1e-3, max_iter: int = 100) -> LinearClassifier:
    """Fit a new softmax (or, for multi-label targets, one logistic regression per class).

    Args:
        x: float ``(N, D)`` features.
        y: int64 ``(N,)`` class indices (softmax + cross-entropy) or float ``(N, outputs)`` 0/1
            targets (sigmoid + binary cross-entropy, multi-label).
        outputs: number of classes.
        l2: penalty ``l2 / 2 * ||W||^2`` added to the mean loss (bias not penalised).
        max_iter: L-BFGS iterations (full batch, strong-Wolfe line search; deterministic).
    """
    mu = x.mean(0)
    scale = (x - mu).pow(2).mean().sqrt().clamp_min(1e-8)
    clf = LinearClassifier(mu, scale, outputs)
    z = (x - mu) / scale
    multilabel = y.dim() == 2
    opt = torch.optim.LBFGS(clf.linear.parameters(), lr=1.0, max_iter=max_iter, history_size=20,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-6, tolerance_change=1e-9)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logits = clf.linear(z)
        loss = F.binary_cross_entropy_with_logits(logits, y) if multilabel else F.cross_entropy(logits, y)
        loss = loss + 0.5 * l2 * clf.linear.weight.pow(2).sum()
        loss.backward()
        return loss

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: extra threads only add synchronisation (10x slower on a busy CPU)
    try:
        opt.step(closure)
    finally:
        torch.set_num_threads(threads)
    return clf.eval()


def mean_class_accuracy(pred: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean over the classes present in ``labels`` of the fraction of their images predicted right (%)."""
    recalls = [float((pred[labels == c] == c).float().mean()) for c in labels.unique()]
    return 100.0 * float(np.mean(recalls))


def average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """VOC 2010+ average precision (%) of one class: area under the precision-recall curve with
    precision made monotone (all points). ``targets`` 1 / -1 / 0: 0 ("difficult") is ignored.
    NaN if there is no positive."""
    keep = targets != 0
    scores, positive = scores[keep], targets[keep] == 1
    if not positive.any():
        return float("nan")
    hits = positive[np.argsort(-scores, kind="stable")]
    tp = np.cumsum(hits)
    recall = np.concatenate([[0.0], tp / positive.sum(), [1.0]])
    precision = np.concatenate([[0.0], tp / np.arange(1, len(hits) + 1), [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.nonzero(recall[1:] != recall[:-1])[0]
    return 100.0 * float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))


def class_split(labels: np.ndarray, n_train: int, test_per_class: int, seed: int, split: int) -> tuple[np.ndarray, np.ndarray]:
    """Random split ``split``: per class ``n_train`` training images and up to ``test_per_class`` of the rest.

    Returns ``(train, test)`` index arrays into ``labels``. A class with no image left for testing
    raises :class:`LayoutError`.
    """
    rng = np.random.default_rng([seed, split, n_train])
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.nonzero(labels == c)[0])
        if len(idx) <= n_train:
            raise LayoutError(f"class {c} has {len(idx)} images: too few for {n_train} training images and a test image")
        train.append(idx[:n_train])
        test.append(idx[n_train : n_train + test_per_class])
    return np.concatenate(train), np.concatenate(test)


def train_scratch(model_cfg: ModelConfig, train_cfg: TrainConfig, images: torch.Tensor, targets: torch.Tensor,
                  outputs: int, crop: int, steps: int, batch_size: int, seed: int = 0,
                  device: str | torch.device = "cpu") -> tuple[ConvNet, torch.Tensor]:
    """The same architecture trained from scratch on ``images`` (uint8 ``(N, 3, S, S)``).

    ``targets``: int64 ``(N,)`` (cross-entropy) or float ``(N, outputs)`` 0/1 (multi-label,
    binary cross-entropy). Uses ``train_cfg``'s initialisation, learning rate, momentum, weight
    decay, ``input_scale`` and filter renormalisation; random ``crop`` crops + flips; ``steps``
    SGD steps of ``batch_size`` images (passes over a shuffled order), the learning rate decayed
    to 0 along a cosine. Returns ``(model in eval mode, the per-pixel
    mean (3, S, S) of images)``.
    """
    t = train_cfg
    torch.manual_seed(seed)
    model = build(model_cfg, outputs, crop, t.input_scale)
    init_weights(model, t.init, t.init_std)
    if t.renormalize:
        renormalize_filters(model, t.renorm_radius)
    model.to(device).train()
    mean = images.float().mean(0)
    opt = sgd(model.parameters(), t)
    gen = torch.Generator().manual_seed(seed)
    multilabel = targets.dim() == 2
    step = 0
    while step < steps:
        order = torch.randperm(len(images), generator=gen)
        for i in range(0, len(images), batch_size):
            if step == steps:
                break
            idx = order[i : i + batch_size]
            x = random_crops(normalize(images[idx], mean, t.input_scale), crop, gen).to(device)  # the mean before the crop
            y = targets[idx].to(device)
            for group in opt.param_groups:
                group["lr"] = 0.5 * t.lr * (1 + math.cos(math.pi * step / steps))
            logits = model(x)
            loss = F.binary_cross_entropy_with_logits(logits, y) if multilabel else F.cross_entropy(logits, y)
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"training from scratch diverged (loss {loss.item()}); lower train.lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if t.renormalize:
                renormalize_filters(model, t.renorm_radius)
            step += 1
    return model.eval(), mean


@torch.no_grad()
def predict(model: ConvNet, images: torch.Tensor, mean: torch.Tensor, input_scale: float, batch_size: int = 256,
            device: str | torch.device = "cpu") -> torch.Tensor:
    """Logits ``(N, C)`` of the centre crops of uint8 ``(N, 3, S, S)`` images (model in eval mode)."""
    model.eval().to(device)
    return torch.cat([model(_model_input(images[i : i + batch_size], mean, input_scale, model.input_size).to(device)).cpu()
                      for i in range(0, len(images), batch_size)])


@dataclass
class Setup:
    """What a transfer experiment needs besides the data: the trained model and the settings."""

    model: ConvNet  # the trained model (layers 1-7 used, frozen), input crop model.input_size
    mean: torch.Tensor  # its per-pixel mean (3, S, S) in 0..255 units; S is the preprocessing size
    input_scale: float
    model_cfg: ModelConfig  # its architecture, trained from scratch for the "scratch" rows
    train_cfg: TrainConfig  # the recipe used from scratch
    transfer: TransferConfig  # splits, counts, softmax and scratch settings
    seed: int = 0
    device: str | torch.device = "cpu"


def setup(cfg: Config, checkpoint: str | Path) -> Setup:
    """The :class:`Setup` for the trained model at ``checkpoint`` and the settings of ``cfg``."""
    from zfnet.train.checkpoint import load_model
    from zfnet.train.runtime import resolve_device

    model, ckpt = load_model(checkpoint)
    return Setup(model, ckpt["mean"].float(), float(ckpt.get("input_scale", 1.0)), ModelConfig(**ckpt["model_config"]),
                 cfg.train, cfg.transfer, cfg.seed, resolve_device(cfg.transfer.device))


def caltech(setup: Setup, data: Categories, counts: Sequence[int], crops: Crops | None = None) -> list[dict]:
    """Table 4/5 rows for a Caltech-style dataset: for each ``n`` in ``counts``, pretrained and scratch.

    Returns rows ``{"train_per_class", "model", "accuracy", "accuracy_std", "runs", "accuracies"}``
    (accuracy = mean per-class accuracy in %, mean and std over the runs).
    """
    s, t = setup, setup.transfer
    size = s.mean.shape[-1]
    crops = crops or load_crops([x.path for x in data.samples], size)
    labels = np.array(data.labels())[crops.kept]
    y = torch.from_numpy(labels).long()
    feats = extract_features(s.model, crops.images, s.mean, s.input_scale, ["fc7"], t.batch_size, s.device)["fc7"]
    rows = []
    for n in counts:
        pretrained, scratch = [], []
        for split in range(t.splits):
            tr, te = class_split(labels, n, t.test_per_class, s.seed, split)
            clf = fit_softmax(feats[tr], y[tr], len(data.classes), t.l2, t.max_iter)
            pretrained.append(mean_class_accuracy(clf(feats[te]).argmax(1), y[te]))
            tested = len(te)
            if split < t.scratch_splits:
                net, mean = train_scratch(s.model_cfg, s.train_cfg, crops.images[tr], y[tr], len(data.classes),
                                          s.model.input_size, t.scratch_steps, t.scratch_batch_size, s.seed + split, s.device)
                logits = predict(net, crops.images[te], mean, s.train_cfg.input_scale, t.batch_size, s.device)
                scratch.append(mean_class_accuracy(logits.argmax(1), y[te]))
            log.info("n=%d split %d: pretrained %.1f%%%s", n, split, pretrained[-1],
                     f", scratch {scratch[-1]:.1f}%" if split < t.scratch_splits else "")
        rows += [_row(n, "pretrained", pretrained, tested)] + ([_row(n, "scratch", scratch, tested)] if scratch else [])
    return rows


def _row(n: int | None, model: str, values: list[float], test_images: int) -> dict:
    return {"train_per_class": n, "model": model, "accuracy": float(np.mean(values)),
            "accuracy_std": float(np.std(values)), "runs": len(values), "test_images": test_images,
            "accuracies": [round(v, 3) for v in values]}


def voc(setup: Setup, train_paths: Sequence[Path], train_targets: np.ndarray, test_paths: Sequence[Path],
        test_targets: np.ndarray, classes: Sequence[str]) -> dict:
    """Table 6: multi-label VOC classification, pretrained features + logistic regressions, and scratch.

    ``*_targets``: int ``(N, C)`` with 1 / -1 / 0 ("difficult": a positive for training, ignored by AP).
    Returns ``{"pretrained": {"ap": {class: %}, "map": %}, "scratch": {...}}`` (scratch only if
    ``scratch_splits > 0``); classes without a positive test image have AP NaN and are left out of the mean.
    """
    s, t = setup, setup.transfer
    size = s.mean.shape[-1]
    train, test = load_views(train_paths, size, t.voc_views), load_views(test_paths, size, t.voc_views)
    y_train = torch.from_numpy(train_targets[train.kept] >= 0).float()
    y_test = test_targets[test.kept]

    def features(views: torch.Tensor) -> torch.Tensor:  # (V, N, 3, S, S) -> mean over views of fc7, (N, D)
        return torch.stack([extract_features(s.model, v, s.mean, s.input_scale, ["fc7"], t.batch_size, s.device)["fc7"]
                            for v in views]).mean(0)

    clf = fit_softmax(features(train.images), y_train, len(classes), t.l2, t.max_iter)
    pretrained = clf(features(test.images)).detach().numpy()
    results = {"pretrained": _aps(pretrained, y_test, classes)}
    if t.scratch_splits > 0:
        # From scratch: trained on every view of every training image, scored like the features (mean over views).
        views = train.images.shape[0]
        net, mean = train_scratch(s.model_cfg, s.train_cfg, train.images.flatten(0, 1), y_train.repeat(views, 1),
                                  len(classes), s.model.input_size, t.scratch_steps, t.scratch_batch_size, s.seed, s.device)
        scores = torch.stack([predict(net, v, mean, s.train_cfg.input_scale, t.batch_size, s.device) for v in test.images])
        results["scratch"] = _aps(scores.mean(0).numpy(), y_test, classes)
        results["pretrained"]["map_minus_scratch_se"] = map_difference_se(pretrained, scores.mean(0).numpy(), y_test, s.seed)
    return results


def map_difference_se(a: np.ndarray, b: np.ndarray, targets: np.ndarray, seed: int = 0, boots: int = 200) -> float:
    """Bootstrap standard error (points) of mAP(a) - mAP(b) for two score matrices ``(N, C)`` of the same
    test images: the images resampled with replacement ``boots`` times."""
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(boots):
        pick = rng.integers(0, len(targets), len(targets))
        maps = [np.nanmean([average_precision(sc[pick, i], targets[pick, i]) for i in range(targets.shape[1])])
                for sc in (a, b)]
        diffs.append(maps[0] - maps[1])
    return float(np.nanstd(diffs, ddof=1))


def _aps(scores: np.ndarray, targets: np.ndarray, classes: Sequence[str]) -> dict:
    ap = {c: average_precision(scores[:, i], targets[:, i]) for i, c in enumerate(classes)}
    return {"ap": ap, "map": float(np.nanmean(list(ap.values())))}


def caltech_table(dataset: str, rows: list[dict]) -> pd.DataFrame:
    """Table 4 / 5: one row per (training images per class, model) with the paper's number beside ours."""
    out = []
    for r in rows:
        paper = PAPER.get((dataset, r["train_per_class"]), {}).get(r["model"], (None, None))
        out.append({"dataset": dataset, "train_per_class": r["train_per_class"], "model": r["model"],
                    "accuracy": r["accuracy"], "accuracy_std": r["accuracy_std"], "runs": r["runs"],
                    "paper_accuracy": paper[0], "paper_accuracy_std": paper[1]})
    return pd.DataFrame(out)


def voc_table(results: dict) -> pd.DataFrame:
    """Table 6: mean AP per model with the paper's number beside ours, then AP per class (the paper's
    per-class numbers are not in docs/paper.md: ``-``)."""
    out = []
    for model, r in results.items():
        paper = PAPER[("voc2012", None)].get(model, (None, None))[0]
        out.append({"dataset": "voc2012", "class": "mean (mAP)", "model": model, "ap": r["map"], "paper_ap": paper})
        out += [{"dataset": "voc2012", "class": c, "model": model, "ap": v, "paper_ap": None} for c, v in r["ap"].items()]
    return pd.DataFrame(out)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    """Write ``fig`` as a PNG at ``path`` and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    _pyplot().close(fig)
    return path


def fig9(rows: list[dict], dataset: str, path: str | Path) -> Path:
    """Fig. 9: mean per-class accuracy against training images per class, pretrained and from
    scratch, ours (error bars: std over splits) and the paper's (dashed)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 3.8), dpi=110)
    for model, colour in (("pretrained", "tab:blue"), ("scratch", "tab:red")):
        ours = [r for r in rows if r["model"] == model]
        if ours:
            ax.errorbar([r["train_per_class"] for r in ours], [r["accuracy"] for r in ours],
                        yerr=[r["accuracy_std"] for r in ours], marker="o", color=colour, capsize=3,
                        label=f"ours, {model}")
        paper = sorted((n, v[model][0]) for (d, n), v in PAPER.items() if d == dataset and model in v)
        if paper:
            ax.plot(*zip(*paper), "--", marker="s", mfc="none", color=colour, alpha=0.7, label=f"paper, {model}")
    ax.set(xlabel="training images per class", ylabel="mean per-class accuracy (%)", ylim=(0, 100),
           title=f"Fig. 9: {dataset}, pretrained vs from scratch")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def ap_figure(results: dict, path: str | Path) -> Path:
    """Table 6 as a figure: average precision per VOC class, pretrained and from scratch, with the mAPs."""
    plt = _pyplot()
    classes = list(next(iter(results.values()))["ap"])
    fig, ax = plt.subplots(figsize=(6.4, 5.2), dpi=110)
    height = 0.8 / len(results)
    for k, (model, r) in enumerate(results.items()):
        ax.barh([i + k * height for i in range(len(classes))], [r["ap"][c] for c in classes], height,
                label=f"{model} (mAP {r['map']:.1f}%)")
    paper = PAPER[("voc2012", None)]["pretrained"][0]
    ax.axvline(paper, color="k", ls="--", lw=1, label=f"paper mAP, pretrained ({paper}%)")
    ax.set_yticks([i + 0.4 - height / 2 for i in range(len(classes))], classes, fontsize=8)
    ax.invert_yaxis()
    ax.set(xlabel="average precision (%)", xlim=(0, 100), title="Table 6: VOC 2012 classification, AP per class")
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)
