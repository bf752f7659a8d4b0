"""The batched deconvnet against one neuron at a time, and the top-9 pass against plain inference.

- **deconv**: project the strongest activation of every map of ``layer`` in each of N images
  (N x C neurons) with one :meth:`Deconvnet.project` call, against a loop that computes each
  neuron's projection as the input gradient with the deconvnet's backward rules, times the activation (a
  forward and a backward per neuron; the deconvnet's autograd path, one neuron at a time). The loop is timed on at most
  ``loop_neurons`` neurons, spread over images and channels, each neuron its own contender in the
  race (its best round kept), and the mean time per neuron extrapolated to all.
- **top9**: one :func:`~zfnet.viz.top9.top9` pass (all five conv layers recorded) against
  ``model(x)`` under ``inference_mode`` over the same batches.
"""

from __future__ import annotations

import torch

from zfnet.bench.timing import Rounds, race, target
from zfnet.bench.train import model_macs
from zfnet.models import ConvNet
from zfnet.viz import Deconvnet
from zfnet.viz.deconvnet import DECONVNET_RULES
from zfnet.viz.layers import BackwardRules, Tap, sequential_chain
from zfnet.viz.top9 import top9


def gradient_projection(tap: Tap, act: dict, image: torch.Tensor, layer: str, channel: int) -> torch.Tensor:
    """One neuron's projection (the map's strongest activation in one image) as an input gradient times the activation.

    ``tap`` records ``layer`` into ``act``; call with :data:`~zfnet.viz.deconvnet.DECONVNET_RULES`
    active. ``image`` ``(3, H, W)`` -> ``(3, H, W)``.
    """
    x = image[None].clone().requires_grad_(True)
    tap.run(x)
    unit = act[layer][0, channel].max()
    (grad,) = torch.autograd.grad(unit, x)
    return grad[0] * unit.detach()


def bench_deconv(model: ConvNet, images: torch.Tensor, layer: str, max_batch: int, loop_neurons: int,
                 rounds: Rounds, label: str) -> tuple[dict, list[dict]]:
    """Time the batched deconvnet against the per-neuron gradient loop (one :func:`race`).

    Args:
        model: the convnet (eval mode, on the device to time).
        images: ``(N, 3, H, W)`` preprocessed input on that device; all ``N x C`` maps of ``layer`` are projected.
        layer: the layer whose every map is projected.
        max_batch: the deconvnet's chunk size (``viz.max_batch``).
        loop_neurons: neurons timed in the loop (its time is extrapolated to all ``N x C``).
        rounds: the race's rounds (best kept).
        label: the model's name in the target check.

    Returns seconds (``batched_s``, ``loop_s`` extrapolated), ``speedup``, the achieved GFLOP/s of
    each (conv MACs up to ``layer`` x 2: the batched call runs one forward per image and one descent
    through the transposed filters per neuron, the loop a forward and an input gradient per neuron),
    ``flop_ratio`` (loop FLOPs / batched FLOPs: the speed-up if both ran at the same FLOP/s) and the
    sizes; and the target check (speed-up >= 20).
    """
    act: dict[str, torch.Tensor] = {}
    tap = Tap(model, [layer], act.__setitem__)
    with torch.no_grad(), tap:
        tap.run(images[:1])  # the tap's one-off check of the layer, outside the race
    channels = list(range(act[layer].shape[1]))
    neurons = [(i, c) for i in range(len(images)) for c in channels]
    timed_neurons = neurons[:: max(1, len(neurons) // loop_neurons)][:loop_neurons]
    deconvnet = Deconvnet(model, max_batch)

    def one(i: int, c: int):
        def run() -> None:
            with BackwardRules(model, DECONVNET_RULES), tap:
                gradient_projection(tap, act, images[i], layer, c)

        return run

    contenders = {"batched": lambda: deconvnet.project(images, layer, channels, mode="max")}
    contenders.update({f"neuron {i}/{c}": one(i, c) for i, c in timed_neurons})
    seconds = race(contenders, images.device, rounds)
    loop_all = sum(seconds[f"neuron {i}/{c}"] for i, c in timed_neurons) / len(timed_neurons) * len(neurons)
    macs = model_macs(model)
    chain = sequential_chain(model, layer, images[:1])
    below = sum(macs.get(name, 0) for name in chain)  # conv MACs per image, up to the layer
    batched_gflop = 2 * below * (len(images) + len(neurons)) / 1e9  # the forward, then one descent per neuron
    loop_gflop = 4 * below * len(neurons) / 1e9  # per neuron: a forward and an input gradient
    result = {
        "layer": layer,
        "images": len(images),
        "input_size": images.shape[-1],
        "neurons": len(neurons),
        "loop_timed_neurons": len(timed_neurons),
        "batched_s": seconds["batched"],
        "loop_s": loop_all,
        "batched_neurons_per_s": len(neurons) / seconds["batched"],
        "loop_neurons_per_s": len(neurons) / loop_all,
        "speedup": loop_all / seconds["batched"],
        "batched_gflops": batched_gflop / seconds["batched"],
        "loop_gflops": loop_gflop / loop_all,
        "flop_ratio": loop_gflop / batched_gflop,
    }
    return result, [target(f"{label}: deconvnet batched speed-up over the per-neuron loop", result["speedup"], ">=",
                           20)]


def bench_top9(model: ConvNet, images: torch.Tensor, batch_size: int, rounds: Rounds,
               label: str) -> tuple[dict, list[dict]]:
    """Time one top-9 pass (all conv layers) against plain inference over the same batches (one :func:`race`).

    Args:
        model: the convnet (eval mode, on the device to time).
        images: ``(N, 3, H, W)`` preprocessed input on that device.
        batch_size: images per forward (``viz.batch_size``).
        rounds: the race's rounds (best kept).
        label: the model's name in the target check.

    Returns seconds (``top9_s``, ``inference_s``), ``top9_over_inference`` and the sizes, and the
    target check (ratio <= 1.2).
    """
    batches = [(images[i : i + batch_size], torch.arange(i, min(i + batch_size, len(images))))
               for i in range(0, len(images), batch_size)]

    @torch.inference_mode()
    def inference() -> None:
        for x, _ in batches:
            model(x)

    seconds = race({"top9": lambda: top9(model, batches), "inference": inference}, images.device, rounds)
    result = {
        "images": len(images),
        "input_size": images.shape[-1],
        "batch": batch_size,
        "top9_s": seconds["top9"],
        "inference_s": seconds["inference"],
        "top9_images_per_s": len(images) / seconds["top9"],
        "inference_images_per_s": len(images) / seconds["inference"],
        "top9_over_inference": seconds["top9"] / seconds["inference"],
    }
    return result, [target(f"{label}: top-9 pass time / inference time", result["top9_over_inference"], "<=", 1.2)]
