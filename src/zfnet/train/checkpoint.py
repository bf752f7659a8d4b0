"""Checkpoints: atomic writes, safe loads, and the model they describe.

A checkpoint is a ``torch.save``'d dict of plain types and tensors only, so it loads with
``torch.load(weights_only=True)`` (after the CRC-32s of its zip members are checked):

``{"format": "zfnet-checkpoint-v1", "epoch": int, "model": state_dict,
"model_config": dict (ModelConfig fields), "num_classes": int, "input_size": int,
"classes": [wnid, ...], "class_names": [str, ...], "mean": tensor (3, S, S) | None}``

Resume state (``resume.pt``) adds ``optimizer``, ``scheduler``, ``rng`` and ``history``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from zfnet.models import ConvNet, build

FORMAT = "zfnet-checkpoint-v1"


class CheckpointError(RuntimeError):
    """A checkpoint file that is missing, foreign, tampered with or not a zfnet checkpoint."""


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temp file in the same folder, fsync, then rename over ``path``.

    A crash at any point leaves either the old file or the new one, never half of one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_copy(src: str | Path, dst: str | Path) -> None:
    """Copy ``src`` to ``dst`` through a temp file in ``dst``'s folder and a rename (see :func:`atomic_save`)."""
    dst = Path(dst)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
            shutil.copyfileobj(inp, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _check_crcs(path: Path) -> None:
    """A ``torch.save`` file is a zip whose members carry CRC-32s that ``torch.load`` never checks:
    check them, so changed or corrupted tensor bytes are refused instead of loading as other weights."""
    if not zipfile.is_zipfile(path):
        return  # not a zip at all: torch.load says what it is
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise CheckpointError(f"{path}: refused: not a readable zip archive ({exc})") from None
    if bad is not None:
        raise CheckpointError(f"{path}: refused: {bad} inside fails its CRC-32 check, the file was modified or corrupted")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a zfnet checkpoint with ``weights_only=True``; raise :class:`CheckpointError` if unsafe or foreign."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    _check_crcs(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # pickle refusing a global, a truncated zip, not a torch file at all
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: refused to load as a zfnet checkpoint (weights_only=True): {first}"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a zfnet checkpoint (expected format {FORMAT!r})")
    return ckpt


def model_from_checkpoint(ckpt: dict) -> ConvNet:
    """Rebuild the model a checkpoint describes and load its weights (eval mode)."""
    from zfnet.config import ModelConfig

    model = build(ModelConfig(**ckpt["model_config"]), ckpt["num_classes"], ckpt["input_size"])
    model.load_state_dict(ckpt["model"])
    return model.eval()


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[ConvNet, dict]:
    """``(model, checkpoint)`` from a checkpoint file; the model is in eval mode."""
    ckpt = load_checkpoint(path, map_location)
    return model_from_checkpoint(ckpt), ckpt
