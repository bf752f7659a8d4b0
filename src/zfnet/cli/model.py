"""The options that choose the model a command runs on: ``--checkpoint`` (a zfnet checkpoint), or
``--model`` + ``--weights`` (your own, :mod:`zfnet.viz.network`) with ``--input-size``, ``--mean``,
``--std`` and ``--bgr`` (how it sees images, :class:`~zfnet.models.inputs.InputSpec`)."""

from __future__ import annotations

import argparse

import torch

from zfnet.models.inputs import IMAGENET_MEAN, IMAGENET_STD, InputSpec
from zfnet.viz.network import DEFAULT_CHECKPOINT, Network, build_model, from_checkpoint, load_weights


def add_options(parser: argparse.ArgumentParser) -> None:
    """``--checkpoint`` or ``--model`` + ``--weights`` with ``--input-size``, ``--mean``, ``--std``, ``--bgr``."""
    from zfnet.cli.options import checkpoint_file, number

    parser.add_argument("--checkpoint", type=checkpoint_file,
                        help=f"trained zfnet checkpoint (default: {DEFAULT_CHECKPOINT} unless --model is given)")
    parser.add_argument("--model", metavar="SPEC", help="your own model instead: torchvision:NAME (e.g. "
                        "torchvision:alexnet) or package.module:factory; needs --weights")
    parser.add_argument("--weights", metavar="FILE", help="the --model's state dict (torch.save(model.state_dict(), FILE)); "
                        "never downloaded")
    parser.add_argument("--input-size", type=number(int, gt=0), default=224, metavar="N",
                        help="the --model's input side (default: 224; images are resized to N * 256 / 224 and "
                        "centre-cropped)")
    parser.add_argument("--mean", type=number(float), nargs=3, default=list(IMAGENET_MEAN), metavar=("R", "G", "B"),
                        help="the --model's Normalize mean on [0, 1] images (default: ImageNet's)")
    parser.add_argument("--std", type=number(float, gt=0), nargs=3, default=list(IMAGENET_STD), metavar=("R", "G", "B"),
                        help="the --model's Normalize std (default: ImageNet's)")
    parser.add_argument("--bgr", action="store_true", help="the --model takes BGR channels (Caffe-style)")


def from_args(args: argparse.Namespace, device: str | torch.device) -> Network:
    """The :class:`Network` that :func:`add_options`' values name; bad values raise ``ConfigError``."""
    from zfnet.cli.options import checkpoint_problem
    from zfnet.config import ConfigError

    if args.model is None:
        if args.weights is not None:
            raise ConfigError("--weights: needs --model (a zfnet checkpoint holds its own weights)")
        path = args.checkpoint or DEFAULT_CHECKPOINT
        problem = checkpoint_problem(path)
        if problem:
            raise ConfigError(f"--checkpoint: {problem}")
        return from_checkpoint(path, device)
    if args.checkpoint is not None:
        raise ConfigError("--model: give --checkpoint or --model, not both")
    if args.weights is None:
        raise ConfigError("--model: needs --weights FILE (no weights are ever downloaded)")
    inputs = InputSpec.normalized(args.mean, args.std, args.input_size, bgr=args.bgr)
    try:
        model = build_model(args.model)
    except ValueError as exc:
        raise ConfigError(f"--model: {exc}") from None
    try:
        load_weights(model, args.weights)
    except ValueError as exc:
        raise ConfigError(f"--weights: {exc}") from None
    try:
        return Network.of(model, inputs, args.model, device)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ConfigError(f"--input-size: {args.model} does not run on {inputs.size}x{inputs.size} images ({first})") from None
