"""The deconvnet (Zeiler & Fergus 2014, Sec. 2.1, Fig. 1): project activations back to pixel space.

A probe attached to a trained :class:`~zfnet.models.ConvNet`. The forward pass records, per conv
block, the conv input size and the max-pooling **switches** (the location of each pooling
region's maximum). To examine an activation of layer ``l`` (the post-ReLU output of block ``l``),
every other activation of that layer is zeroed and the maps are passed down; at each layer in turn:

1. **unpool**: each value goes back to its switch location; where overlapping 3x3/2 windows send
   two switches to one input position, their contributions add (as autograd's max-pool backward);
2. **rectify**: ReLU;
3. **filter**: convolve with the transposed filters of the same layer (``conv_transpose2d`` with
   the layer's stride and padding), no bias.

Contrast normalisation is passed through as identity (the paper has no inverse step for it), and
there is no ReLU on the final pixel image. The starting layer begins at step 3 (its activation is
post-ReLU and, being post-ReLU, pre-pool). For a conv/ReLU/max-pool net the result equals the
gradient of the activation with ReLU applied to the backward signal at each ReLU, times the
activation value (``tests/test_deconvnet.py`` checks exactly that against Captum's
``Deconvolution``).

Everything is batched: images and channels are folded into one batch of reconstructions, processed
in chunks of at most ``max_batch``; there is no Python loop per neuron.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.hooks import RemovableHandle

from zfnet.models import ConvNet


def forward_to(model: ConvNet, images: torch.Tensor, layer: str) -> torch.Tensor:
    """Run the conv blocks of ``model`` bottom-up, stopping after block ``layer``.

    ``(N, 3, H, W)`` -> the block's output ``(N, C, h, w)`` (post pool/norm). Hooks on the blocks'
    children see every module call up to that layer; nothing above it is computed.
    """
    names = [name for name, _ in model.features.named_children()]
    if layer not in names:
        raise KeyError(f"model has no conv layer {layer!r}; it has {names}")
    x = images
    for name, block in model.features.named_children():
        x = block(x)
        if name == layer:
            break
    return x


def unpool(maps: torch.Tensor, switches: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Put each value of ``maps`` back at its switch location; values sharing a location add.

    Args:
        maps: ``(M, C, h, w)`` pooled-resolution maps.
        switches: ``(M, C, h, w)`` int64 flat indices into ``H * W`` (``max_pool2d(..., return_indices=True)``).
        size: ``(H, W)``, the pooling input size.

    Returns ``(M, C, H, W)``.
    """
    m, c = maps.shape[:2]
    out = maps.new_zeros(m, c, size[0] * size[1])
    out.scatter_add_(2, switches.flatten(2), maps.flatten(2))
    return out.view(m, c, *size)


