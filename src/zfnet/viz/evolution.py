"""Fig. 4: how features evolve during training, and when each layer settles.

For each milestone checkpoint (epochs 1, 2, 5, 10, 20, 30, 40, 64 in the paper), one :func:`top9`
pass over the same images records every map's 9 strongest activations. The figure shows, for a
few maps of each layer, the projection of the strongest activation at each milestone (rows: maps
grouped by layer; columns: epochs); the maps are the strongest at the last milestone.

Convergence: a map's top-9 at a milestone *matches* the final one when at least ``stable`` (7) of
its 9 image indices are among the last milestone's top-9. A layer's overlap at a milestone is the
mean over its live maps (top activation > 0 at the last milestone; dead maps have no defined
top-9), and the layer converged at the first milestone from which on its mean overlap is at least
``stable``. The paper's finding is that lower layers converge first (a few epochs) and upper
layers only after 40-50 epochs.

Representation similarity (the primary measure): linear CKA (Kornblith et al. 2019) between a
layer's features at each milestone and at the last, on the same ``probe_images`` images (the first
of the scanned split). CKA is 1 when two representations differ only by a rotation and an
isotropic scale, so it asks whether the layer computes the same features, whatever their order
(top-9 membership instead asks whether each unit keeps its own). How settled a layer was during
training is its mean CKA with the final model over the milestones before the last (1: it had its
final form from the first epoch on); the paper's finding holds when that falls from conv1 to the
top conv layer beyond its bootstrap noise (over the probe images). As a threshold view, a layer
has *converged* at the first milestone from which on its CKA stays at or above
:data:`CKA_CONVERGED` (0.9).

Where every layer reaches ``stable`` only at the last milestone (a short run, or a training set of
many near-identical strong images, so that top-9 membership keeps shuffling), the converged epochs
cannot order the layers; the finding is then decided by how settled each layer was on the way: its
mean overlap over the earlier milestones, as a fraction of 9 (:func:`settled`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from zfnet.train.checkpoint import Checkpoint
from zfnet.viz.features import layer_features
from zfnet.viz.grids import normalize_signed, resize, save_figure, tile
from zfnet.viz.receptive import receptive_field
from zfnet.viz.top9 import Batches, Fetch, TopActivations, project_top, top9


def overlap(top: TopActivations, final: TopActivations) -> torch.Tensor:
    """``(C,)`` number of each map's top image indices that are also in ``final``'s top for that map."""
    return (top.images[:, :, None] == final.images[:, None, :]).any(2).sum(1)


def converged_epoch(epochs: Sequence[int], overlaps: Sequence[float], stable: float) -> int:
    """The first epoch from which every later overlap (its own included) is at least ``stable``."""
    converged = epochs[-1]
    for epoch, value in zip(reversed(epochs), reversed(overlaps)):
        if value < stable:
            break
        converged = epoch
    return converged


def settled(overlaps: Sequence[float], k: int) -> float:
    """Mean overlap with the final top-``k`` over every milestone but the last, as a fraction (0..1)."""
    earlier = list(overlaps[:-1])
    return sum(earlier) / (k * len(earlier)) if earlier else 1.0


def lower_layers_first(converged: Sequence[int], settledness: Sequence[float]) -> tuple[bool, str]:
    """Do layers settle bottom-up? Decided by the converged epochs (never decreasing upwards, not all
    equal) or, when those are all equal, by the settled fractions (never increasing upwards).
    Returns the verdict and what decided it (``converged_epoch`` or ``settled``)."""
    if len(set(converged)) > 1:
        return all(a <= b for a, b in zip(converged, converged[1:])), "converged_epoch"
    return all(a >= b for a, b in zip(settledness, settledness[1:])), "settled"


CKA_CONVERGED = 0.9
BOOTSTRAPS = 200  # resamples of the probe images for the standard error of a layer's mean CKA


def gram(x: torch.Tensor) -> torch.Tensor:
    """``(n, D)`` features (flattened) -> the ``(n, n)`` float64 Gram matrix ``x x^T``."""
    x = x.double().flatten(1)
    return x @ x.T


def centre(k: torch.Tensor) -> torch.Tensor:
    """``H K H`` with ``H = I - 1/n``, computed as K minus its row and column means plus its grand
    mean (O(n^2), not two O(n^3) products)."""
    return k - k.mean(0, keepdim=True) - k.mean(1, keepdim=True) + k.mean()


def _centred_cka(kc: torch.Tensor, lc: torch.Tensor) -> float:
    return float((kc * lc).sum() / (kc.norm() * lc.norm()).clamp_min(1e-30))


def cka(k: torch.Tensor, l: torch.Tensor) -> float:
    """Linear CKA (Kornblith et al. 2019) of two representations of the same ``n`` inputs given as
    Gram matrices ``(n, n)``: ``<Kc, Lc> / (|Kc| |Lc|)`` with ``Kc``, ``Lc`` centred (:func:`centre`). In [0, 1]."""
    return _centred_cka(centre(k), centre(l))


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of two representations ``(n, D1)``, ``(n, D2)`` of the same ``n`` inputs."""
    return cka(gram(x), gram(y))


def mean_cka_se(grams: list[torch.Tensor], final: torch.Tensor, boots: int = BOOTSTRAPS, seed: int = 0) -> float:
    """Bootstrap standard error (over the probe images) of the mean CKA of ``grams`` (one per
    milestone) with ``final``."""
    gen = torch.Generator().manual_seed(seed)
    n, means = final.shape[0], []
    for _ in range(boots):
        idx = torch.randint(0, n, (n,), generator=gen)
        final_c = centre(final[idx][:, idx])
        means.append(sum(_centred_cka(centre(g[idx][:, idx]), final_c) for g in grams) / len(grams))
    return float(torch.tensor(means).std())


