"""Transfer of the trained layers 1-7 to other datasets (docs/paper.md Tables 4-6, Fig. 9).

The method, as in the paper: layers 1-7 of the trained model are frozen and only a new softmax
classifier is trained on their output. Concretely:

1. every image is preprocessed like the pipeline (smallest side to ``S``, the checkpoint's mean
   size; centre ``S x S`` crop) and its centre ``crop x crop`` (the checkpoint's input size),
   minus the checkpoint's per-pixel mean, times its ``input_scale``, goes through the model in
   eval mode once; the fc7 output (after ReLU; dropout is off in eval mode) is its feature
   (:func:`zfnet.experiments.features.features`);
2. a multinomial logistic regression ("softmax") is fitted on the training features
   (:func:`zfnet.experiments.classifier.fit_softmax`: features centred and scaled, L2 penalty,
   L-BFGS); for the multi-label VOC task one logistic regression per class;
3. Caltech: ``n`` training images per class, up to ``test_per_class`` of the rest for testing,
   mean per-class accuracy (%) over ``splits`` random splits, mean +- std. VOC: train on the
   ``train`` split, average precision per class on ``val`` (VOC 2010+ all-points AP, "difficult"
   labels ignored), and their mean (mAP). With ``transfer.voc_views = 5`` an image's feature is
   the mean over five views (:func:`zfnet.data.views.load_views`: the whole image and its four quadrants, each at
   the model's scale) rather than the centre crop alone: a VOC image holds several objects
   anywhere in the frame, often small, which one centre crop misses or shrinks away
   (measured on the default synthetic VOC: mAP 14.5 % with the centre crop, 38.4 % with 5 views).
   The paper's protocol is one view (``experiment=paper`` sets 1).

The paper's "non-pretrained" rows: the same architecture trained from scratch on the same
training images (:func:`train_scratch`: the training loop's model, initialisation and SGD step
with filter renormalisation, :mod:`zfnet.train.loop`; random crops + flips; the same budget of
``scratch_steps`` SGD steps for every training-set size, with a cosine learning-rate decay in place
of annealing on a validation plateau; its own per-pixel mean), evaluated the same way with its own
softmax output. Training from scratch is the expensive part, so it runs on the first
``scratch_splits`` splits only (std over those).

Tables 4-6 and Fig. 9 beside the paper's numbers: :mod:`zfnet.experiments.transfer_report`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from zfnet.config import ModelConfig, TrainConfig, TransferConfig
from zfnet.data.caltech import Categories
from zfnet.data.imagenet import LayoutError
from zfnet.data.transforms import normalize, random_crops
from zfnet.data.views import Crops, load_crops, load_views
from zfnet.experiments.classifier import average_precision, fit_softmax, fit_softmaxes, mean_class_accuracy
from zfnet.experiments.features import features, logits
from zfnet.models import ConvNet
from zfnet.train.loop import new_model, sgd, sgd_step

log = logging.getLogger(__name__)


@dataclass
class Setup:
    """What a transfer experiment needs besides the data: the trained model and the settings."""

    model: ConvNet  # the trained model (layers 1-7 used, frozen), input crop model.input_size, scale model.input_scale
    mean: torch.Tensor  # its per-pixel mean (3, S, S) in 0..255 units; S is the preprocessing size
    model_cfg: ModelConfig  # its architecture, trained from scratch for the "scratch" rows
    train_cfg: TrainConfig  # the recipe used from scratch
    transfer: TransferConfig  # splits, counts, softmax and scratch settings
    seed: int = 0
    device: str | torch.device = "cpu"


def setup(checkpoint: str | Path, transfer: TransferConfig, train: TrainConfig, seed: int) -> Setup:
    """The :class:`Setup` for the trained model at ``checkpoint``: the ``transfer`` settings, the
    ``train`` recipe for the scratch rows, ``seed`` for the splits and the scratch nets."""
    from zfnet.train.checkpoint import load_model
    from zfnet.train.runtime import resolve_device

    model, ckpt = load_model(checkpoint)
    return Setup(model, ckpt["mean"].float(), ModelConfig(**ckpt["model_config"]), train, transfer, seed,
                 resolve_device(transfer.device))


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


def _passes(images: torch.Tensor, targets: torch.Tensor, mean: torch.Tensor, t: TrainConfig, crop: int,
            batch_size: int, gen: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Mini-batches of random ``crop`` crops + flips of ``images`` (the mean subtracted first) with
    their targets, pass after pass over a fresh seeded order, without end."""
    while True:
        order = torch.randperm(len(images), generator=gen)
        for i in range(0, len(images), batch_size):
            idx = order[i : i + batch_size]
            yield random_crops(normalize(images[idx], mean, t.input_scale), crop, gen), targets[idx]


