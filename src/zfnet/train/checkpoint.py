"""Checkpoints: atomic writes, safe loads, and the model they describe.

A checkpoint is a ``torch.save``'d dict of plain types and tensors only, so it loads with
``torch.load(weights_only=True)`` (after the CRC-32s of its zip members are checked):

``{"format": "zfnet-checkpoint-v1", "epoch": int, "model": state_dict,
"model_config": dict (ModelConfig fields), "num_classes": int, "input_size": int,
"classes": [wnid, ...], "class_names": [str, ...], "mean": tensor (3, S, S) | None}``

Resume state (``resume.pt``) adds ``optimizer``, ``scheduler``, ``rng`` and ``history``.
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path
from typing import Any

import torch

from zfnet.errors import first_line
from zfnet.io import atomic_file, copy_file
from zfnet.models import ConvNet, build

FORMAT = "zfnet-checkpoint-v1"


class CheckpointError(RuntimeError):
    """A checkpoint file that is missing, foreign, tampered with or not a zfnet checkpoint."""


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` ``obj`` to ``path`` atomically (:func:`zfnet.io.atomic_file`)."""
    with atomic_file(path) as fh:
        torch.save(obj, fh)


def load_state(path: str | Path) -> dict:
    """Load a resume state (``resume.pt``) with ``weights_only=True`` after checking its CRCs.

    Raises :class:`CheckpointError` naming the file (and how to start over) if it is corrupted,
    tampered with or not a torch file; it was written atomically, so that means outside help.
    """
    path = Path(path)
    try:
        _check_crcs(path)
        return torch.load(path, map_location="cpu", weights_only=True)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc}; delete {path} to train from the start") from None
    except Exception as exc:
        raise CheckpointError(f"{path}: unreadable resume state ({first_line(exc)}); delete it to train from the start") from None


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
        raise CheckpointError(
            f"{path}: refused to load as a zfnet checkpoint (weights_only=True): {first_line(exc)}"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a zfnet checkpoint (expected format {FORMAT!r})")
    return ckpt


def model_from_checkpoint(ckpt: dict) -> ConvNet:
    """Rebuild the model a checkpoint describes and load its weights (eval mode)."""
    from zfnet.config import ModelConfig

    model = build(ModelConfig(**ckpt["model_config"]), ckpt["num_classes"], ckpt["input_size"], float(ckpt.get("input_scale", 1.0)))
    model.load_state_dict(ckpt["model"])
    return model.eval()


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[ConvNet, dict]:
    """``(model, checkpoint)`` from a checkpoint file; the model is in eval mode."""
    ckpt = load_checkpoint(path, map_location)
    return model_from_checkpoint(ckpt), ckpt


RESUME_FILE = "resume.pt"


class Checkpointer:
    """The training run's files: the resume state and milestones while it runs, the outs at the end.

    While training, everything lives in ``state_dir`` (NOT a DVC out, so a crash leaves the outs
    untouched): ``resume.pt`` (written atomically after every epoch) and ``epoch-NNN.pt`` for each
    milestone. :meth:`publish` copies the milestones to ``out_dir/milestones/`` and writes
    ``out_dir/model.pt``.

    Args:
        state_dir, out_dir: as above.
        fingerprint: hash of the configuration; a resume state of another one is ignored (and its
            milestones removed).
    """

    def __init__(self, state_dir: str | Path, out_dir: str | Path, fingerprint: str) -> None:
        self.state_dir, self.out_dir, self.fingerprint = Path(state_dir), Path(out_dir), fingerprint
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.resume_path = self.state_dir / RESUME_FILE

    def resume(self) -> dict | None:
        """The saved resume state of this configuration, or None (a foreign one is discarded)."""
        if not self.resume_path.exists():
            return None
        state = load_state(self.resume_path)
        if state.get("fingerprint") == self.fingerprint:
            return state
        for stale in self.state_dir.glob("epoch-*.pt"):
            stale.unlink()
        return None

    def save_resume(self, state: dict) -> None:
        atomic_save({"fingerprint": self.fingerprint, **state}, self.resume_path)

    def save_milestone(self, checkpoint: dict) -> None:
        atomic_save(checkpoint, self.state_dir / f"epoch-{checkpoint['epoch']:03d}.pt")

    def publish(self, milestones: list[int], final: dict) -> None:
        """Copy the milestones into ``out_dir/milestones/`` and write ``out_dir/model.pt`` (``final``)."""
        milestones_dir = self.out_dir / "milestones"
        if milestones_dir.exists():
            shutil.rmtree(milestones_dir)
        milestones_dir.mkdir(parents=True)
        for epoch in milestones:
            copy_file(self.state_dir / f"epoch-{epoch:03d}.pt", milestones_dir / f"epoch-{epoch:03d}.pt")
        atomic_save(final, self.out_dir / "model.pt")
