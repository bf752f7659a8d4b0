"""Occlusion sensitivity (Zeiler & Fergus 2014, Sec. 4.2, Fig. 7).

A grey square slides over the image; at each position one forward pass of the occluded image
gives all three of the paper's maps:

- (b) ``feature``: the total activity of the layer's feature map (post-ReLU, summed over its
  positions) that is strongest on the *unoccluded* image (the map with the largest activation);
- (d) ``prob``: the softmax probability of the image's label;
- (e) ``argmax``: the most probable class.

Grid: the square's top-left corner at ``0, stride, 2 * stride, ...`` along each axis while the
square fits inside the image, so the map is ``(Gh, Gw)`` with ``Gh = (H - patch) // stride + 1``.
Every (image, position) pair is one item; items are occluded and evaluated in chunks of
``max_batch``, so memory is bounded whatever the number of images and positions.

The **pointing game** (:func:`pointing_game`) scores the probability map against known object
boxes: the occluder position that lowers the label's probability most (the map's minimum) hits
when the square's *centre* lies inside the box (edges included). Its chance level is the fraction
of grid positions whose centre lies inside the box.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from torch import nn

from zfnet.viz.features import LayerOutputs
from zfnet.viz.layers import resolve


@dataclass
class OcclusionMaps:
    """The three maps of :func:`occlusion` and what they refer to.

    Attributes:
        feature: ``(N, Gh, Gw)`` total activity of map ``channel`` with the square at each position.
        prob: ``(N, Gh, Gw)`` softmax probability of the label.
        argmax: ``(N, Gh, Gw)`` int64 most probable class.
        channel: ``(N,)`` int64 the layer's strongest map on the unoccluded image.
        base_feature, base_prob: ``(N,)`` the same quantities on the unoccluded image.
        base_argmax: ``(N,)`` int64 the unoccluded prediction.
        ys, xs: ``(Gh,)``, ``(Gw,)`` int64 top-left corners of the square (input pixels).
        patch: the square's side in input pixels.
    """

    feature: torch.Tensor
    prob: torch.Tensor
    argmax: torch.Tensor
    channel: torch.Tensor
    base_feature: torch.Tensor
    base_prob: torch.Tensor
    base_argmax: torch.Tensor
    ys: torch.Tensor
    xs: torch.Tensor
    patch: int

    def select(self, index: list[int] | torch.Tensor) -> "OcclusionMaps":
        """The maps of the images at ``index`` (image indices)."""
        per_image = ("feature", "prob", "argmax", "channel", "base_feature", "base_prob", "base_argmax")
        return replace(self, **{f: getattr(self, f)[index] for f in per_image})

    def centres(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(Gh,)``, ``(Gw,)`` float centres of the square at each grid row / column (input pixels)."""
        return self.ys.float() + self.patch / 2, self.xs.float() + self.patch / 2