def train_scratch(model_cfg: ModelConfig, train_cfg: TrainConfig, images: torch.Tensor, targets: torch.Tensor,
                  outputs: int, crop: int, steps: int, batch_size: int, seed: int = 0,
                  device: str | torch.device = "cpu") -> tuple[ConvNet, torch.Tensor]:
    """The same architecture trained from scratch on ``images`` (uint8 ``(N, 3, S, S)``).

    ``targets``: int64 ``(N,)`` (cross-entropy) or float ``(N, outputs)`` 0/1 (multi-label,
    binary cross-entropy). The training loop's pieces with ``train_cfg``'s recipe: its model and
    initialisation (:func:`~zfnet.train.loop.new_model`, ``crop`` inputs, seeded by ``seed``), SGD
    (:func:`~zfnet.train.loop.sgd`: learning rate, momentum, weight decay) and step with filter
    renormalisation (:func:`~zfnet.train.loop.sgd_step`); random ``crop`` crops + flips;
    ``steps`` SGD steps of ``batch_size`` images (passes over a shuffled order), the learning rate
    decayed to 0 along a cosine. Returns ``(model in eval mode, the per-pixel mean (3, S, S) of images)``.
    """
    t = train_cfg
    model = new_model(model_cfg, replace(t, crop=crop), outputs, seed).to(device).train()
    mean = images.float().mean(0)
    opt = sgd(model.parameters(), t)
    gen = torch.Generator().manual_seed(seed)
    loss_of = F.binary_cross_entropy_with_logits if targets.dim() == 2 else F.cross_entropy
    for step, (x, y) in enumerate(islice(_passes(images, targets, mean, t, crop, batch_size, gen), steps)):
        for group in opt.param_groups:
            group["lr"] = 0.5 * t.lr * (1 + math.cos(math.pi * step / steps))
        sgd_step(model, opt, loss_of(model(x.to(device)), y.to(device)), t, "training from scratch diverged")
    return model.eval(), mean


def caltech(setup: Setup, data: Categories, counts: Sequence[int], crops: Crops | None = None) -> list[dict]:
    """Table 4/5 rows for a Caltech-style dataset: for each ``n`` in ``counts``, pretrained and scratch.

    Returns rows ``{"train_per_class", "model", "accuracy", "accuracy_std", "runs", "accuracies"}``
    (accuracy = mean per-class accuracy in %, mean and std over the runs).
    """
    s, t = setup, setup.transfer
    crops = crops or load_crops([x.path for x in data.samples], s.mean.shape[-1])
    labels = np.array(data.labels())[crops.kept]
    y = torch.from_numpy(labels).long()
    feats = features(s.model, crops.images, s.mean, ["fc7"], t.batch_size, s.device)["fc7"]
    rows = []
    for n in counts:
        pretrained, scratch = [], []
        splits = [class_split(labels, n, t.test_per_class, s.seed, split) for split in range(t.splits)]
        fitted = fit_softmaxes(((feats[tr], y[tr]) for tr, _ in splits), len(data.classes), t.l2, t.max_iter)
        for split, ((tr, te), clf) in enumerate(zip(splits, fitted)):
            pretrained.append(mean_class_accuracy(clf(feats[te]).argmax(1), labels[te]))
            tested = len(te)
            if split < t.scratch_splits:
                net, mean = train_scratch(s.model_cfg, s.train_cfg, crops.images[tr], y[tr], len(data.classes),
                                          s.model.input_size, t.scratch_steps, t.scratch_batch_size, s.seed + split, s.device)
                scores = logits(net, crops.images[te], mean, t.batch_size, s.device)
                scratch.append(mean_class_accuracy(scores.argmax(1), labels[te]))
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

    def mean_fc7(views: torch.Tensor) -> torch.Tensor:  # (V, N, 3, S, S) -> mean over views of fc7, (N, D)
        return torch.stack([features(s.model, v, s.mean, ["fc7"], t.batch_size, s.device)["fc7"]
                            for v in views]).mean(0)

    clf = fit_softmax(mean_fc7(train.images), y_train, len(classes), t.l2, t.max_iter)
    pretrained = clf(mean_fc7(test.images)).detach().numpy()
    results = {"pretrained": _aps(pretrained, y_test, classes)}
    if t.scratch_splits > 0:
        # From scratch: trained on every view of every training image, scored like the features (mean over views).
        views = train.images.shape[0]
        net, mean = train_scratch(s.model_cfg, s.train_cfg, train.images.flatten(0, 1), y_train.repeat(views, 1),
                                  len(classes), s.model.input_size, t.scratch_steps, t.scratch_batch_size, s.seed, s.device)
        scores = torch.stack([logits(net, v, mean, t.batch_size, s.device)
                              for v in test.images]).mean(0).numpy()
        results["scratch"] = _aps(scores, y_test, classes)
        results["pretrained"]["map_minus_scratch_se"] = map_difference_se(pretrained, scores, y_test, s.seed)
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
