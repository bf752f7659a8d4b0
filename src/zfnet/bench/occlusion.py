"""Our occlusion (all three maps of Fig. 7) against Captum's ``Occlusion`` (one map per call).

Same model, images, square, stride and fill (grey = 0 after mean subtraction). Captum's
``Occlusion.attribute`` gives one attribution, here the label's probability (map (d)); ours gives
(b), (d) and (e) from the same forward passes. Captum is timed at several
``perturbations_per_eval`` (windows per forward, each forward holding every image) and its best
setting is the one to beat.
"""

from __future__ import annotations

from typing import Sequence

import torch

from zfnet.bench.timing import Rounds, race, target
from zfnet.models import ConvNet
from zfnet.viz.occlusion import grid, occlusion


def bench_occlusion(model: ConvNet, images: torch.Tensor, labels: torch.Tensor, patch: int, stride: int,
                    max_batch: int, captum_settings: Sequence[int], rounds: Rounds) -> tuple[dict, list[dict]]:
    """Time :func:`~zfnet.viz.occlusion.occlusion` against Captum's ``Occlusion`` (one :func:`race`).

    Args:
        model: the convnet (eval mode, on the device to time).
        images: ``(N, 3, H, W)`` preprocessed input on that device; labels: ``(N,)``.
        patch, stride: the square and the grid step (input pixels, ``analyze.occlusion``).
        max_batch: our occluded images per forward (``analyze.occlusion.max_batch``).
        captum_settings: Captum's ``perturbations_per_eval`` values to time.
        rounds: the race's rounds (best kept).

    Returns seconds (``ours_s``, ``captum_s``: ``{perturbations_per_eval: s}``), Captum's best
    setting and time, ``captum_best_over_ours`` (> 1: ours is faster) and the sizes; and the target
    check. Raises ``ImportError`` without Captum.
    """
    from captum.attr import Occlusion

    captum = Occlusion(lambda x: model(x).softmax(1))

    def run_captum(per_eval: int):
        @torch.no_grad()
        def run() -> torch.Tensor:
            return captum.attribute(images, sliding_window_shapes=(3, patch, patch), strides=(3, stride, stride),
                                    baselines=0.0, target=labels, perturbations_per_eval=per_eval)

        return run

    contenders = {"ours": lambda: occlusion(model, images, labels, patch, stride, max_batch=max_batch)}
    contenders.update({f"captum/{k}": run_captum(k) for k in captum_settings})
    seconds = race(contenders, images.device, rounds)
    captum_s = {k: seconds[f"captum/{k}"] for k in captum_settings}
    best = min(captum_s, key=captum_s.get)
    positions = len(grid(images.shape[-2], patch, stride)) * len(grid(images.shape[-1], patch, stride))
    result = {
        "images": len(images),
        "input_size": images.shape[-1],
        "positions": positions,
        "patch": patch,
        "stride": stride,
        "ours_s": seconds["ours"],
        "captum_s": captum_s,
        "captum_best_setting": best,
        "captum_best_s": captum_s[best],
        "captum_best_over_ours": captum_s[best] / seconds["ours"],
    }
    return result, [target("occlusion: Captum's best time / ours (ours gives 3 maps, Captum 1)",
                           result["captum_best_over_ours"], ">=", 1.0)]
