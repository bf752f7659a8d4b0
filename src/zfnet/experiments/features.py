"""The frozen trained model as a feature extractor (docs/paper.md Tables 4-7): one function for the
transfer experiments, the per-layer probes and the from-scratch nets' scores.

The features of a layer are its block's output, flattened, as the analyses see them
(:func:`zfnet.viz.features.layer_features`, the one hook-based extractor of the package): for
``conv1``..``conv5`` after pooling and contrast normalisation, for ``fc6``/``fc7`` after ReLU
(dropout is the identity in eval mode), for ``fc8`` the logits. This module adds what the
experiments need around it: uint8 images prepared as the model's input (its own ``input_size``
crop and ``input_scale``, so they can never disagree with how it was trained), batches moved to the
device and back.
"""

from __future__ import annotations

from typing import Sequence

import torch

from zfnet.data.transforms import center_crop, normalize
from zfnet.models import ConvNet
from zfnet.viz.features import layer_features


def model_input(images: torch.Tensor, mean: torch.Tensor, input_scale: float, crop: int) -> torch.Tensor:
    """uint8 ``(B, 3, S, S)`` -> the model's input ``(B, 3, crop, crop)``: the centre ``crop``, minus
    the per-pixel ``mean`` ``(3, S, S)`` (0..255 units), times ``input_scale``."""
    return normalize(center_crop(images, crop), center_crop(mean, crop), input_scale)


@torch.no_grad()
def features(model: ConvNet, images: torch.Tensor, mean: torch.Tensor, layers: Sequence[str], batch_size: int = 256,
             device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The flattened outputs of ``layers`` for the centre crop of each image.

    Args:
        model: run in eval mode on ``device``; fed :func:`model_input` at its ``input_size`` and ``input_scale``.
        images: uint8 ``(N, 3, S, S)``; mean: the per-pixel mean it was trained with, ``(3, S, S)`` in 0..255 units.
        layers: names such as ``conv1`` .. ``conv5``, ``fc7``, ``fc8``.
        batch_size: images per forward pass.

    Returns ``{layer: float32 (N, D)}`` on the CPU (``D = C * H * W`` for a conv layer).
    """
    model.eval().to(device)
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    for batch in images.split(batch_size):
        out = layer_features(model, model_input(batch, mean, model.input_scale, model.input_size).to(device), layers,
                             batch_size)
        for name in layers:
            parts[name].append(out[name].float().cpu())
    return {name: torch.cat(p) for name, p in parts.items()}


def logits(model: ConvNet, images: torch.Tensor, mean: torch.Tensor, batch_size: int = 256,
           device: str | torch.device = "cpu") -> torch.Tensor:
    """The model's own scores, ``fc8``'s output ``(N, num_classes)``, for the centre crops (:func:`features`)."""
    return features(model, images, mean, ["fc8"], batch_size, device)["fc8"]