def grid(size: int, patch: int, stride: int) -> torch.Tensor:
    """Top-left corners ``0, stride, ...`` of a ``patch``-wide square that fits in ``size`` pixels, ``(G,)``."""
    if not 1 <= patch <= size:
        raise ValueError(f"patch must be in 1..{size} (the image side), got {patch}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    return torch.arange(0, size - patch + 1, stride)


@torch.no_grad()
def occlusion(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    patch: int = 16,
    stride: int = 8,
    fill: float | torch.Tensor | None = None,
    layer: str = "conv5",
    max_batch: int = 256,
) -> OcclusionMaps:
    """Occlusion maps of ``model`` for every image (Fig. 7 (b), (d), (e)).

    Args:
        model: any trained model (put in eval mode here).
        images: ``(N, 3, H, W)`` preprocessed model input.
        labels: ``(N,)`` class index of each image (the "correct class" of the probability map).
        patch: side of the grey square, input pixels.
        stride: step between square positions, input pixels.
        fill: the occluder's value in model-input units, a number or a tensor broadcastable to
            ``(3, H, W)``; ``None`` is grey = the dataset mean, i.e. 0 after mean subtraction.
        layer: the layer whose strongest feature map gives map (b) (:mod:`zfnet.viz.layers`; ``conv5``,
            ZFNet's rectified layer-5 maps, in the paper).
        max_batch: occluded images per forward pass (bounds memory, not results).

    Returns an :class:`OcclusionMaps`.
    """
    model.eval()
    n, _, h, w = images.shape
    labels = torch.as_tensor(labels, dtype=torch.long, device=images.device).reshape(-1)
    ys, xs = grid(h, patch, stride).to(images.device), grid(w, patch, stride).to(images.device)
    fill_value = torch.as_tensor(0.0 if fill is None else fill, dtype=images.dtype, device=images.device)
    rows, cols = torch.arange(h, device=images.device), torch.arange(w, device=images.device)
    positions = len(ys) * len(xs)
    feature = images.new_empty(n * positions)
    prob = images.new_empty(n * positions)
    argmax = torch.empty(n * positions, dtype=torch.long, device=images.device)
    maps_of = resolve(model, layer)  # the module whose output is the layer's feature maps
    with LayerOutputs(model, [maps_of]) as rec:
        base_prob, base_argmax, base_feature, channel = [], [], [], []
        for chunk, chunk_labels in zip(images.split(max_batch), labels.split(max_batch)):
            p = rec.run(chunk).softmax(1)
            maps = rec.outputs[maps_of]  # (B, C, h', w')
            strongest = maps.flatten(2).amax(2).argmax(1)
            base_prob.append(p.gather(1, chunk_labels[:, None])[:, 0])
            base_argmax.append(p.argmax(1))
            base_feature.append(maps[torch.arange(len(chunk)), strongest].sum((1, 2)))
            channel.append(strongest)
        channel = torch.cat(channel)
        for start in range(0, n * positions, max_batch):
            item = torch.arange(start, min(start + max_batch, n * positions), device=images.device)
            image, pos = item // positions, item % positions
            y0, x0 = ys[pos // len(xs)], xs[pos % len(xs)]
            inside_y = (rows >= y0[:, None]) & (rows < y0[:, None] + patch)  # (B, H)
            inside_x = (cols >= x0[:, None]) & (cols < x0[:, None] + patch)  # (B, W)
            square = (inside_y[:, :, None] & inside_x[:, None, :])[:, None]  # (B, 1, H, W)
            occluded = torch.where(square, fill_value, images[image])
            p = rec.run(occluded).softmax(1)
            maps = rec.outputs[maps_of]
            feature[item] = maps[torch.arange(len(item)), channel[image]].sum((1, 2))
            prob[item] = p.gather(1, labels[image][:, None])[:, 0]
            argmax[item] = p.argmax(1)
    shape = (n, len(ys), len(xs))
    return OcclusionMaps(
        feature.view(shape), prob.view(shape), argmax.view(shape), channel,
        torch.cat(base_feature), torch.cat(base_prob), torch.cat(base_argmax), ys, xs, patch,
    )


def pointing_game(maps: OcclusionMaps, boxes: torch.Tensor) -> torch.Tensor:
    """Per image, whether the probability map's minimum falls inside the object box.

    Args:
        maps: from :func:`occlusion`.
        boxes: ``(N, 4)`` object boxes ``(x0, y0, x1, y1)`` in the same input pixels as the images.

    Returns bool ``(N,)``: the square at the argmin of ``maps.prob`` (first one on ties) has its
    centre inside the box, edges included.
    """
    cy, cx = maps.centres()
    flat = maps.prob.flatten(1).argmin(1)
    y, x = cy[flat // len(cx)], cx[flat % len(cx)]
    boxes = boxes.to(y.device, torch.float32)
    return (boxes[:, 0] <= x) & (x <= boxes[:, 2]) & (boxes[:, 1] <= y) & (y <= boxes[:, 3])


def pointing_chance(maps: OcclusionMaps, boxes: torch.Tensor) -> torch.Tensor:
    """Per image, the fraction of grid positions whose square centre is inside the box: ``(N,)``,
    the hit rate of a position chosen at random (the pointing game's chance level)."""
    cy, cx = maps.centres()
    boxes = boxes.to(cy.device, torch.float32)
    in_y = (boxes[:, 1:2] <= cy) & (cy <= boxes[:, 3:4])  # (N, Gh)
    in_x = (boxes[:, 0:1] <= cx) & (cx <= boxes[:, 2:3])  # (N, Gw)
    return (in_y[:, :, None] & in_x[:, None, :]).float().mean((1, 2))


def projection_correlation(maps: OcclusionMaps, projections: torch.Tensor) -> torch.Tensor:
    """Per image, how much the strongest map's activity drops where the square covers its own
    projection: the Pearson correlation, over the grid positions, between the drop of map (b)
    (``base_feature - feature``) and the projection's energy (``|projection|`` summed over RGB) under
    the square.

    ``projections``: ``(N, 3, H, W)`` the deconvnet projection of each image's strongest activation
    of map ``maps.channel``. Returns ``(N,)`` in [-1, 1] (0 where either is constant).
    """
    stride = int(maps.ys[1] - maps.ys[0]) if len(maps.ys) > 1 else 1
    energy = projections.abs().sum(1, keepdim=True).to(maps.feature.device, maps.feature.dtype)
    covered = torch.nn.functional.avg_pool2d(energy, maps.patch, stride)[:, 0, : len(maps.ys), : len(maps.xs)]
    drop = maps.base_feature[:, None, None] - maps.feature
    a, b = covered.flatten(1), drop.flatten(1)
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)


def occlusion_figure(
    maps: OcclusionMaps,
    pixels: torch.Tensor,
    projections: torch.Tensor,
    labels: torch.Tensor,
    class_names: list[str],
    path: str | Path,
    layer: str = "conv5",
) -> Path:
    """Fig. 7, one row per image: (a) the image with the square where it lowers the label's
    probability most, (b) the feature map, (c) that map's deconvnet projection, (d) the probability
    map, (e) the argmax map, coloured by class with the classes named.

    Args:
        maps: from :func:`occlusion` for these N images.
        pixels: ``(N, 3, H, W)`` the images for display, values in [0, 1].
        projections: ``(N, 3, H, W)`` deconvnet projection of the strongest activation of
            ``maps.channel`` in each image (raw; scaled here).
        labels: ``(N,)`` true classes; class_names: name of every class index.
    """
    from matplotlib.patches import Patch, Rectangle

    from zfnet.plotting import plt, save
    from zfnet.viz.grids import normalize_signed

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n, (h, w) = len(pixels), pixels.shape[-2:]
    cy, cx = maps.centres()
    step_y = float(cy[1] - cy[0]) if len(cy) > 1 else 1.0
    step_x = float(cx[1] - cx[0]) if len(cx) > 1 else 1.0
    # each map cell is drawn around its square's centre, so the maps line up with the image
    extent = (float(cx[0]) - step_x / 2 - 0.5, float(cx[-1]) + step_x / 2 - 0.5,
              float(cy[-1]) + step_y / 2 - 0.5, float(cy[0]) - step_y / 2 - 0.5)
    colours = plt.get_cmap("tab20")
    fig, axes = plt.subplots(n, 5, figsize=(15, 3.1 * n), squeeze=False)
    shown = normalize_signed(projections).permute(0, 2, 3, 1).clamp(0, 1).cpu().numpy()
    for i in range(n):
        label = int(labels[i])
        k = int(maps.prob[i].flatten().argmin())
        y0, x0 = int(maps.ys[k // len(maps.xs)]), int(maps.xs[k % len(maps.xs)])
        ax = axes[i]
        ax[0].imshow(pixels[i].permute(1, 2, 0).cpu().numpy())
        ax[0].add_patch(Rectangle((x0 - 0.5, y0 - 0.5), maps.patch, maps.patch, color="0.5", alpha=0.85))
        ax[0].set_title(f"(a) {class_names[label]}: p={float(maps.base_prob[i]):.2f}", fontsize=9)
        im = ax[1].imshow(maps.feature[i].cpu().numpy(), cmap="viridis", extent=extent)
        ax[1].set_title(f"(b) {layer} map {int(maps.channel[i])}: total activity", fontsize=9)
        fig.colorbar(im, ax=ax[1], fraction=0.046)
        ax[2].imshow(shown[i])
        ax[2].set_title(f"(c) projection of map {int(maps.channel[i])}", fontsize=9)
        im = ax[3].imshow(maps.prob[i].cpu().numpy(), cmap="jet", vmin=0, vmax=1, extent=extent)
        ax[3].set_title(f"(d) P({class_names[label]})", fontsize=9)
        fig.colorbar(im, ax=ax[3], fraction=0.046)
        arg = maps.argmax[i].cpu().numpy()
        present = sorted(set(arg.flatten().tolist()))
        ax[4].imshow(colours(arg % 20), extent=extent)
        ax[4].legend(handles=[Patch(color=colours(c % 20), label=class_names[c]) for c in present],
                     fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
        ax[4].set_title("(e) most probable class", fontsize=9)
        for a in ax:
            a.set_xlim(-0.5, w - 0.5)
            a.set_ylim(h - 0.5, -0.5)
            a.set_xticks([])
            a.set_yticks([])
    fig.suptitle(f"Occlusion sensitivity (Fig. 7): {maps.patch}x{maps.patch} grey square; maps at the square's centre")
    return save(fig, path, dpi=70)
