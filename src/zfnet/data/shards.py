"""Reading the preprocessed shards (format ``zfnet-shards-v1``, written by :mod:`zfnet.data.preprocess`).

One folder per split, ``<prepared>/<split>/``:

- ``shard-NNNNN.images.npy``: uint8 ``(n, 3, S, S)`` centre crops (CHW); ``n <= shard_size``;
- ``shard-NNNNN.labels.npy``: int64 ``(n,)`` class indices into ``classes``;
- ``shard-NNNNN.boxes.npy``: float32 ``(n, 4)`` object box ``(x0, y0, x1, y1)`` in crop pixels,
  NaN where unknown;
- ``index.csv``: ``shard,offset,label,path`` per image, in dataset order (path relative to the
  dataset root); ``skipped.csv``: ``path,reason`` per unreadable file;
- ``mean.npy`` (train only): float32 ``(3, S, S)``, the per-pixel mean over all training images,
  0..255 units;
- ``manifest.json``, written last (its presence marks a complete split): ``format``, ``split``,
  ``size`` (S), ``count``, ``found``, ``skipped`` (``found == count + skipped``), ``classes``
  (wnids), ``class_names``, ``shards`` (``images``, ``labels``, ``boxes``, ``count`` each) and
  ``mean`` (``"mean.npy"`` or null).
"""

from __future__ import annotations

import csv
import hashlib
import json
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

FORMAT = "zfnet-shards-v1"
MAX_OPEN_SHARDS = 64  # memory maps kept open at once (each holds a file descriptor)


class ShardError(RuntimeError):
    """Prepared data that is missing, incomplete or inconsistent."""


def read_manifest(split_dir: str | Path) -> dict:
    """The checked ``manifest.json`` of one split folder; :class:`ShardError` if absent or wrong."""
    split_dir = Path(split_dir)
    path = split_dir / "manifest.json"
    if not path.is_file():
        raise ShardError(f"{split_dir}: no manifest.json; the preprocess stage did not complete (run dvc repro)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ShardError(f"{path}: not valid JSON ({exc}); rerun the preprocess stage") from exc
    if manifest.get("format") != FORMAT:
        raise ShardError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r} (run dvc repro)")
    total = sum(shard["count"] for shard in manifest["shards"])
    if total == 0:
        raise ShardError(f"{path}: the split holds no images")
    if total != manifest["count"] or manifest["found"] != manifest["count"] + manifest["skipped"]:
        raise ShardError(
            f"{path}: counts do not add up (shards hold {total}, count {manifest['count']}, "
            f"found {manifest['found']}, skipped {manifest['skipped']})"
        )
    return manifest