class Deconvnet:
    """The deconvnet probe of one model; a context manager that owns its forward hooks.

    ``with deconvnet:`` registers hooks on every conv block (conv input size, post-ReLU
    activation, pooling switches) and removes them, with everything they recorded, on exit.
    :meth:`project` and :meth:`project_at` enter it themselves, so no hook outlives a call.

    Args:
        model: a :class:`~zfnet.models.ConvNet` (any variant ``build`` makes).
        max_batch: most reconstructions (and images) processed at once; bounds memory, not results.
    """

    def __init__(self, model: ConvNet, max_batch: int = 256):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.model = model
        self.max_batch = max_batch
        self._handles: list[RemovableHandle] = []
        self._input_size: dict[str, tuple[int, int]] = {}
        self._activation: dict[str, torch.Tensor] = {}
        self._switches: dict[str, tuple[torch.Tensor, tuple[int, int]]] = {}

    def __enter__(self) -> "Deconvnet":
        if self._handles:
            raise RuntimeError("Deconvnet hooks are already registered (nested `with`)")
        for name, block in self.model.features.named_children():
            self._handles.append(block.conv.register_forward_pre_hook(self._record_input_size(name)))
            self._handles.append(block.relu.register_forward_hook(self._record_activation(name)))
            if hasattr(block, "pool"):
                self._handles.append(block.pool.register_forward_hook(self._record_switches(name)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._input_size.clear()
        self._activation.clear()
        self._switches.clear()

    def _record_input_size(self, name: str):
        def hook(module: nn.Module, inputs: tuple[torch.Tensor]) -> None:
            self._input_size[name] = tuple(inputs[0].shape[-2:])

        return hook

    def _record_activation(self, name: str):
        def hook(module: nn.Module, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
            self._activation[name] = output

        return hook

    def _record_switches(self, name: str):
        def hook(module: nn.MaxPool2d, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
            x = inputs[0]
            _, switches = F.max_pool2d(
                x, module.kernel_size, module.stride, module.padding, module.dilation,
                ceil_mode=module.ceil_mode, return_indices=True,
            )
            self._switches[name] = (switches, tuple(x.shape[-2:]))

        return hook

    @torch.no_grad()
    def project(
        self, images: torch.Tensor, layer: str, channels: Sequence[int], mode: str = "max"
    ) -> torch.Tensor:
        """Project feature maps of ``layer`` down to pixel space, for every image and channel.

        Args:
            images: ``(N, 3, H, W)`` preprocessed model input.
            layer: ``conv1``..``conv5`` (its post-ReLU activation).
            channels: the K feature maps to project.
            mode: ``"max"`` keeps only each map's strongest activation in each image;
                ``"map"`` keeps the whole feature map.

        Returns ``(N, K, 3, H, W)`` raw pixel-space reconstructions (no display scaling).
        """
        if mode not in ("max", "map"):
            raise ValueError(f"mode must be 'max' or 'map', got {mode!r}")
        n, k = images.shape[0], len(channels)
        image = torch.arange(n, device=images.device).repeat_interleave(k)
        channel = torch.as_tensor(list(channels), dtype=torch.long, device=images.device).repeat(n)
        recon = self._project(images, layer, image, channel, None, mode == "max")
        return recon.view(n, k, *images.shape[1:])

    @torch.no_grad()
    def project_at(
        self,
        images: torch.Tensor,
        layer: str,
        channels: torch.Tensor | Sequence[int],
        ys: torch.Tensor | Sequence[int],
        xs: torch.Tensor | Sequence[int],
    ) -> torch.Tensor:
        """Project one given activation per item: item ``i`` is ``(images[i], channels[i], ys[i], xs[i])``.

        Args:
            images: ``(M, 3, H, W)`` preprocessed model input, one image per item.
            layer: ``conv1``..``conv5``.
            channels, ys, xs: ``(M,)`` feature map and position (in the layer's post-ReLU map).

        Returns ``(M, 3, H, W)`` raw pixel-space reconstructions.
        """
        channel, ys, xs = (torch.as_tensor(v, dtype=torch.long, device=images.device).reshape(-1) for v in (channels, ys, xs))
        if not len(channel) == len(ys) == len(xs) == images.shape[0]:
            raise ValueError("project_at needs one channel, y and x per image")
        image = torch.arange(images.shape[0], device=images.device)
        return self._project(images, layer, image, channel, (ys, xs), True)

    def _project(
        self,
        images: torch.Tensor,
        layer: str,
        image: torch.Tensor,
        channel: torch.Tensor,
        position: tuple[torch.Tensor, torch.Tensor] | None,
        single: bool,
    ) -> torch.Tensor:
        """Reconstructions of items ``(image[i], channel[i])``, chunked by ``max_batch``.

        ``single`` keeps one activation per item: at ``position`` if given, else the map's argmax.
        Returns ``(M, 3, H, W)``.
        """
        out = []
        for start in range(0, len(image), self.max_batch):
            part = slice(start, start + self.max_batch)
            used, item_image = image[part].unique(return_inverse=True)
            with self:
                forward_to(self.model, images[used], layer)
                act = self._activation[layer]
                pos = None if position is None else position[0][part] * act.shape[-1] + position[1][part]
                seed = self._seed(act, item_image, channel[part], pos, single)
                out.append(self._down(seed, item_image, layer))
        return torch.cat(out)

    @staticmethod
    def _seed(
        act: torch.Tensor, image: torch.Tensor, channel: torch.Tensor, pos: torch.Tensor | None, single: bool
    ) -> torch.Tensor:
        """The layer's maps with all but the chosen activations zeroed.

        ``act`` ``(n, C, h, w)``; ``image``, ``channel``, ``pos`` (flat ``y * w + x``) ``(M,)``.
        Returns ``(M, C, h, w)``.
        """
        m = len(image)
        chosen = act[image, channel].flatten(1)  # (M, h*w)
        if single:
            pos = chosen.argmax(1) if pos is None else pos
            chosen = torch.zeros_like(chosen).scatter_(1, pos[:, None], chosen.gather(1, pos[:, None]))
        seed = act.new_zeros(m, act.shape[1], act.shape[2] * act.shape[3])
        seed[torch.arange(m, device=act.device), channel] = chosen
        return seed.view(m, *act.shape[1:])

    def _down(self, maps: torch.Tensor, image: torch.Tensor, layer: str) -> torch.Tensor:
        """Pass ``(M, C, h, w)`` post-ReLU maps of ``layer`` down to ``(M, 3, H, W)`` pixel space."""
        blocks = []
        for name, block in self.model.features.named_children():
            blocks.append((name, block))
            if name == layer:
                break
        x = maps
        for name, block in reversed(blocks):
            if name != layer:  # arriving from the layer above: contrast norm is identity
                if name in self._switches:
                    switches, size = self._switches[name]
                    x = unpool(x, switches[image], size)
                x = F.relu(x)
            x = self._filter(x, block.conv, self._input_size[name])
        return x

    @staticmethod
    def _filter(x: torch.Tensor, conv: nn.Conv2d, size: tuple[int, int]) -> torch.Tensor:
        """Convolve with the transposed filters of ``conv`` (no bias), back to its input ``size``."""
        stride, padding, kernel, dilation = conv.stride, conv.padding, conv.kernel_size, conv.dilation
        natural = [
            (x.shape[-2 + i] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (kernel[i] - 1) + 1 for i in range(2)
        ]
        output_padding = tuple(size[i] - natural[i] for i in range(2))
        x = x.contiguous(memory_format=torch.channels_last)  # the fast layout for transposed conv on CPU
        return F.conv_transpose2d(x, conv.weight, None, stride, padding, output_padding, conv.groups, dilation)
