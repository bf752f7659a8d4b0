"""What the ``zfnet`` subcommands share for their options: checked number types, options that
mirror a config field (its default and key from :mod:`zfnet.config`, one source of truth), the
config composed from ``conf/`` and overrides with the stages' checks (:func:`composed_config`), and
the new output folder a hand-run command writes to unless ``--out`` says otherwise.

A bad value is refused where it is parsed, in one line (``zfnet occlude: error: argument
--patch: must be > 0, got 0``); values that depend on the checkpoint (a layer the model has, a
square that fits its input) are checked once it is loaded, as :class:`~zfnet.config.ConfigError`.
"""

from __future__ import annotations

import argparse
import math
import operator
import time
from pathlib import Path
from typing import Any, Callable

OUTPUTS = Path("outputs")  # git-ignored: hand-run commands write here unless --out is given
_BOUNDS = (("gt", operator.gt, ">"), ("ge", operator.ge, ">="), ("lt", operator.lt, "<"), ("le", operator.le, "<="))


def composed_config(overrides: list[str]):
    """``conf/`` composed with Hydra ``overrides`` (as ``dvc exp run -S``) into a validated
    :class:`~zfnet.config.Config`, its ablation variant names included (as every stage loads its
    config: :func:`zfnet.stages.common.load_config`); errors name ``conf/ + <overrides>``."""
    from zfnet.config import compose, from_dict
    from zfnet.experiments.variants import check_variants

    source = "conf/ + " + " ".join(overrides)
    cfg = from_dict(compose(overrides), source)
    check_variants(cfg, source)
    return cfg


def number(kind: type, **bounds: float) -> Callable[[str], Any]:
    """An argparse ``type``: a finite ``kind`` (``int`` or ``float``) within ``bounds``
    (``gt``, ``ge``, ``lt``, ``le``), e.g. ``number(int, gt=0)``; else a one-line argparse error."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        for name, holds, sign in _BOUNDS:
            if name in bounds and not holds(value, bounds[name]):
                raise argparse.ArgumentTypeError(f"must be {sign} {bounds[name]:g}, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def mirror(parser: argparse.ArgumentParser, flag: str, cls: type, name: str, help: str, **kwargs: Any) -> None:
    """Add ``flag`` mirroring field ``name`` of config dataclass ``cls``: its default is the field's
    default, and the help names the params key it mirrors."""
    from zfnet.config import config_key, field_default

    default = field_default(cls, name)
    shown = " ".join(map(str, default)) if isinstance(default, list) else default
    parser.add_argument(flag, default=default, help=f"{help} (default: {shown}, as {config_key(cls, name)})", **kwargs)


def max_pixels_option(parser: argparse.ArgumentParser, default: int | None = None) -> None:
    """``--max-pixels``: the decompression-bomb limit of the user's images (:func:`zfnet.data.images.load_rgb`;
    ``default`` None: :data:`~zfnet.data.images.COMMAND_MAX_PIXELS`)."""
    from zfnet.data.images import COMMAND_MAX_PIXELS

    default = default or COMMAND_MAX_PIXELS
    parser.add_argument("--max-pixels", type=number(int, gt=0), default=default, metavar="N",
                        help="decode images of up to N pixels (large ones are shrunk while decoding); a file "
                        f"declaring more is refused as a decompression bomb (default: {default:,})")


def output_dir(out: str | None, command: str) -> Path:
    """``--out`` if given, else a new ``outputs/<command>-<UTC time>`` folder (never a DVC out)."""
    if out:
        return Path(out)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    path, n = OUTPUTS / f"{command}-{stamp}", 1
    while path.exists():
        n += 1
        path = OUTPUTS / f"{command}-{stamp}-{n}"
    return path


def model_note(class_names: list[str]) -> str | None:
    """The warning to show beside predictions of a model trained on the synthetic drawings (its
    classes are :data:`zfnet.data.synthetic.CLASS_NAMES`), else None: on a photograph, or anything
    unlike those drawings, its prediction is one of its few classes whatever the image shows."""
    from zfnet.data.synthetic import CLASS_NAMES

    if not class_names or not set(class_names) <= set(CLASS_NAMES):
        return None
    return (f"this model knows only the {len(class_names)} synthetic drawings it was trained on "
            f"({', '.join(class_names)}); its predictions on other images (photographs, other objects) are meaningless")


def checkpoint_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be a zfnet checkpoint before loading it, or None: it must be a file and the
    zip archive ``torch.save`` writes (:mod:`zfnet.train.checkpoint`). Random bytes or a truncated
    copy are corrupt, and loading them another way (PyTorch suggests ``weights_only=False``) is unsafe."""
    import zipfile

    path = Path(path)
    if not path.is_file():
        return f"{path}: no such checkpoint file (train one with `dvc repro train`, or fetch it with `dvc pull`)"
    if not zipfile.is_zipfile(path):
        return (f"{path}: not a zfnet checkpoint: not the zip archive torch.save writes (corrupt, truncated or "
                "another format); re-create it with `dvc repro`, or fetch it again with `dvc pull`")
    return None


def checkpoint_file(text: str) -> str:
    """argparse ``type`` of ``--checkpoint``: a file that can be a zfnet checkpoint (:func:`checkpoint_problem`)."""
    problem = checkpoint_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def device(name: str):
    """``--device`` (``auto | cpu | cuda``) as a torch device; CUDA asked for but absent is a :class:`~zfnet.config.ConfigError`."""
    import torch

    from zfnet.config import ConfigError
    from zfnet.train.runtime import resolve_device

    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device: cuda was asked for but torch sees no CUDA device (use --device cpu or auto)")
    return resolve_device(name)


def new_file(text: str) -> str:
    """argparse ``type`` of an output file (``--out FILE``, ``--write FILE``): its folder must exist
    and it must not be a folder, checked before any work."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a folder, not a file")
    if not path.absolute().parent.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: its folder {path.absolute().parent} does not exist")
    return text
