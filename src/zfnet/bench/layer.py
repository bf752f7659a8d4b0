"""A whole layer's Fig. 2 against one inference pass over the same images (section ``layer``).

For every map of ``layer`` (all C channels): the streaming top-9 pass over N images (:func:`top9`),
then the deconvnet projection of each of the ``C x min(9, N)`` recorded activations, cropped to its
receptive field with its image patch (:func:`project_top`, the work of :func:`top9_figures` for
every map instead of the 16 shown). Against ``model(x)`` under ``inference_mode`` over the same
batches; the target is at most 3x.

The pass costs about one inference, but the projections are a descent per activation, ``C x 9``
of them whatever N is: the ratio is about ``1 + 9 C d / N`` with ``d`` one descent's time over one
image's forward. So the section also reports ``d``, the number of images from which on the target
holds (``images_for_target``), and where the projections' time goes (the torch operators that
took most of it, from one profiled run outside the race).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from zfnet.bench.timing import Rounds, race, target, timed
from zfnet.viz.receptive import receptive_field
from zfnet.viz.top9 import project_top, top9

TARGET = 3.0  # top-9 + projections of a whole layer, in inference passes over the same images


def _operators(fn, top: int = 6) -> dict[str, float]:
    """Share of ``fn``'s CPU time per torch operator (its own time, not its callees'), the ``top`` largest."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    ranked = sorted(events, key=lambda e: -e.self_cpu_time_total)[:top]
    return {e.key: e.self_cpu_time_total / total for e in ranked}


def bench_layer(model: nn.Module, layer: str, images: torch.Tensor, batch_size: int, max_batch: int,
                rounds: Rounds, label: str) -> tuple[dict, list[dict]]:
    """Time a whole layer's top-9 and projections against an inference pass (a :func:`race` of the
    pass and the inference, the projections timed once).

    Args:
        model: any model in eval mode, on the device to time.
        layer: its layer (:mod:`zfnet.viz.layers`), every map of which is projected.
        images: ``(N, 3, H, W)`` model input on that device.
        batch_size: images per forward (``viz.batch_size``); max_batch: deconvnet chunk (``viz.max_batch``).
        rounds: the race's rounds (best kept); label: the model's name in the target check.

    Returns the seconds (``inference_s``, ``top9_s``, ``projections_s``), ``ratio`` (their sum over
    inference), the sizes, ``descent_over_forward`` (``d``), ``images_for_target`` and
    ``projection_operators`` (share of the projections' CPU time per operator); and the target check.
    """
    batches = [(images[i : i + batch_size], torch.arange(i, min(i + batch_size, len(images))))
               for i in range(0, len(images), batch_size)]
    field = receptive_field(model, layer, images.shape[-1])
    tops = top9(model, batches, [layer])
    maps = torch.arange(tops[layer].values.shape[0])

    @torch.inference_mode()
    def inference() -> None:
        for x, _ in batches:
            model(x)

    def projections() -> None:
        project_top(model, layer, tops[layer], maps, lambda idx: images[idx.to(images.device)], max_batch, field)

    seconds = race({"inference": inference, "top9": lambda: top9(model, batches, [layer])}, images.device, rounds)
    seconds["projections"] = timed(projections, images.device, Rounds(1, warmup=0))  # seconds to minutes: once
    n, items = len(images), int(tops[layer].values.numel())
    per_image, per_item = seconds["inference"] / n, seconds["projections"] / items
    full = per_item * len(maps) * 9  # the projections once every map has 9 images
    spare = TARGET * per_image - seconds["top9"] / n  # per image, what the target leaves for the projections
    result = {
        "layer": layer,
        "images": n,
        "input_size": images.shape[-1],
        "maps": len(maps),
        "projected": items,
        "receptive_field": field.size,
        "inference_s": seconds["inference"],
        "top9_s": seconds["top9"],
        "projections_s": seconds["projections"],
        "ratio": (seconds["top9"] + seconds["projections"]) / seconds["inference"],
        "top9_over_inference": seconds["top9"] / seconds["inference"],
        "projection_ms": 1e3 * per_item,
        "descent_over_forward": per_item / per_image,
        "images_for_target": math.ceil(full / spare) if spare > 0 else None,
        "projection_operators": _operators(projections),
    }
    note = ""
    if result["ratio"] > TARGET:
        note = (f"C x 9 descents whatever N is, each {result['descent_over_forward']:.2g} forwards: met from "
                f"{result['images_for_target']} images on" if result["images_for_target"] else "not reachable")
    return result, [target(f"{label}: top-9 + projections of every {layer} map / inference", result["ratio"], "<=",
                           TARGET, "x", note)]
