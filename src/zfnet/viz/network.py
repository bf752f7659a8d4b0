"""The model a command runs on: a zfnet checkpoint, or your own model and its weights file.

``--model torchvision:alexnet`` builds any ``torchvision.models`` architecture with ``weights=None``
(nothing is ever downloaded); ``--model package.module:factory`` calls ``factory()`` of an
importable module for your own class. ``--weights FILE`` is its state dict as ``torch.save(
model.state_dict(), FILE)`` wrote it (or a dict holding it under ``"model"`` or
``"state_dict"``), loaded with ``weights_only=True`` after its CRC check. ``--input-size``,
``--mean``, ``--std`` (and ``--bgr``) say how it sees images (:class:`~zfnet.models.inputs.InputSpec`;
torchvision's ImageNet ``Normalize`` by default). The options themselves are :mod:`zfnet.cli.model`'s.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from zfnet.models.inputs import InputSpec

DEFAULT_CHECKPOINT = "models/model.pt"


@dataclass(eq=False)
class Network:
    """A model with what the commands need beside it.

    Attributes:
        model: the ``nn.Module``, in eval mode.
        inputs: how it sees images.
        class_names: a name per output class (``"0"``, ``"1"``, ... where the file has none).
        name: what messages call it (the checkpoint file, or the ``--model`` spec).
        checkpoint: the zfnet checkpoint it came from, if any.
    """

    model: nn.Module
    inputs: InputSpec
    class_names: list[str]
    name: str
    checkpoint: object = None

    @classmethod
    def of(cls, model: nn.Module, inputs: InputSpec, name: str, device: str | torch.device = "cpu") -> "Network":
        """``model`` in eval mode on ``device``; its classes counted by one forward of a blank image."""
        model = model.eval().to(device)
        with torch.no_grad():
            out = model(torch.zeros(1, 3, inputs.size, inputs.size, device=device))
        return cls(model, inputs, [str(c) for c in range(out.shape[-1])], name)


def from_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Network:
    """A zfnet checkpoint's model (:class:`~zfnet.train.checkpoint.Checkpoint`) on ``device``."""
    from zfnet.train.checkpoint import Checkpoint

    ckpt = Checkpoint.load(path, map_location=device)
    return Network(ckpt.build().to(device), ckpt.inputs, list(ckpt.class_names), str(path), ckpt)


def build_model(spec: str) -> nn.Module:
    """``torchvision:NAME`` (random weights) or ``package.module:factory``: the model, untrained.
    Raises ``ValueError`` saying what is wrong with ``spec``."""
    where, sep, name = spec.partition(":")
    if not sep or not where or not name:
        raise ValueError(f"expected torchvision:NAME or package.module:factory, got {spec!r}")
    if where == "torchvision":
        import torchvision

        try:
            return torchvision.models.get_model(name, weights=None)
        except ValueError:
            raise ValueError(f"torchvision has no model {name!r} (e.g. alexnet, vgg11, resnet18)") from None
    try:
        factory = getattr(importlib.import_module(where), name)
    except ImportError as exc:
        raise ValueError(f"cannot import {where!r} ({exc})") from None
    except AttributeError:
        raise ValueError(f"module {where!r} has no {name!r}") from None
    model = factory()
    if not isinstance(model, nn.Module):
        raise ValueError(f"{spec}() returned a {type(model).__name__}, not an nn.Module")
    return model


def first_mismatch(expected: dict[str, torch.Tensor], given: dict) -> str | None:
    """Why the state dict ``given`` does not fit a model whose own is ``expected``, naming the first
    key that does not (in the model's order, then the file's), or None if it fits."""
    for key, value in expected.items():
        if key not in given:
            return f"missing key {key!r}"
        if not isinstance(given[key], torch.Tensor) or given[key].shape != value.shape:
            shape = tuple(given[key].shape) if isinstance(given[key], torch.Tensor) else type(given[key]).__name__
            return f"key {key!r} is {shape} in the file, the model's is {tuple(value.shape)}"
    extra = next((key for key in given if key not in expected), None)
    return None if extra is None else f"unexpected key {extra!r}"


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load the state dict in ``path`` into ``model`` (``weights_only=True``, CRCs checked).
    Raises ``ValueError`` naming the file and the first key that does not fit."""
    from zfnet.train.checkpoint import CheckpointError, check_crcs

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such weights file")
    try:
        check_crcs(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except CheckpointError as exc:
        raise ValueError(str(exc)) from None
    except Exception as exc:  # pickle refusing a global, not a torch file at all
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{path}: refused to load as a state dict (weights_only=True): {first}") from None
    if isinstance(state, dict):
        state = next((state[k] for k in ("model", "state_dict") if isinstance(state.get(k), dict)), state)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: holds a {type(state).__name__}, not a state dict")
    problem = first_mismatch(model.state_dict(), state)
    if problem:
        raise ValueError(f"{path} does not fit the model: {problem}")
    model.load_state_dict(state)
