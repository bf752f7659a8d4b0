"""Benchmark: the batched deconvnet vs one neuron at a time, and the top-9 pass vs plain inference.

``python -m zfnet.bench.deconv [--full] [--images N] [--device cuda]``

1. Project the strongest activation of every conv5 map in each of N images (N x C5 neurons) with
   one :meth:`Deconvnet.project` call, against a loop that computes each neuron's projection as the
   gradient with the deconvnet ReLU rule (a forward and a backward per neuron). The loop is timed on
   at most ``loop_neurons`` neurons and its per-neuron time extrapolated.
2. One :func:`~zfnet.viz.top9.top9` pass (all five layers recorded) against plain inference
   (``model(x)``) over the same batches.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from typing import Callable, Iterator

import torch
from torch import nn

from zfnet.models import ConvNet, zfnet
from zfnet.viz import Deconvnet
from zfnet.viz.deconvnet import forward_to
from zfnet.viz.top9 import top9


def _timed(fn: Callable[[], object], device: torch.device, repeats: int = 3) -> float:
    """Best wall time of ``repeats`` calls of ``fn`` (after one warm-up), in seconds."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return best


@contextlib.contextmanager
def deconvnet_relu_rule(model: nn.Module) -> Iterator[None]:
    """While active, every ReLU's backward passes ``relu(grad_out)`` (the deconvnet rule)."""
    hooks = [m.register_full_backward_hook(lambda mod, gin, gout: (gout[0].clamp_min(0),))
             for m in model.modules() if isinstance(m, nn.ReLU)]
    try:
        yield
    finally:
        for h in hooks:
            h.remove()


def gradient_projection(model: ConvNet, image: torch.Tensor, layer: str, channel: int) -> torch.Tensor:
    """One neuron's projection (the map's strongest activation in one image) as an input gradient times the activation.

    Call under :func:`deconvnet_relu_rule`. ``image`` ``(3, H, W)`` -> ``(3, H, W)``.
    """
    x = image[None].clone().requires_grad_(True)
    block = model.layer(layer)
    names = [name for name, _ in model.features.named_children()]
    below = forward_to(model, x, names[names.index(layer) - 1]) if names.index(layer) else x
    unit = block.relu(block.conv(below))[0, channel].max()
    (grad,) = torch.autograd.grad(unit, x)
    return grad[0] * unit.detach()


def bench_deconv(
    model: ConvNet,
    images: torch.Tensor,
    pass_images: torch.Tensor | None = None,
    layer: str = "conv5",
    batch_size: int = 64,
    loop_neurons: int = 64,
    max_batch: int = 256,
) -> dict:
    """Time the batched deconvnet against the per-neuron gradient loop, and top-9 against inference.

    Args:
        model: the convnet (eval mode, on the device to time).
        images: ``(N, 3, H, W)`` preprocessed input on the same device; all ``N x C`` maps are projected.
        pass_images: images of the top-9 / inference passes (default: ``images``).
        layer: layer whose every map is projected.
        batch_size: batch size of the top-9 / inference passes over ``images``.
        loop_neurons: neurons timed in the per-neuron loop (its time is extrapolated to all).
        max_batch: deconvnet chunk size.

    Returns seconds and ratios: ``deconv_batched_s``, ``deconv_loop_s`` (extrapolated),
    ``deconv_speedup``, ``top9_s``, ``inference_s``, ``top9_over_inference``, and the sizes.
    """
    device = images.device
    channels = list(range(model.layer(layer).spec.out_channels))
    neurons = [(i, c) for i in range(len(images)) for c in channels]
    deconvnet = Deconvnet(model, max_batch)
    batched = _timed(lambda: deconvnet.project(images, layer, channels, mode="max"), device)
    timed = neurons[:: max(1, len(neurons) // loop_neurons)][:loop_neurons]
    with deconvnet_relu_rule(model):
        loop = _timed(lambda: [gradient_projection(model, images[i], layer, c) for i, c in timed], device, repeats=1)
    loop_all = loop / len(timed) * len(neurons)

    pass_images = images if pass_images is None else pass_images
    batches = [(pass_images[i : i + batch_size], torch.arange(i, min(i + batch_size, len(pass_images))))
               for i in range(0, len(pass_images), batch_size)]

    @torch.inference_mode()
    def inference() -> None:
        for x, _ in batches:
            model(x)

    top9_s = _timed(lambda: top9(model, batches), device)
    inference_s = _timed(inference, device)
    return {
        "layer": layer,
        "images": len(images),
        "neurons": len(neurons),
        "pass_images": len(pass_images),
        "input_size": images.shape[-1],
        "device": str(device),
        "deconv_batched_s": batched,
        "deconv_loop_s": loop_all,
        "deconv_loop_timed_neurons": len(timed),
        "deconv_speedup": loop_all / batched,
        "top9_s": top9_s,
        "inference_s": inference_s,
        "top9_over_inference": top9_s / inference_s,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="full ZFNet at 224 (default: ZFNet-small at 64)")
    parser.add_argument("--images", type=int, default=9, help="images whose conv5 maps are all projected")
    parser.add_argument("--pass-images", type=int, default=512, help="images in the top-9 / inference passes")
    parser.add_argument("--loop-neurons", type=int, default=64, help="neurons timed in the per-neuron loop")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    device = torch.device(args.device)
    if args.full:
        model = zfnet(1000)
    else:
        model = zfnet(10, widths=(24, 64, 96, 96, 64), fc_sizes=(512, 512), input_size=64)
    model = model.to(device).eval()
    size = model.input_size
    result = bench_deconv(
        model,
        torch.randn(args.images, 3, size, size, device=device),
        torch.randn(args.pass_images, 3, size, size, device=device),
        loop_neurons=args.loop_neurons,
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
