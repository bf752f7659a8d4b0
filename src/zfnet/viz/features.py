"""Feature vectors of named layers: what the invariance and correspondence analyses compare.

Any model's layers by name (:mod:`zfnet.viz.layers`). For ZFNet's paper names a layer's feature
vector is its block's output, flattened: for ``conv1``..``conv5`` the output after pooling and
contrast normalisation, for ``fc6``/``fc7`` the output after ReLU (dropout is the identity in eval
mode). Hooks live only inside :class:`LayerOutputs`' ``with`` block.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from zfnet.viz.layers import LayerError, Tap, block, blocks, has_inplace


class LayerOutputs:
    """Context manager recording the outputs of ``layers`` of ``model`` on every :meth:`run` inside it.

    ``outputs[name]`` is the last forward's ``(N, ...)`` output of layer ``name`` (:func:`~zfnet.viz.layers.block`:
    a ZFNet block's output), or of its child ``child`` if given (``"relu"``: a ZFNet conv layer's
    post-ReLU maps, before pooling). Outputs are cloned where a later in-place module would change them.
    """

    def __init__(self, model: nn.Module, layers: Sequence[str], child: str | None = None):
        self.model = model
        self.outputs: dict[str, torch.Tensor] = {}
        qualified = {name: block(model, name) + (f".{child}" if child else "") for name in layers}
        self._names = {q: name for name, q in qualified.items()}
        self._clone = has_inplace(model)
        self._tap = Tap(model, list(qualified.values()), self._record, stop=False)

    def __enter__(self) -> "LayerOutputs":
        self._tap.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._tap.__exit__(*exc)

    def run(self, images: torch.Tensor) -> torch.Tensor:
        """One forward of ``images``; returns the model's output."""
        return self._tap.run(images)

    def _record(self, qualified: str, output: torch.Tensor) -> None:
        self.outputs[self._names[qualified]] = output.clone() if self._clone else output


def last_hidden(model: nn.Module) -> str:
    """The paper's "layer 7" of ZFNet: ``fc7`` if the model has it, else its last hidden fc layer, else its last conv layer."""
    names = list(blocks(model))
    found = next((n for n in ("fc7", "fc6", *reversed(names)) if n in names and n != "fc8"), None)
    if found is None:
        raise LayerError(f"{type(model).__name__} has no paper layers: name its layers 1 and 7")
    return found


@torch.no_grad()
def layer_features(model: nn.Module, images: torch.Tensor, layers: Sequence[str], max_batch: int = 256,
                   child: str | None = None) -> dict[str, torch.Tensor]:
    """Flattened feature vectors of ``layers`` and the softmax output for ``(N, 3, H, W)`` model input.

    ``child`` as in :class:`LayerOutputs` (``"relu"``: post-ReLU, before pooling). Returns
    ``{layer: (N, D_layer)}`` plus ``"prob": (N, num_classes)``; forwards in chunks of ``max_batch``.
    """
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in [*layers, "prob"]}
    with LayerOutputs(model, layers, child) as rec:
        for chunk in images.split(max_batch):
            parts["prob"].append(rec.run(chunk).softmax(1))
            for name in layers:
                parts[name].append(rec.outputs[name].flatten(1))
    return {name: torch.cat(p) for name, p in parts.items()}
