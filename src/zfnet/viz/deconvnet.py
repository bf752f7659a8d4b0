"""The deconvnet (Zeiler & Fergus 2014, Sec. 2.1, Fig. 1) on any model: project activations to pixel space.

To examine an activation of a layer (:mod:`zfnet.viz.layers`: a module's output), every other
activation of that layer is zeroed and the maps are passed down to the pixels. Two paths give
one result:

**Explicit** (nets whose modules up to the layer run in sequence: AlexNet, VGG, ZFNet). The
forward pass records the module calls in order (forward hooks), with the max-pooling
**switches** (where each pooling region's maximum was); the calls are then inverted in reverse:

- ``MaxPool2d``: **unpool**: each value goes back to its switch; where overlapping windows send two
  switches to one input position, their contributions add;
- ``ReLU``: **rectify**;
- ``Conv2d``: **filter** with the transposed filters (``conv_transpose2d``, same stride, padding,
  dilation and groups), no bias; ``Linear`` likewise with its transposed weights;
- ``LocalResponseNorm`` (our contrast normalisation): identity, the paper has no inverse for it;
- ``BatchNorm2d`` (eval mode) is an affine map per channel, ``x * g + b`` with ``g = weight /
  sqrt(running_var + eps)``: inverted like a filter, times ``g``, without the shift;
- ``Dropout``, ``Identity``: identity (eval mode); ``Flatten`` and tensor views: reshaped back;
  ``AvgPool2d``, ``AdaptiveAvgPool2d``: their transpose (they are linear).

There is no ReLU on the final pixel image. Only the window of each map that the chosen
activations reach is computed (for a single activation: its receptive field at that level), not
the whole maps.

**Autograd** (any other graph: residual adds, concatenations; ResNet, Inception-style). The same
rule as a backward pass: the input gradient of ``sum(activation * seed)``, the seed being the
chosen activations, with each ``ReLU`` module's backward replaced by ReLU of the incoming signal
and each ``LocalResponseNorm``'s by the identity; max-pooling's own backward already routes by
its switches. This is the explicit path's result whenever both apply (``tests/test_deconvnet.py``
checks both against each other and against Captum's ``NeuronDeconvolution``). The rule needs
every ReLU to be an ``nn.ReLU`` module (a functional ``F.relu`` is refused).

Everything is batched: images and channels fold into one batch of reconstructions, processed in
chunks of at most ``max_batch``; there is no Python loop per neuron. Use the model in eval mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair
from torch.utils.hooks import RemovableHandle

from zfnet.viz.layers import BackwardRules, Tap, sequential_chain
from zfnet.viz.receptive import ReceptiveField, crop


@dataclass
class Call:
    """One module call of the forward: the module, its input and output shapes, and for a max-pool
    its switches ``(B, C, h, w)`` (flat indices into each input map's ``H * W``)."""

    module: nn.Module
    input_shape: torch.Size
    output_shape: torch.Size
    switches: torch.Tensor | None = None


def _span(top: torch.Tensor, length: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``top[i] + 0 .. length - 1`` of each item ``(M, length)``, clamped into ``0 .. size - 1``,
    and whether each lies inside the map."""
    rows = top[:, None] + torch.arange(length, device=top.device)
    return rows.clamp(0, size - 1), (rows >= 0) & (rows < size)


def paste(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Windows ``x`` ``(M, C, h, w)`` at rows ``top`` and columns ``left`` ``(M,)`` of zero maps
    ``(M, C, H, W)``; the parts outside the maps are dropped."""
    m, c, h, w = x.shape
    if (h, w) == tuple(size) and not top.any() and not left.any():
        return x
    rows, in_rows = _span(top, h, size[0])
    cols, in_cols = _span(left, w, size[1])
    index = (rows[:, :, None] * size[1] + cols[:, None, :]).flatten(1)  # (M, h*w)
    inside = (in_rows[:, :, None] & in_cols[:, None, :]).flatten(1)
    out = x.new_zeros(m, c, size[0] * size[1])
    out.scatter_add_(2, index[:, None].expand(m, c, -1), x.flatten(2) * inside[:, None])
    return out.view(m, c, *size)


def _grown(top: torch.Tensor, length: int, module: nn.Module, axis: int) -> tuple[torch.Tensor, int]:
    """The input window ``(top, length)`` of a conv or pool whose output window along ``axis``
    (0: rows, 1: columns) starts at ``top`` and has ``length`` positions."""
    k, s, p, d = (_pair(getattr(module, a))[axis] for a in ("kernel_size", "stride", "padding", "dilation"))
    return top * s - p, (length - 1) * s + (k - 1) * d + 1


def unpool(x: torch.Tensor, switches: torch.Tensor, image: torch.Tensor, top: torch.Tensor, left: torch.Tensor,
           pool: nn.MaxPool2d, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Put each value of the window ``x`` ``(M, C, h, w)`` of the pooled maps back at its switch;
    values sharing a location add.

    Args:
        x: each item's window of the pooled maps, at rows ``top`` and columns ``left`` ``(M,)``.
        switches: ``(B, C, Hp, Wp)`` int64 flat indices into the pooling input's ``H * W``
            (``max_pool2d(..., return_indices=True)``) of the recorded batch; ``image`` ``(M,)`` indexes it.
        pool: the max-pool (its geometry); size: ``(H, W)``, the pooling input size.

    Returns the window of the pooling input that the pooled window's switches fall in, and its
    ``top``, ``left``.
    """
    m, c, h, w = x.shape
    rows, in_rows = _span(top, h, switches.shape[-2])
    cols, in_cols = _span(left, w, switches.shape[-1])
    flat = (rows[:, :, None] * switches.shape[-1] + cols[:, None, :]).flatten(1)  # (M, h*w)
    inside = (in_rows[:, :, None] & in_cols[:, None, :]).flatten(1)[:, None]
    switch = switches.flatten(2)[image[:, None, None], torch.arange(c, device=x.device)[None, :, None], flat[:, None, :]]
    (top, height), (left, width) = _grown(top, h, pool, 0), _grown(left, w, pool, 1)
    local = (switch // size[1] - top[:, None, None]) * width + (switch % size[1] - left[:, None, None])
    out = x.new_zeros(m, c, height * width)
    out.scatter_add_(2, local * inside, x.flatten(2) * inside)
    return out.view(m, c, height, width), top, left


def transposed_conv(x: torch.Tensor, weight: torch.Tensor, stride: tuple[int, int], padding: tuple[int, int],
                    dilation: tuple[int, int], groups: int, size: tuple[int, int]) -> torch.Tensor:
    """``x`` convolved with the transposed filters ``weight`` (no bias), back to the input ``size`` ``(H, W)``."""
    kernel = weight.shape[-2:]
    natural = [(x.shape[-2 + i] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (kernel[i] - 1) + 1 for i in range(2)]
    output_padding = tuple(size[i] - natural[i] for i in range(2))
    x = x.contiguous(memory_format=torch.channels_last)  # the fast layout for transposed conv on CPU
    return F.conv_transpose2d(x, weight, None, stride, padding, output_padding, groups, dilation)


def _filter(x: torch.Tensor, conv: nn.Conv2d, top: torch.Tensor, left: torch.Tensor,
            size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The window ``x`` convolved with the transposed filters of ``conv`` (no bias): the input window
    it reaches, zero outside the input maps ``size``, and its ``top``, ``left``."""
    (top, height), (left, width) = _grown(top, x.shape[-2], conv, 0), _grown(left, x.shape[-1], conv, 1)
    y = transposed_conv(x, conv.weight, conv.stride, (0, 0), conv.dilation, conv.groups, (height, width))
    _, in_rows = _span(top, height, size[0])
    _, in_cols = _span(left, width, size[1])
    return y * (in_rows[:, None, :, None] & in_cols[:, None, None, :]), top, left


def _transpose(module: nn.Module, x: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """The transpose of a linear ``module`` (an average pool) applied to ``x``: its input gradient."""
    with torch.enable_grad():
        z = x.new_zeros(len(x), *shape[1:], requires_grad=True)
        (grad,) = torch.autograd.grad(module(z), z, x)
    return grad


ELEMENTWISE = (nn.ReLU, nn.LocalResponseNorm, nn.Dropout, nn.Identity)  # inverted on a window of any shape
LOCAL = (nn.Conv2d, nn.MaxPool2d, nn.BatchNorm2d, *ELEMENTWISE)  # inverted on a window of (N, C, h, w) maps


def whole(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Windows ``x`` as the whole ``(M, *shape[1:])`` tensor (pasted into zero maps, or reshaped)."""
    if x.dim() == 4 and len(shape) == 4:
        x = paste(x, top, left, shape[-2:])
    return x.reshape(len(x), *shape[1:])


def invert(call: Call, x: torch.Tensor, image: torch.Tensor, top: torch.Tensor,
           left: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pass ``x`` down through one module call (the explicit path's rules, module docstring).

    ``x`` is each item's window of the call's output at rows ``top``, columns ``left`` ``(M,)``
    (the whole output where they are 0 and it has its size); ``image`` ``(M,)`` indexes the
    recorded batch (the switches). Returns the window of the call's input that ``x`` reaches.
    """
    module, shape = call.module, call.input_shape
    if not (isinstance(module, ELEMENTWISE) or (x.dim() == 4 and isinstance(module, LOCAL))):
        x, top, left = whole(x, top, left, call.output_shape), top * 0, left * 0
    if isinstance(module, (nn.MaxPool2d, nn.Conv2d)):
        grown = unpool(x, call.switches, image, top, left, module, shape[-2:]) if isinstance(module, nn.MaxPool2d) \
            else _filter(x, module, top, left, shape[-2:])
        x, top, left = grown
        if x.shape[-2] < shape[-2] and x.shape[-1] < shape[-1]:
            return grown
        return paste(x, top, left, shape[-2:]), top * 0, left * 0  # a window as large as the maps: the maps
    if isinstance(module, nn.ReLU):
        return F.relu(x), top, left
    if isinstance(module, nn.BatchNorm2d):
        gain = (module.running_var + module.eps).rsqrt()
        return x * (gain if module.weight is None else module.weight * gain)[:, None, None], top, left
    if isinstance(module, nn.Linear):
        return x @ module.weight, top, left
    if isinstance(module, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
        return _transpose(module, x, shape), top, left
    if isinstance(module, nn.Flatten):
        return x.reshape(len(x), *shape[1:]), top, left
    return x, top, left  # LocalResponseNorm, Dropout, Identity


class Recorder:
    """Forward hooks on the modules of a sequential chain that record each :class:`Call` of the last
    forward in order (with a max-pool's switches); registered in ``__enter__``, removed with the
    record in ``__exit__``."""

    def __init__(self, model: nn.Module, chain: Sequence[str]):
        self.model, self.chain = model, list(chain)
        self.calls: list[Call] = []
        self._handles: list[RemovableHandle] = []

    def __enter__(self) -> "Recorder":
        self._handles.append(self.model.register_forward_pre_hook(lambda module, inputs: self.calls.clear()))
        for name in dict.fromkeys(self.chain):
            self._handles.append(self.model.get_submodule(name).register_forward_hook(self._record))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.calls.clear()

    def _record(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        x = inputs[0]
        switches = None
        if isinstance(module, nn.MaxPool2d):
            _, switches = F.max_pool2d(x, module.kernel_size, module.stride, module.padding, module.dilation,
                                       ceil_mode=module.ceil_mode, return_indices=True)
        self.calls.append(Call(module, x.shape, output.shape, switches))

    def descend(self, x: torch.Tensor, top: torch.Tensor, left: torch.Tensor,
                image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Invert the last forward's calls in reverse: ``x`` each item's window of the chain's
        output at ``top``, ``left`` (:func:`invert`) -> the window of pixel space it reaches, and
        its ``top``, ``left``.

        Only the window that the chosen activations reach is computed at each level (for a single
        activation, its receptive field), not the whole maps."""
        for call in reversed(self.calls[: len(self.chain)]):
            x, top, left = invert(call, x, image, top, left)
        return x, top, left


def _rectified(module: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    return F.relu(grad)


def _passed(module: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    return grad


DECONVNET_RULES = {nn.ReLU: _rectified, nn.LocalResponseNorm: _passed}  # the autograd path's backward rules


def _check_rules(output: torch.Tensor) -> None:
    """Refuse a graph with a ReLU that no ``nn.ReLU`` module computed (its backward would be the gradient's)."""
    seen, todo = set(), [output.grad_fn]
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if node.name().startswith(("ReluBackward", "ThresholdBackward")):
            raise ValueError("the model applies a ReLU outside an nn.ReLU module (functional F.relu): the "
                             "deconvnet rule cannot replace its backward")
        todo.extend(next_node for next_node, _ in node.next_functions)


class Deconvnet:
    """The deconvnet of one model (module docstring): :meth:`project` and :meth:`project_at`.

    Each call registers its hooks and removes them, with everything they recorded, before it returns.

    Args:
        model: any ``nn.Module`` taking ``(N, 3, H, W)`` images, in eval mode.
        max_batch: most reconstructions (and images) processed at once; bounds memory, not results.
        path: ``"auto"`` (explicit where the layer's modules run in sequence, else autograd),
            ``"explicit"`` or ``"autograd"``.
    """

    def __init__(self, model: nn.Module, max_batch: int = 256, path: str = "auto"):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if path not in ("auto", "explicit", "autograd"):
            raise ValueError(f"path must be 'auto', 'explicit' or 'autograd', got {path!r}")
        self.model, self.max_batch, self.path = model, max_batch, path
        self._chains: dict[tuple[str, tuple[int, ...]], list[str] | None] = {}

    def chain(self, layer: str, image_shape: Sequence[int]) -> list[str] | None:
        """The explicit path's module chain for ``layer`` on ``(3, H, W)`` images, or None for the autograd path."""
        key = (layer, tuple(image_shape))
        if key not in self._chains:
            weight = next(self.model.parameters())
            probe = weight.new_zeros(1, *image_shape)
            self._chains[key] = None if self.path == "autograd" else sequential_chain(self.model, layer, probe)
            if self.path == "explicit" and self._chains[key] is None:
                raise ValueError(f"layer {layer!r} is not computed by a sequence of invertible modules; "
                                 "use path='autograd' (or 'auto')")
        return self._chains[key]

    @torch.no_grad()
    def project(self, images: torch.Tensor, layer: str, channels: Sequence[int], mode: str = "max") -> torch.Tensor:
        """Project feature maps of ``layer`` down to pixel space, for every image and channel.

        Args:
            images: ``(N, 3, H, W)`` model input.
            layer: a layer name (:mod:`zfnet.viz.layers`: ``features.11``; ``conv5`` for ZFNet).
            channels: the K feature maps (or units of a ``(N, D)`` layer) to project.
            mode: ``"max"`` keeps only each map's strongest activation in each image;
                ``"map"`` keeps the whole feature map.

        Returns ``(N, K, 3, H, W)`` raw pixel-space reconstructions (no display scaling).
        """
        if mode not in ("max", "map"):
            raise ValueError(f"mode must be 'max' or 'map', got {mode!r}")
        n, k = images.shape[0], len(channels)
        image = torch.arange(n, device=images.device).repeat_interleave(k)
        channel = torch.as_tensor(list(channels), dtype=torch.long, device=images.device).repeat(n)
        recon = self._project(images, layer, image, channel, None, mode == "max", None)
        return recon.view(n, k, *images.shape[1:])

    @torch.no_grad()
    def project_at(
        self,
        images: torch.Tensor,
        layer: str,
        channels: torch.Tensor | Sequence[int],
        ys: torch.Tensor | Sequence[int],
        xs: torch.Tensor | Sequence[int],
        image: torch.Tensor | Sequence[int] | None = None,
        field: ReceptiveField | None = None,
    ) -> torch.Tensor:
        """Project one given activation per item: item ``i`` is ``(images[image[i]], channels[i], ys[i], xs[i])``.

        Args:
            images: ``(B, 3, H, W)`` model input.
            layer: a layer name with ``(N, C, h, w)`` feature maps.
            channels, ys, xs: ``(M,)`` feature map and position in it.
            image: ``(M,)`` the image of each item (default: item ``i`` is ``images[i]``, ``M = B``);
                items of one image share its forward pass.
            field: the layer's :func:`~zfnet.viz.receptive.receptive_field`: return each item's
                receptive-field patch ``(M, 3, s, s)`` (zero outside the image), as
                :func:`~zfnet.viz.receptive.crop` cuts it, without making the whole images.

        Returns ``(M, 3, H, W)`` raw pixel-space reconstructions, or their ``(M, 3, s, s)`` patches.
        """
        channel, ys, xs = (torch.as_tensor(v, dtype=torch.long, device=images.device).reshape(-1) for v in (channels, ys, xs))
        image = torch.arange(len(images)) if image is None else image
        image = torch.as_tensor(image, dtype=torch.long, device=images.device).reshape(-1)
        if not len(channel) == len(ys) == len(xs) == len(image):
            raise ValueError("project_at needs one channel, y and x per item")
        return self._project(images, layer, image, channel, (ys, xs), True, field)

    def _project(self, images: torch.Tensor, layer: str, image: torch.Tensor, channel: torch.Tensor,
                 position: tuple[torch.Tensor, torch.Tensor] | None, single: bool,
                 field: ReceptiveField | None) -> torch.Tensor:
        """Reconstructions of items ``(image[i], channel[i])``, chunked by ``max_batch``; ``single``
        keeps one activation per item: at ``position`` if given, else the map's argmax. ``(M, 3,
        H, W)``, or with ``field`` each item's receptive-field patch ``(M, 3, s, s)``."""
        chain = self.chain(layer, images.shape[1:])
        act: dict[str, torch.Tensor] = {}
        tap = Tap(self.model, [layer], act.__setitem__)
        out = []
        with Recorder(self.model, chain or []) as recorder, \
                BackwardRules(self.model, DECONVNET_RULES if chain is None else {}), tap:
            for start in range(0, len(image), self.max_batch):
                part = slice(start, start + self.max_batch)
                used, item_image = image[part].unique(return_inverse=True)
                pos = None if position is None else (position[0][part], position[1][part])
                if chain is None:
                    recon = _autograd(tap, images[used], act, layer, item_image, channel[part], pos, single)
                    out.append(recon if field is None else crop(recon, field, *pos))
                    continue
                tap.run(images[used])
                recon, top, left = recorder.descend(*_seed(act[layer], item_image, channel[part], pos, single),
                                                    item_image)
                if field is not None and recon.shape[-1] == field.size and bool(
                        (torch.stack([top, left]) == field.offset + torch.stack(pos) * field.stride).all()):
                    out.append(recon)  # the window a single activation reaches is its receptive field
                    continue
                recon = whole(recon, top, left, images.shape)
                out.append(recon if field is None else crop(recon, field, *pos))
        return torch.cat(out)


def _autograd(tap: Tap, images: torch.Tensor, act: dict, layer: str, item_image: torch.Tensor,
              channel: torch.Tensor, pos, single: bool) -> torch.Tensor:
    """The autograd path for one chunk: one forward of the chunk's images, then one backward per
    round (a round holds at most one item per image). Returns ``(m, 3, H, W)``."""
    x = images.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        tap.run(x)
    a = act[layer]
    _check_rules(a)
    seed = whole(*_seed(a.detach(), item_image, channel, pos, single), a.shape)
    order = item_image.argsort(stable=True)
    ranked = item_image[order]
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order), device=order.device) - torch.searchsorted(ranked, ranked)
    out = x.new_empty(len(item_image), *x.shape[1:])
    rounds = int(rank.max()) + 1
    for r in range(rounds):
        sel = rank == r
        grad_out = torch.zeros_like(a)
        grad_out[item_image[sel]] = seed[sel]
        (grad,) = torch.autograd.grad(a, x, grad_out, retain_graph=r < rounds - 1)
        out[sel] = grad[item_image[sel]]
    return out


def _seed(act: torch.Tensor, image: torch.Tensor, channel: torch.Tensor, pos: tuple[torch.Tensor, torch.Tensor] | None,
          single: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The layer's activations with all but the chosen ones zeroed, as windows (:func:`invert`).

    ``act`` ``(n, C, h, w)`` (or ``(n, D)``); ``image``, ``channel`` ``(M,)``; ``pos`` ``(ys, xs)``
    ``(M,)`` each, or None (``single``: the map's strongest). Returns ``(seed, top, left)``: with
    ``single`` on ``(n, C, h, w)`` maps, ``(M, C, 1, 1)`` windows at the activation; else the whole
    ``(M, C, h, w)`` (or ``(M, D)``) maps at 0, 0.
    """
    m = len(image)
    chosen = act[image, channel].reshape(m, -1)  # (M, h*w), or (M, 1) for an (n, D) layer
    zeros = torch.zeros(m, dtype=torch.long, device=act.device)
    flat = chosen.argmax(1) if pos is None else pos[0] * act.shape[-1] + pos[1]
    if single and act.dim() == 4:
        seed = act.new_zeros(m, act.shape[1], 1, 1)
        seed[torch.arange(m, device=act.device), channel, 0, 0] = chosen.gather(1, flat[:, None])[:, 0]
        return seed, flat // act.shape[-1], flat % act.shape[-1]
    if single:
        chosen = torch.zeros_like(chosen).scatter_(1, flat[:, None], chosen.gather(1, flat[:, None]))
    seed = act.new_zeros(m, act.shape[1], chosen.shape[1])
    seed[torch.arange(m, device=act.device), channel] = chosen
    return seed.view(m, *act.shape[1:]), zeros, zeros