def evolution(
    checkpoints: Sequence[str | Path],
    batches: Batches,
    fetch: Fetch,
    out: str | Path,
    maps: int = 4,
    stable: int = 7,
    device: str | torch.device = "cpu",
    max_batch: int = 256,
    tile_size: int = 48,
    probe_images: int = 256,
    each: Callable[[int, nn.Module, dict[str, TopActivations]], None] | None = None,
) -> dict:
    """Write the Fig. 4 grid to ``out`` (PNG) and return when each layer converges.

    Args:
        checkpoints: milestone checkpoint paths, epochs ascending (the last is the reference).
        batches: re-iterable ``(images (B, 3, H, W), indices (B,))`` batches; iterated once per checkpoint.
        fetch: dataset indices ``(M,)`` -> preprocessed images ``(M, 3, H, W)``.
        out: PNG path.
        maps: feature maps shown per layer.
        stable: top-9 images shared with the last milestone that count as "stopped changing".
        device: where the models run.
        max_batch: deconvnet chunk size.
        tile_size: display side of each projection (cropped to the unit's receptive field, then resized).
        probe_images: images (the first of ``batches``) on which the layers' CKA is measured.
        each: called with ``(epoch, model, its top-9)`` at every milestone, in order (the top-9
            index keeps every map's evolution: :class:`zfnet.viz.index.Evolution`).

    Returns ``{"figure": path, "epochs": [e, ...], "cka": {layer: [CKA with the last milestone per
    epoch]}, "cka_converged_epoch": {layer: e}, "cka_settled": {layer: mean CKA over the earlier
    milestones}, "cka_settled_se": {layer: its bootstrap standard error}, "overlap": {layer: [mean top-9 overlap per epoch]},
    "converged_epoch": {layer: e} (by top-9 overlap), "settled": {layer: fraction},
    "lower_layers_first": bool, "decided_by": str}`` (:func:`lower_layers_first`).
    """
    if not checkpoints:
        raise ValueError("evolution needs at least one checkpoint")
    paths = list(checkpoints)
    final_ckpt = Checkpoint.load(paths[-1], map_location=device)
    final_model = final_ckpt.build()
    final = top9(final_model, batches)
    layers = list(final)
    probe = fetch(torch.arange(min(probe_images, len(batches))))
    final_grams = {k: gram(v) for k, v in layer_features(final_model, probe, layers).items() if k in layers}
    grams = {layer: [] for layer in layers}
    chosen = {layer: final[layer].strongest_maps(maps) for layer in layers}
    epochs, tiles, overlaps = [], {layer: [] for layer in layers}, {layer: [] for layer in layers}
    for path in paths:  # one model in memory besides the final one
        ckpt = final_ckpt if path == paths[-1] else Checkpoint.load(path, map_location=device)
        model = final_model if ckpt is final_ckpt else ckpt.build()
        tops = final if model is final_model else top9(model, batches)
        if epochs and ckpt.epoch <= epochs[-1]:
            raise ValueError(f"checkpoints must be in ascending epoch order: {path} (epoch {ckpt.epoch}) after epoch {epochs[-1]}")
        epochs.append(ckpt.epoch)
        if each is not None:
            each(ckpt.epoch, model, tops)
        features = None if model is final_model else layer_features(model, probe, layers)
        for layer in layers:
            grams[layer].append(final_grams[layer] if features is None else gram(features[layer]))
            live = final[layer].values[:, 0] > 0
            shared = overlap(tops[layer], final[layer])[live].float()
            overlaps[layer].append(float(shared.mean()) if live.any() else float(final[layer].values.shape[1]))
            recon, _ = project_top(model, layer, tops[layer].top(1), chosen[layer], fetch, max_batch,
                                   receptive_field(model, layer))
            tiles[layer].append(resize(normalize_signed(recon[:, 0]), tile_size))
    rows = torch.cat([torch.stack(tiles[layer], 1) for layer in layers])  # (maps per layer x layers, epochs, 3, s, s)
    row_labels = [f"{layer} #{c}" for layer in layers for c in chosen[layer].tolist()]
    grid = tile(rows.flatten(0, 1), len(epochs), pad=2)
    step = tile_size + 2
    path = save_figure(
        grid,
        out,
        "Feature evolution: strongest activation of each map, projected, per training epoch",
        row_labels=[(2 + i * step + tile_size / 2, label) for i, label in enumerate(row_labels)],
        col_labels=[(2 + j * step + tile_size / 2, f"epoch {e}") for j, e in enumerate(epochs)],
    )
    converged = {layer: converged_epoch(epochs, overlaps[layer], stable) for layer in layers}
    fractions = {layer: settled(overlaps[layer], final[layer].values.shape[1]) for layer in layers}
    verdict, decided_by = lower_layers_first([converged[layer] for layer in layers], [fractions[layer] for layer in layers])
    similarity = {layer: [cka(g, final_grams[layer]) for g in grams[layer]] for layer in layers}
    return {
        "figure": str(path),
        "epochs": epochs,
        "cka": similarity,
        "cka_converged_epoch": {layer: converged_epoch(epochs, similarity[layer], CKA_CONVERGED) for layer in layers},
        "cka_settled": {layer: sum(similarity[layer][:-1]) / max(len(epochs) - 1, 1) for layer in layers},
        "cka_settled_se": {layer: mean_cka_se(grams[layer][:-1], final_grams[layer]) if len(epochs) > 1 else 0.0
                           for layer in layers},
        "overlap": overlaps,
        "converged_epoch": converged,
        "settled": fractions,
        "lower_layers_first": verdict,
        "decided_by": decided_by,
    }
