"""Layers of any model by name, and the forward hooks that read them (scoped to a ``with``).

A layer is a module, named by its qualified name in ``model.named_modules()``: ``"features.11"``
in torchvision's ``alexnet()`` is the ReLU after conv5, ``"layer3"`` in ``resnet18()`` its third
stage; the layer's activation is the module's output. ZFNet (:class:`~zfnet.models.ConvNet`) keeps
the paper's names as aliases of its blocks (``conv1`` is ``features.conv1``: conv, ReLU, pool,
norm; ``fc6`` is ``classifier.fc6``): the methods that read feature maps (the deconvnet, top-9,
receptive fields, occlusion, correspondence) read a block's rectified maps before pooling
(``features.conv1.relu``), as the paper shows them (:func:`resolve`); the invariance features read
the block's output (:func:`block`).

A module called more than once per forward (a ReLU shared by a ResNet block's two convs) has no
single activation, and a layer must be called exactly once: name its block instead.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle


class LayerError(ValueError):
    """A layer name that the model does not have, or whose module cannot be read as a layer."""


def blocks(model: nn.Module) -> dict[str, str]:
    """ZFNet's paper names -> the qualified names of their blocks (``{}`` for any other model)."""
    if not callable(getattr(model, "layer_names", None)):
        return {}
    qualified = {n.rsplit(".", 1)[-1]: n for n, _ in model.named_modules() if n}
    return {name: qualified[name] for name in model.layer_names()}


def block(model: nn.Module, name: str) -> str:
    """The qualified name of layer ``name``: a ZFNet paper name's block, or ``name`` itself."""
    named = blocks(model).get(name, name)
    if named not in dict(model.named_modules()) or not named:
        raise LayerError(f"{type(model).__name__} has no layer {name!r}; its layers: {', '.join(names(model))}")
    return named


def resolve(model: nn.Module, name: str) -> str:
    """The qualified name of the module whose output is layer ``name``'s feature maps: a ZFNet
    paper name's rectified maps (``conv5`` -> ``features.conv5.relu``), else ``name`` itself."""
    named = block(model, name)
    if name in blocks(model) and hasattr(model.get_submodule(named), "relu"):
        return f"{named}.relu"
    return named


def names(model: nn.Module) -> list[str]:
    """Every name a layer can have: the paper's (ZFNet), then the qualified module names."""
    return [*blocks(model), *(n for n, _ in model.named_modules() if n)]


def has_inplace(model: nn.Module) -> bool:
    """Whether a module of ``model`` writes its output over its input (``ReLU(inplace=True)``), so
    that an activation read by a hook is changed by the next module unless cloned."""
    return any(getattr(m, "inplace", False) for m in model.modules())


class _Stop(Exception):
    """Ends a forward once every tapped layer has been computed."""


class Tap:
    """Forward hooks on the ``layers`` of ``model`` for the forwards that :meth:`run` makes.

    ``record(name, output)`` is called with each layer's output as it is computed (``name`` as
    given); with ``stop``, the forward ends once every layer has been (nothing above them runs, and
    :meth:`run` returns None). Hooks are registered in ``__enter__`` and removed in ``__exit__``.
    Raises :class:`LayerError` for an unknown name, a layer the forward never calls, or one it
    calls more than once.
    """

    def __init__(self, model: nn.Module, layers: Sequence[str], record: Callable[[str, torch.Tensor], None],
                 stop: bool = True):
        self.model, self.record, self.stop = model, record, stop
        self.layers = {name: resolve(model, name) for name in layers}
        self._seen: set[str] = set()
        self._probing = False
        self._checked = False  # before the first forward, one image runs to the end: layers called twice or never
        self._handles: list[RemovableHandle] = []

    def __enter__(self) -> "Tap":
        for name, qualified in self.layers.items():
            self._handles.append(self.model.get_submodule(qualified).register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, name: str):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            if name in self._seen:
                raise LayerError(f"layer {self.layers[name]!r} is called more than once per forward (a shared "
                                 "module); name a module called once, such as its block")
            self._seen.add(name)
            if self._probing:
                return
            self.record(name, output)
            if self.stop and len(self._seen) == len(self.layers):
                raise _Stop

        return hook

    def run(self, images: torch.Tensor) -> torch.Tensor | None:
        """One forward of ``images``; the model's output, or None if it stopped at the layers."""
        if not self._checked:
            self._check(images[:1])
        self._seen = set()
        try:
            return self.model(images)
        except _Stop:
            return None

    def _check(self, image: torch.Tensor) -> None:
        """One whole forward of ``image`` that records nothing: every layer must be called, once."""
        self._seen, self._probing = set(), True
        try:
            with torch.no_grad():
                self.model(image)
        finally:
            self._probing = False
        missing = [self.layers[n] for n in self.layers if n not in self._seen]
        if missing:
            raise LayerError(f"layer {missing[0]!r} is not called by the model's forward")
        self._checked = True


