"""Any folder of image files as a small in-memory dataset, preprocessed like the pipeline.

For the ``zfnet`` commands that run on a user's own images: every file under the folder is
decoded (:func:`zfnet.data.images.load_rgb`, large photographs shrunk while decoding), its
smallest side resized to ``size`` and the centre ``size x size`` crop kept, as the preprocess
stage does. Unreadable files are skipped and listed with their reason in :attr:`ImageFiles.skipped`.
Only the readable files' paths are kept: a batch is decoded again when it is asked for, so memory
does not grow with the folder.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from zfnet.data.imagenet import listed_file
from zfnet.data.images import BadImage, load_rgb, resize_center_crop

log = logging.getLogger(__name__)


class ImageFiles:
    """Images of ``root`` (a file or a folder, searched recursively) as ``uint8 (N, 3, size, size)``
    batches; ``max_pixels``: the decompression-bomb limit of :func:`~zfnet.data.images.load_rgb`.

    Has the :class:`~zfnet.data.shards.ShardDataset` access methods the viz passes use:
    ``len()``, ``get_batch(indices) -> (uint8 (B, 3, S, S), int64 (B,) zeros)`` and ``paths()``.
    """

    def __init__(self, root: str | Path, size: int, max_pixels: int | None = None):
        root = Path(root)
        if not root.exists():
            raise FileNotFoundError(f"{root}: no such file or folder")
        files = [root] if root.is_file() else sorted(
            p for p in root.rglob("*") if listed_file(p) and not p.name.startswith(".")
        )
        self.size, self.max_pixels = size, max_pixels
        self._paths, self.skipped = [], []
        for path in files:
            try:
                self._crop(path)
            except BadImage as exc:
                self.skipped.append((str(path), exc.reason))
                continue
            self._paths.append(str(path))
        if not self._paths:
            first = f": {self.skipped[0][0]}: {self.skipped[0][1]}, ..." if self.skipped else ""
            raise FileNotFoundError(f"{root}: no readable image found ({len(self.skipped)} unreadable files{first})")
        for path, reason in self.skipped:
            log.warning("skipping %s: %s", path, reason)

    def _crop(self, path: str | Path) -> np.ndarray:
        crop, _ = resize_center_crop(load_rgb(path, self.max_pixels, shrink_to=self.size), self.size)
        return np.ascontiguousarray(crop.transpose(2, 0, 1))

    def __len__(self) -> int:
        return len(self._paths)

    def get_batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The images at ``indices``, decoded now: ``(uint8 (B, 3, size, size), int64 (B,) zeros)``."""
        crops = np.stack([self._crop(self._paths[int(i)]) for i in indices])
        return torch.from_numpy(crops), torch.zeros(len(crops), dtype=torch.long)

    def paths(self) -> list[str]:
        return list(self._paths)
