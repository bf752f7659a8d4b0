"""Correspondence analysis (Zeiler & Fergus 2014, Sec. 4.3, Fig. 8, Table 1).

Does the net implicitly locate the same object part in different images? Sets of 5 faces in the
canonical frontal pose (:func:`zfnet.data.synthetic.render_face`, whose part boxes are known) are
preprocessed exactly like the pipeline's images; in each image the same part (left eye, right eye,
nose) is masked with grey (the mean, 0 after mean subtraction), and, as the control, a random
region of the same size. With ``eps_i = x_i - x~_i`` (feature vector of the original minus that of
the masked image, at layer ``l``)::

    Delta_l = mean over pairs i < j of H(sign(eps_i), sign(eps_j)) / D

where ``H`` is the Hamming distance and ``D`` the vector length. docs/paper.md writes the sum over
pairs; the paper's values (0.07-0.11) are only reachable per pair and per element, so Delta here
is normalised by both (the sum over the 20 ordered pairs ``i != j`` is ``20 * Delta`` for 5 images).
Lower = more consistent changes = the part corresponds across images. Layers: ``conv5`` (its
post-ReLU maps before pooling, flattened: 6 x 6 positions per map at a 112 input, so the vector
keeps where a change happened) and ``fc7`` after ReLU (layer 7). Each set holds faces of one breed
(:data:`~zfnet.data.synthetic.FACES`, in turn), as the paper's sets hold dogs of one class: the
breeds differ only in the parts' shape, so a net that tells them apart must encode the parts.

Masks: the part's box (``left_eye`` is the eye on the image's left) grown by ``margin`` pixels on
every side and rounded outwards to whole pixels; the random control in each image is a rectangle
of the mean size of that image's three part masks at a uniformly random position inside the crop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from zfnet.data.images import map_box, resize_center_crop
from zfnet.data.synthetic import FACE_PARTS, FACES, render_face
from torch import nn

from zfnet.data.transforms import center_crop, normalize
from zfnet.io import write_text
from zfnet.viz.features import last_hidden, layer_features
from zfnet.viz.layers import resolve

MASKS = (*FACE_PARTS, "random")
# Table 1 of the paper: mask -> {layer: (mean, std)} (layer 5 and layer 7, dog faces, ImageNet model).
PAPER_TABLE1 = {
    "right_eye": {"layer5": (0.067, 0.007), "layer7": (0.069, 0.015)},
    "left_eye": {"layer5": (0.069, 0.007), "layer7": (0.068, 0.013)},
    "nose": {"layer5": (0.079, 0.017), "layer7": (0.069, 0.011)},
    "random": {"layer5": (0.107, 0.017), "layer7": (0.073, 0.014)},
}


@dataclass
class FaceSet:
    """One set of faces, preprocessed: ``images`` ``(n, 3, crop, crop)`` model input, ``masks``
    ``{mask: (n, crop, crop) bool}`` (True = masked) for each of :data:`MASKS`."""

    images: torch.Tensor
    masks: dict[str, torch.Tensor]


def _box_mask(box: tuple[float, float, float, float], margin: float, size: int) -> torch.Tensor:
    """``(size, size)`` bool, True on the pixels the box grown by ``margin`` touches."""
    x0, y0 = max(0, math.floor(box[0] - margin)), max(0, math.floor(box[1] - margin))
    x1, y1 = min(size, math.ceil(box[2] + margin)), min(size, math.ceil(box[3] + margin))
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[y0:y1, x0:x1] = True
    return mask


def face_set(
    seed: tuple[int, ...],
    count: int,
    mean: torch.Tensor,
    input_scale: float,
    input_size: int,
    side: tuple[int, int] = (128, 152),
    margin: float = 1.0,
    breed: str = FACES[0],
) -> FaceSet:
    """Draw ``count`` faces of ``breed`` (image ``k`` from the generator seeded by ``(*seed, k)``), preprocess them
    like the pipeline (smallest side to ``S = mean.shape[-1]``, centre crop, minus ``mean``, times
    ``input_scale``, centre ``input_size`` crop) and build their masks.

    ``side`` is the ``[min, max]`` side of the drawn images (as ``data.synthetic``).
    """
    size = mean.shape[-1]
    offset = (size - input_size) // 2
    images, masks = [], {m: [] for m in MASKS}
    for k in range(count):
        rng = np.random.default_rng([*seed, k])
        drawn = tuple(int(s) for s in rng.integers(side[0], side[1] + 1, 2))
        image, _, parts = render_face(rng, drawn, breed=breed)
        crop, how = resize_center_crop(image, size)
        images.append(torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1))))
        part_masks = []
        for name in FACE_PARTS:
            x0, y0, x1, y1 = map_box(parts[name], how)
            part_masks.append(_box_mask((x0 - offset, y0 - offset, x1 - offset, y1 - offset), margin, input_size))
            masks[name].append(part_masks[-1])
        h = round(float(np.mean([m.any(1).sum() for m in part_masks])))
        w = round(float(np.mean([m.any(0).sum() for m in part_masks])))
        y, x = (int(v) for v in rng.integers(0, [input_size - h + 1, input_size - w + 1]))
        masks["random"].append(_box_mask((x, y, x + w, y + h), 0.0, input_size))
    batch = center_crop(normalize(torch.stack(images), mean, input_scale), input_size)
    return FaceSet(batch, {m: torch.stack(v) for m, v in masks.items()})


def delta(eps: torch.Tensor) -> float:
    """Mean over pairs ``i < j`` of the Hamming distance between ``sign(eps_i)`` and ``sign(eps_j)``,
    divided by the vector length; ``eps`` is ``(n, D)``."""
    signs = eps.sign()
    n = len(signs)
    i, j = torch.triu_indices(n, n, 1)
    return float((signs[i] != signs[j]).float().mean())


@torch.no_grad()
def correspondence(
    model: nn.Module,
    mean: torch.Tensor,
    input_scale: float,
    input_size: int,
    sets: int = 10,
    per_set: int = 5,
    seed: int = 0,
    side: tuple[int, int] = (128, 152),
    margin: float = 1.0,
    layers: dict[str, str] | None = None,
) -> dict:
    """Table 1: Delta at layers 5 and 7 for each mask, over ``sets`` sets of ``per_set`` faces
    (set ``s`` of breed ``FACES[s % 3]``).

    ``layers``: ``{"layer5": name, "layer7": name}``, feature maps read as
    :func:`~zfnet.viz.layers.resolve` does (ZFNet's ``conv5``: post-ReLU, before pooling); default
    ``conv5`` and :func:`~zfnet.viz.features.last_hidden`.

    Returns ``{"deltas": {mask: {"layer5"|"layer7": [Delta per set]}}, "table": {mask: {layer:
    (mean, std)}}, "layers": {"layer5": "conv5", "layer7": <fc7 or the last hidden layer>},
    "first_set": FaceSet}``.
    """
    model.eval()
    layers = layers or {"layer5": "conv5", "layer7": last_hidden(model)}
    maps = {key: resolve(model, name) for key, name in layers.items()}
    deltas = {m: {k: [] for k in layers} for m in MASKS}
    first = None
    for s in range(sets):
        faces = face_set((seed, s), per_set, mean, input_scale, input_size, side, margin, FACES[s % len(FACES)])
        if first is None:
            first = faces
        masked = torch.cat([faces.images.masked_fill(faces.masks[m][:, None], 0.0) for m in MASKS])
        feats = layer_features(model, torch.cat([faces.images, masked]), list(maps.values()))
        for key, layer in maps.items():
            x = feats[layer]
            original, occluded = x[:per_set], x[per_set:].view(len(MASKS), per_set, -1)
            for m, occ in zip(MASKS, occluded):
                deltas[m][key].append(delta(original - occ))
    table = {m: {k: (float(np.mean(v)), float(np.std(v))) for k, v in d.items()} for m, d in deltas.items()}
    return {"deltas": deltas, "table": table, "layers": layers, "first_set": first}


def table1(result: dict, out_dir: str | Path) -> tuple[Path, Path]:
    """Write Table 1 (ours beside the paper's) as ``correspondence.csv`` and ``correspondence.md``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    layer7 = result["layers"]["layer7"]
    header = ["mask", "ours_layer5_mean", "ours_layer5_std", "ours_layer7_mean", "ours_layer7_std",
              "paper_layer5_mean", "paper_layer5_std", "paper_layer7_mean", "paper_layer7_std"]
    rows, md = [header], [
        f"| mask | ours layer 5 (conv5) | ours layer 7 ({layer7}) | paper layer 5 | paper layer 7 |",
        "|---|---|---|---|---|",
    ]
    for m in ("right_eye", "left_eye", "nose", "random"):
        ours, paper = result["table"][m], PAPER_TABLE1[m]
        rows.append([m, *ours["layer5"], *ours["layer7"], *paper["layer5"], *paper["layer7"]])
        cells = [f"{a:.3f} +- {b:.3f}" for a, b in (ours["layer5"], ours["layer7"], paper["layer5"], paper["layer7"])]
        md.append(f"| {m.replace('_', ' ')} | " + " | ".join(cells) + " |")
    csv_path, md_path = out_dir / "correspondence.csv", out_dir / "correspondence.md"
    write_text(csv_path, "\n".join(",".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in r) for r in rows) + "\n")
    write_text(md_path, "\n".join(md) + "\n")
    return csv_path, md_path


def correspondence_figure(faces: FaceSet, path: str | Path, pixels) -> Path:
    """Fig. 8: each face of one set (rows) as drawn and with each mask applied (columns).

    ``pixels`` maps ``(N, 3, h, w)`` model input to displayable ``[0, 1]`` images.
    """
    from zfnet.viz.grids import save_figure, tile

    columns = [faces.images] + [faces.images.masked_fill(faces.masks[m][:, None], 0.0) for m in MASKS]
    size = faces.images.shape[-1]
    tiles = torch.stack(columns, 1).flatten(0, 1)  # (n * (1 + masks), 3, h, w), row-major per face
    grid = tile(pixels(tiles), len(columns), pad=2)
    labels = [((2 + size) * k + 2 + size / 2, name.replace("_", " ")) for k, name in enumerate(("original", *MASKS))]
    return save_figure(grid, path, "Correspondence (Fig. 8): the same part masked in each face, and random regions",
                       col_labels=labels, scale=3.0)