class _Rule(torch.autograd.Function):
    """Value ``out``; in the backward, ``backward(grad)`` goes to ``x``: a module's backward replaced."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, out: torch.Tensor, backward: Callable[[torch.Tensor], torch.Tensor]):
        ctx.rule = backward
        return out.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return ctx.rule(grad), None, None


Rule = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]  # (module, its input, grad of its output) -> grad of its input


class BackwardRules:
    """While active, the backward of every module of ``model`` that is an instance of a key of
    ``rules`` is that rule, not the module's own: ``rule(module, input, grad_output) -> grad_input``.

    The hooks replace each such module's output by the same values with the rule as their
    backward; an in-place module (``ReLU(inplace=True)``) is handed a clone of its input, so that
    the input keeps its own history. Only ``nn.Module`` calls are seen, not functional ones.
    """

    def __init__(self, model: nn.Module, rules: dict[type, Rule]):
        self.model, self.rules = model, rules
        self._inputs: list[torch.Tensor] = []
        self._handles: list[RemovableHandle] = []

    def __enter__(self) -> "BackwardRules":
        for module in self.model.modules():
            rule = next((r for kind, r in self.rules.items() if isinstance(module, kind)), None)
            if rule is not None:
                self._handles.append(module.register_forward_pre_hook(self._keep_input))
                self._handles.append(module.register_forward_hook(self._replace(rule)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._inputs.clear()

    def _keep_input(self, module: nn.Module, inputs: tuple):
        self._inputs.append(inputs[0])
        return (inputs[0].clone(), *inputs[1:]) if getattr(module, "inplace", False) else None

    def _replace(self, rule: Rule):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
            x = self._inputs.pop()
            return _Rule.apply(x, output.detach(), lambda grad: rule(module, x, grad))

        return hook


def feature_maps(model: nn.Module, size: int) -> list[str]:
    """The layers with feature maps: modules called once per forward of a ``(1, 3, size, size)``
    image whose output is ``(1, C, h, w)`` (paper names first, for ZFNet)."""
    calls: dict[str, int] = {}
    spatial: set[str] = set()

    def hook(name: str):
        def record(module, inputs, output) -> None:
            calls[name] = calls.get(name, 0) + 1
            if isinstance(output, torch.Tensor) and output.dim() == 4:
                spatial.add(name)

        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n]
    try:
        with torch.no_grad():
            model(next(model.parameters()).new_zeros(1, 3, size, size))
    finally:
        for handle in handles:
            handle.remove()
    qualified = [n for n, _ in model.named_modules() if calls.get(n) == 1 and n in spatial]
    return [a for a in blocks(model) if resolve(model, a) in qualified] + qualified


def check_maps(model: nn.Module, layers: Sequence[str], size: int) -> None:
    """Raise :class:`LayerError` naming the valid ones (ZFNet's by their paper names) unless every
    name in ``layers`` is a layer with feature maps (:func:`feature_maps`)."""
    valid = feature_maps(model, size)
    for name in layers:
        if name in valid:
            continue
        what = (f"has no layer {name!r}" if name not in names(model) else
                f"layer {name!r} has no feature maps (an (N, C, h, w) output, called once per forward)")
        shown = [n for n in valid if n in blocks(model)] or valid  # ZFNet: its paper names
        raise LayerError(f"{type(model).__name__} {what}; its layers with feature maps: {', '.join(shown)}")


# the modules the deconvnet's explicit path inverts (:func:`zfnet.viz.deconvnet.invert`)
INVERTIBLE = (nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.LocalResponseNorm, nn.BatchNorm2d, nn.Dropout, nn.Identity,
              nn.Flatten, nn.Linear, nn.AvgPool2d, nn.AdaptiveAvgPool2d)


def _invertible(module: nn.Module) -> bool:
    """Whether the explicit path can invert ``module`` (in its current mode)."""
    if isinstance(module, nn.Conv2d):
        return module.padding_mode == "zeros" and not isinstance(module.padding, str)
    if isinstance(module, nn.BatchNorm2d):
        return not module.training and module.running_var is not None
    if isinstance(module, nn.Dropout):
        return not module.training
    return isinstance(module, INVERTIBLE)


def sequential_chain(model: nn.Module, layer: str, probe: torch.Tensor) -> list[str] | None:
    """The qualified names of the modules that compute ``layer`` from the input, in call order, if
    they run in sequence (each call takes the previous call's output, or a view of all of it) and
    each can be inverted explicitly; None otherwise (:class:`Deconvnet` then takes the autograd path).

    One forward of ``probe`` ``(1, 3, H, W)`` with a hook on every module. A container that
    finished before the layer must be an ``nn.Sequential`` (whose forward is its children in
    order): any other (a ResNet block) may add or concatenate what the hooks do not see. Raises
    :class:`~zfnet.viz.layers.LayerError` if the layer is not called exactly once.
    """
    target = resolve(model, layer)
    records: list[tuple[str, nn.Module, object, torch.Tensor]] = []

    def hook(name: str):
        def record(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            records.append((name, module, inputs[0] if inputs else None, output))

        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n]
    try:
        with torch.no_grad():
            model(probe)
    finally:
        for handle in handles:
            handle.remove()
    calls = sum(name == target for name, *_ in records)
    if calls != 1:
        raise LayerError(f"layer {target!r} is called {calls} times per forward; name a module called once")
    chain: list[str] = []
    previous: torch.Tensor = probe
    for name, module, x, y in records:
        if next(module.children(), None) is not None:  # a container, recorded after its children
            if name == target:
                return chain if _same(y, previous) else None
            if not isinstance(module, nn.Sequential):
                return None
            continue
        if not (_invertible(module) and _same(x, previous)):
            return None
        chain.append(name)
        previous = y
        if name == target:
            return chain
    return None


def _same(x: object, y: torch.Tensor) -> bool:
    """``x`` is ``y`` or a view of all of it (the same memory and number of elements)."""
    return isinstance(x, torch.Tensor) and x.data_ptr() == y.data_ptr() and x.numel() == y.numel()
