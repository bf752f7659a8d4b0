"""Checkpoints: atomic writes, safe loads, and the model they describe.

A checkpoint is a ``torch.save``'d dict of plain types and tensors only, so it loads with
``torch.load(weights_only=True)`` (after the CRC-32s of its zip members are checked):

``{"format": "zfnet-checkpoint-v1", "epoch": int, "model": state_dict,
"model_config": dict (ModelConfig fields), "num_classes": int, "input_size": int,
"classes": [wnid, ...], "class_names": [str, ...], "mean": tensor (3, S, S) | None}``

Resume state (``resume.pt``) adds ``optimizer``, ``scheduler``, ``rng`` and ``history``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any, BinaryIO, Iterator

import torch

from zfnet.models import ConvNet, build

FORMAT = "zfnet-checkpoint-v1"


class CheckpointError(RuntimeError):
    """A checkpoint file that is missing, foreign, tampered with or not a zfnet checkpoint."""


@contextlib.contextmanager
def _atomic_file(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file handle whose content replaces ``path`` only once it is complete: written to a
    temp file in the same folder, fsynced, then renamed over ``path``. A crash at any point leaves
    either the old file or the new one, never half of one (and no temp file on an exception)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` ``obj`` to ``path`` atomically (:func:`_atomic_file`)."""
    with _atomic_file(path) as fh:
        torch.save(obj, fh)


def atomic_copy(src: str | Path, dst: str | Path) -> None:
    """Copy ``src`` to ``dst`` atomically (:func:`_atomic_file`)."""
    with _atomic_file(dst) as out, open(src, "rb") as inp:
        shutil.copyfileobj(inp, out, 1 << 20)


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
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: unreadable resume state ({first}); delete it to train from the start") from None


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
            atomic_copy(self.state_dir / f"epoch-{epoch:03d}.pt", milestones_dir / f"epoch-{epoch:03d}.pt")
        atomic_save(final, self.out_dir / "model.pt")