class ShardDataset(torch.utils.data.Dataset):
    """The images of one prepared split, read through memory maps (nothing loaded up front but labels).

    Attributes:
        manifest: the split's ``manifest.json``.
        classes: wnids, ``(num_classes,)``; class_names: their names.
        size: ``S``, the side of the stored crops.
    """

    def __init__(self, split_dir: str | Path):
        self.split_dir = Path(split_dir)
        self.manifest = read_manifest(self.split_dir)
        self.classes: list[str] = self.manifest["classes"]
        self.class_names: list[str] = self.manifest["class_names"]
        self.size: int = self.manifest["size"]
        shards = self.manifest["shards"]
        self._starts = np.cumsum([0] + [s["count"] for s in shards])  # (num_shards + 1,)
        self._labels = self._concat("labels")
        self._images: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()  # reader threads share the open memory maps

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        """Image ``i`` as uint8 ``(3, S, S)`` and its label."""
        images, labels = self.get_batch([i])
        return images[0], int(labels[0])

    def get_batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and labels at ``indices`` (in that order): uint8 ``(B, 3, S, S)``, int64 ``(B,)``.

        Reads each shard once per call (one fancy index into its memory map, in ascending offsets:
        each image is one contiguous ``3 x S x S``-byte range, 196 KB at 256, read front to back).
        """
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"index out of range for {len(self)} images: {idx.min()}..{idx.max()}")
        order = np.argsort(idx, kind="stable")  # by shard, then by offset
        shard_of = np.searchsorted(self._starts, idx, side="right") - 1
        shard_ids, first = np.unique(shard_of[order], return_index=True)
        out = np.empty((idx.size, 3, self.size, self.size), dtype=np.uint8)
        for k, group in zip(shard_ids, np.split(order, first[1:])):
            out[group] = self._shard_images(int(k))[idx[group] - self._starts[k]]
        return torch.from_numpy(out), torch.from_numpy(self._labels[idx])

    def labels(self) -> np.ndarray:
        """int64 ``(N,)`` class index of every image."""
        return self._labels.copy()

    def boxes(self) -> np.ndarray:
        """float32 ``(N, 4)`` object box ``(x0, y0, x1, y1)`` in crop pixels, NaN rows where unknown."""
        return self._concat("boxes")

    def paths(self) -> list[str]:
        """Source path of every image, relative to the dataset root, ``(N,)``."""
        with open(self.split_dir / "index.csv", newline="") as fh:
            paths = [row["path"] for row in csv.DictReader(fh)]
        if len(paths) != len(self):
            raise ShardError(f"{self.split_dir / 'index.csv'}: {len(paths)} rows for {len(self)} images")
        return paths

    def __getstate__(self) -> dict:
        """Pickle (e.g. to spawned processes) without the open memory maps and their lock."""
        return {k: v for k, v in self.__dict__.items() if k not in ("_images", "_lock")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _images=OrderedDict(), _lock=threading.Lock())

    def _concat(self, kind: str) -> np.ndarray:
        parts = []
        for shard in self.manifest["shards"]:
            part = np.load(self.split_dir / shard[kind])
            if len(part) != shard["count"]:
                raise ShardError(f"{self.split_dir / shard[kind]}: {len(part)} rows, manifest says {shard['count']}")
            parts.append(part)
        return np.concatenate(parts)

    def _shard_images(self, k: int) -> np.ndarray:
        """The memory map of shard ``k``'s images, ``(n, 3, S, S)`` (least recently used closed first;
        safe to call from several threads)."""
        with self._lock:
            images = self._images.pop(k, None)
            if images is None:
                shard = self.manifest["shards"][k]
                images = np.load(self.split_dir / shard["images"], mmap_mode="r")
                if images.shape != (shard["count"], 3, self.size, self.size):
                    raise ShardError(f"{self.split_dir / shard['images']}: shape {images.shape}, manifest says "
                                     f"{(shard['count'], 3, self.size, self.size)}")
            self._images[k] = images
            if len(self._images) > MAX_OPEN_SHARDS:
                self._images.popitem(last=False)
            return images


def data_id(prepared_dir: str | Path) -> str:
    """A fingerprint of the prepared data: the hash of both splits' manifests (16 hex digits)."""
    h = hashlib.sha256()
    for split in ("train", "val"):
        h.update((Path(prepared_dir) / split / "manifest.json").read_bytes())
    return h.hexdigest()[:16]


def load_mean(prepared_dir: str | Path) -> torch.Tensor:
    """The per-pixel training mean ``(3, S, S)`` float32 (0..255 units) from ``<prepared_dir>/train``."""
    train_dir = Path(prepared_dir) / "train"
    manifest = read_manifest(train_dir)
    if not manifest.get("mean"):
        raise ShardError(f"{train_dir}: the manifest names no mean.npy")
    mean = np.load(train_dir / manifest["mean"])
    size = manifest["size"]
    if mean.shape != (3, size, size):
        raise ShardError(f"{train_dir / manifest['mean']}: shape {mean.shape}, expected {(3, size, size)}")
    return torch.from_numpy(mean.astype(np.float32))
