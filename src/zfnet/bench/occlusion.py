"""Benchmark: our occlusion (all three maps of Fig. 7) vs Captum's ``Occlusion`` (one map).

``python -m zfnet.bench.occlusion [--full] [--images N] [--patch 16] [--stride 8] [--device cuda]``

Same model, images, square, stride and fill. Captum's ``Occlusion`` gives one attribution per call
(here the label's probability, map (d)); ours gives (b), (d) and (e) from the same forward passes.
Captum is timed with ``perturbations_per_eval=1`` (its default: one forward per window) and with a
batched setting (``--captum-batch`` windows per forward).
"""

from __future__ import annotations

import argparse
import json

import torch
from captum.attr import Occlusion

from zfnet.bench.deconv import _timed
from zfnet.models import ConvNet, zfnet
from zfnet.viz.occlusion import occlusion


def bench_occlusion(
    model: ConvNet,
    images: torch.Tensor,
    labels: torch.Tensor,
    patch: int = 16,
    stride: int = 8,
    max_batch: int = 256,
    captum_batch: int = 64,
    repeats: int = 1,
) -> dict:
    """Time :func:`~zfnet.viz.occlusion.occlusion` against Captum's ``Occlusion`` on the label's probability.

    Args:
        model: the convnet (eval mode, on the device to time).
        images: ``(N, 3, H, W)`` preprocessed input on that device; labels: ``(N,)``.
        patch, stride: the square and the grid step (input pixels); fill is grey (0) for both.
        max_batch: our occluded images per forward.
        captum_batch: Captum's ``perturbations_per_eval`` in the batched setting.
        repeats: timed runs per method (best taken, after a warm-up).

    Returns seconds (``ours_s``, ``captum_s``, ``captum_batched_s``), the speed-ups
    ``captum_over_ours`` and ``captum_batched_over_ours`` (> 1: ours is faster), and the sizes.
    """
    device = images.device
    captum = Occlusion(lambda x: model(x).softmax(1))

    def run_captum(per_eval: int) -> torch.Tensor:
        with torch.no_grad():
            return captum.attribute(images, sliding_window_shapes=(3, patch, patch), strides=(3, stride, stride),
                                    baselines=0.0, target=labels, perturbations_per_eval=per_eval)

    ours = _timed(lambda: occlusion(model, images, labels, patch, stride, max_batch=max_batch), device, repeats)
    one = _timed(lambda: run_captum(1), device, repeats)
    batched = _timed(lambda: run_captum(captum_batch), device, repeats)
    maps = occlusion(model, images, labels, patch, stride, max_batch=max_batch)
    return {
        "images": len(images),
        "positions": maps.prob.shape[1] * maps.prob.shape[2],
        "input_size": images.shape[-1],
        "patch": patch,
        "stride": stride,
        "device": str(device),
        "ours_s": ours,
        "captum_s": one,
        "captum_batched_s": batched,
        "captum_batch": captum_batch,
        "captum_over_ours": one / ours,
        "captum_batched_over_ours": batched / ours,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="full ZFNet at 224 (default: ZFNet-small at 64)")
    parser.add_argument("--images", type=int, default=32, help="images occluded at every position")
    parser.add_argument("--patch", type=int, default=16)
    parser.add_argument("--stride", type=int, default=8)
    parser.add_argument("--captum-batch", type=int, default=64, help="Captum's perturbations_per_eval, batched setting")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = zfnet(1000) if args.full else zfnet(11, widths=(24, 64, 96, 96, 64), fc_sizes=(512, 512), input_size=64)
    model = model.to(device).eval()
    size = model.input_size
    images = torch.randn(args.images, 3, size, size, device=device)
    labels = torch.randint(0, model.num_classes, (args.images,), device=device)
    result = bench_occlusion(model, images, labels, args.patch, args.stride, captum_batch=args.captum_batch,
                             repeats=args.repeats)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
