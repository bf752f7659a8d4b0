"""Feature vectors of named layers: what the invariance and correspondence analyses compare.

A layer's feature vector is its block's output, flattened: for ``conv1``..``conv5`` the output after
pooling and contrast normalisation, for ``fc6``/``fc7`` the output after ReLU (dropout is the
identity in eval mode). Hooks live only inside :class:`LayerOutputs`' ``with`` block.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch.utils.hooks import RemovableHandle

from zfnet.models import ConvNet


class LayerOutputs:
    """Context manager recording the outputs of ``layers`` of ``model`` on every forward inside it.

    ``outputs[name]`` is the last forward's ``(N, ...)`` output of block ``name``, or of its child
    ``child`` if given (``"relu"``: a conv layer's post-ReLU maps, before pooling).
    """

    def __init__(self, model: ConvNet, layers: Sequence[str], child: str | None = None):
        self.model = model
        self.layers = list(layers)
        self.child = child
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles: list[RemovableHandle] = []

    def __enter__(self) -> "LayerOutputs":
        for name in self.layers:
            module = self.model.layer(name)
            module = getattr(module, self.child) if self.child else module
            self._handles.append(module.register_forward_hook(self._record(name)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _record(self, name: str):
        def hook(module, inputs, output: torch.Tensor) -> None:
            self.outputs[name] = output

        return hook


def last_hidden(model: ConvNet) -> str:
    """The paper's "layer 7": ``fc7`` if the model has it, else its last hidden fc layer, else its last conv layer."""
    names = model.layer_names()
    return next(n for n in ("fc7", "fc6", *reversed(names)) if n in names and n != "fc8")


@torch.no_grad()
def layer_features(model: ConvNet, images: torch.Tensor, layers: Sequence[str], max_batch: int = 256,
                   child: str | None = None) -> dict[str, torch.Tensor]:
    """Flattened feature vectors of ``layers`` and the softmax output for ``(N, 3, H, W)`` model input.

    ``child`` as in :class:`LayerOutputs` (``"relu"``: post-ReLU, before pooling). Returns
    ``{layer: (N, D_layer)}`` plus ``"prob": (N, num_classes)``; forwards in chunks of ``max_batch``.
    """
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in [*layers, "prob"]}
    with LayerOutputs(model, layers, child) as rec:
        for chunk in images.split(max_batch):
            parts["prob"].append(model(chunk).softmax(1))
            for name in layers:
                parts[name].append(rec.outputs[name].flatten(1))
    return {name: torch.cat(p) for name, p in parts.items()}
