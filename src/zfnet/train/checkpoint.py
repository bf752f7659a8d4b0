"""Checkpoints: atomic writes, safe loads, and the model they describe (:class:`Checkpoint`).

A checkpoint is a ``torch.save``'d dict of plain types and tensors only, so it loads with
``torch.load(weights_only=True)`` (after the CRC-32s of its zip members are checked):

``{"format": "zfnet-checkpoint-v1", "epoch": int, "model": state_dict,
"model_config": dict (ModelConfig fields), "num_classes": int, "input_size": int,
"input_scale": float, "classes": [wnid, ...], "class_names": [str, ...], "mean": tensor (3, S, S) | None}``
and any further keys (a variant's name, the data's id).

Resume state (``resume.pt``) adds ``optimizer``, ``scheduler``, ``rng`` and ``history``.
"""

from __future__ import annotations

import io
import shutil
import zipfile
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from zfnet.errors import first_line
from zfnet.io import link_file, write_bytes
from zfnet.models import ConvNet, build
from zfnet.models.inputs import InputSpec

FORMAT = "zfnet-checkpoint-v1"


class CheckpointError(RuntimeError):
    """A checkpoint file that is missing, foreign, tampered with or not a zfnet checkpoint."""


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` ``obj`` to ``path`` atomically (:func:`zfnet.io.write_bytes`). It is serialised
    in memory first, so a full disk is reported with the exact bytes needed (:class:`zfnet.io.DiskFullError`)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes(path, buffer.getbuffer())


def load_state(path: str | Path) -> dict:
    """Load a resume state (``resume.pt``) with ``weights_only=True`` after checking its CRCs.

    Raises :class:`CheckpointError` naming the file (and how to start over) if it is corrupted,
    tampered with or not a torch file; it was written atomically, so that means outside help.
    """
    path = Path(path)
    try:
        check_crcs(path)
        return torch.load(path, map_location="cpu", weights_only=True)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc}; delete {path} to train from the start") from None
    except Exception as exc:
        raise CheckpointError(f"{path}: unreadable resume state ({first_line(exc)}); delete it to train from the start") from None


def check_crcs(path: Path) -> None:
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


@dataclass(eq=False)
class Checkpoint:
    """A trained :class:`~zfnet.models.ConvNet` as the pipeline writes it: weights, architecture,
    classes and how it sees images (the file format in the module docstring).

    ``extra`` keeps every other key of the file (a variant's name, ...) as it was.
    """

    model: dict[str, torch.Tensor]
    model_config: dict
    num_classes: int
    input_size: int
    epoch: int = 0
    input_scale: float = 1.0
    classes: list[str] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)
    mean: torch.Tensor | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def of(cls, model: ConvNet, model_config: dict, **fields: Any) -> "Checkpoint":
        """The checkpoint of ``model`` (its weights on the CPU, its input size and scale)."""
        weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        return cls(weights, dict(model_config), model.num_classes, model.input_size,
                   input_scale=model.input_scale, **fields)

    @classmethod
    def from_dict(cls, ckpt: dict) -> "Checkpoint":
        known = {f.name for f in fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in ckpt.items() if k in known},
                   extra={k: v for k, v in ckpt.items() if k not in known and k != "format"})

    def to_dict(self) -> dict:
        """The file's content: plain types and tensors only."""
        out = {"format": FORMAT, **self.extra}
        out.update({f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"})
        return out

    def save(self, path: str | Path) -> None:
        """Write the checkpoint to ``path`` atomically."""
        atomic_save(self.to_dict(), path)

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> "Checkpoint":
        """Load with ``weights_only=True`` after checking the file's CRC-32s; raise
        :class:`CheckpointError` if it is missing, unsafe or not a zfnet checkpoint."""
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: checkpoint not found")
        check_crcs(path)
        try:
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as exc:  # pickle refusing a global, a truncated zip, not a torch file at all
            raise CheckpointError(
                f"{path}: refused to load as a zfnet checkpoint (weights_only=True): {first_line(exc)}"
            ) from None
        if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
            raise CheckpointError(f"{path}: not a zfnet checkpoint (expected format {FORMAT!r})")
        missing = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING
                   and f.name not in ckpt]
        if missing:
            raise CheckpointError(f"{path}: incomplete zfnet checkpoint, missing {', '.join(missing)}")
        return cls.from_dict(ckpt)

    def build(self) -> ConvNet:
        """The model, weights loaded, in eval mode."""
        from zfnet.config import ModelConfig

        model = build(ModelConfig(**self.model_config), self.num_classes, self.input_size, float(self.input_scale))
        model.load_state_dict(self.model)
        return model.eval()

    @property
    def inputs(self) -> InputSpec:
        """How the model sees images: the centre ``input_size`` crop of ``(pixels - mean) * input_scale``."""
        return InputSpec.mean_image(self.mean, float(self.input_scale), self.input_size)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """:meth:`Checkpoint.load` as the file's dict (for code that reads the keys)."""
    return Checkpoint.load(path, map_location).to_dict()


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[ConvNet, dict]:
    """``(model, checkpoint dict)`` from a checkpoint file; the model is in eval mode."""
    ckpt = Checkpoint.load(path, map_location)
    return ckpt.build(), ckpt.to_dict()


RESUME_FILE = "resume.pt"


class Checkpointer:
    """The training run's files: the resume state and milestones while it runs, the outs at the end.

    While training, everything lives in ``state_dir`` (NOT a DVC out, so a crash leaves the outs
    untouched): ``resume.pt`` (written atomically after every epoch) and ``epoch-NNN.pt`` for each
    milestone. :meth:`publish` links the milestones into ``out_dir/milestones/`` and writes
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
        """Link the milestones into ``out_dir/milestones/`` (:func:`~zfnet.io.link_file`: hard links,
        one copy on the disk, 2.2 GB for the paper profile) and write ``out_dir/model.pt`` (``final``)."""
        milestones_dir = self.out_dir / "milestones"
        if milestones_dir.exists():
            shutil.rmtree(milestones_dir)
        milestones_dir.mkdir(parents=True)
        for epoch in milestones:
            link_file(self.state_dir / f"epoch-{epoch:03d}.pt", milestones_dir / f"epoch-{epoch:03d}.pt")
        atomic_save(final, self.out_dir / "model.pt")
