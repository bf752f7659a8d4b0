"""The paper's preprocessing (docs/paper.md Sec. 3) into streamable shards.

Each image: decode robustly (:func:`zfnet.data.images.load_rgb`), resize the smallest side to
``S``, keep the centre ``S x S`` (:func:`zfnet.data.images.resize_center_crop`), map its object
box into the crop. The training split also gets the per-pixel mean over all its images. The
on-disk format (``zfnet-shards-v1``) is described in :mod:`zfnet.data.shards`.

Streaming: samples are read lazily, decoded in ``workers`` processes with the input order kept
(the output is the same for any number of workers), and written a shard at a time, so memory
holds about one shard (plus up to two windows of ``shard_size`` decoded images in flight).
``manifest.json`` is written last, atomically: a crash leaves no manifest, and readers refuse
the split. Every file is written atomically (:mod:`zfnet.io`): a full disk stops the run with one
line naming the file and the bytes it needs, and before any work :func:`preprocess` checks the
free space against its estimate (:func:`shard_bytes`).
"""

from __future__ import annotations

import csv
import multiprocessing
import os
from collections import deque
from contextlib import closing
from itertools import islice
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

import numpy as np
from tqdm import tqdm

from zfnet.data.imagenet import Sample, count_split, iter_split, read_classes
from zfnet.data.images import BadImage, load_rgb, map_box, resize_center_crop
from zfnet.data.shards import FORMAT, ShardError
from zfnet.io import atomic_file, check_free_space, write_json, write_npy

SPLITS = ("train", "val")
_Job = tuple[str, Optional[tuple[float, float, float, float]], int, Optional[int]]  # path, box, S, max_pixels
_Result = tuple[Optional[np.ndarray], np.ndarray, Optional[str]]  # crop (3, S, S), box (4,), reason


def prepare_image(job: _Job) -> _Result:
    """One image: ``(path, box, S, max_pixels)`` -> (uint8 ``(3, S, S)`` crop or None, float32 ``(4,)``
    box in crop pixels (NaN if unknown), reason it was skipped or None)."""
    path, box, size, max_pixels = job
    try:
        crop, transform = resize_center_crop(load_rgb(path, max_pixels), size)
    except BadImage as exc:
        return None, np.full(4, np.nan, np.float32), exc.reason
    mapped = np.full(4, np.nan, np.float32) if box is None else np.array(map_box(box, transform), np.float32)
    return crop.transpose(2, 0, 1).copy(), mapped, None


def _prepared(
    samples: Iterator[Sample], size: int, max_pixels: int | None, workers: int, window: int
) -> Iterator[tuple[Sample, _Result]]:
    """Each sample with its :func:`prepare_image` result, in input order, using ``workers`` processes.

    Samples go to the pool in windows of ``window``; the next window is submitted before the
    current one is consumed, so the workers do not wait and at most two windows are in flight.
    """
    windows = iter(lambda: list(islice(samples, window)), [])

    def jobs(batch: list[Sample]) -> list[_Job]:
        return [(str(s.path), s.box, size, max_pixels) for s in batch]

    if workers <= 1:
        for batch in windows:
            yield from zip(batch, map(prepare_image, jobs(batch)))
        return
    chunksize = max(1, min(32, window // (4 * workers)))
    with multiprocessing.Pool(workers) as pool:

        def submit(batch: list[Sample]) -> tuple[list[Sample], Iterator[_Result]]:
            return batch, pool.imap(prepare_image, jobs(batch), chunksize)

        pending = deque(map(submit, islice(windows, 1)))
        while pending:
            batch, results = pending.popleft()
            pending.extend(map(submit, islice(windows, 1)))
            yield from zip(batch, results)


def _remove_stale(out_dir: Path) -> None:
    """Delete a previous run's outputs, the manifest first (the split is incomplete from here on)."""
    (out_dir / "manifest.json").unlink(missing_ok=True)
    for stale in [*out_dir.glob("shard-*.npy"), out_dir / "index.csv", out_dir / "skipped.csv", out_dir / "mean.npy"]:
        stale.unlink(missing_ok=True)


def preprocess_split(
    samples: Iterable[Sample],
    root: str | Path,
    out_dir: str | Path,
    size: int,
    shard_size: int,
    workers: int,
    classes: Sequence[tuple[str, str]],
    total: int | None = None,
    progress: bool = True,
    mean: bool = False,
    max_pixels: int | None = None,
) -> dict:
    """Preprocess one split into shards in ``out_dir`` and return its manifest.

    Args:
        samples: the split's images in dataset order (``path``, ``label``, source ``box`` or None).
        root: the dataset root; paths in ``index.csv`` / ``skipped.csv`` are relative to it.
        out_dir: the split's output folder (created; a previous run's files are removed).
        size: ``S``, the side of the stored centre crops (256 in the paper).
        shard_size: images per shard file.
        workers: decoding processes (1: decode in this process).
        classes: ``(wnid, name)`` per class index.
        total: number of samples, for the progress bar only.
        progress: show a progress bar (only on a terminal).
        mean: also write ``mean.npy``, the per-pixel mean (the training split).
        max_pixels: decompression-bomb limit per image (see :func:`zfnet.data.images.load_rgb`).

    Raises:
        ShardError: no image of the split could be decoded (``skipped.csv`` says why).
    """
    root, out_dir = Path(root), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale(out_dir)
    root_abs = os.path.abspath(root)
    images = np.empty((shard_size, 3, size, size), np.uint8)
    labels = np.empty(shard_size, np.int64)
    boxes = np.empty((shard_size, 4), np.float32)
    pixel_sum = np.zeros((3, size, size), np.float64)
    shards: list[dict] = []
    found = skipped = filled = 0

    def flush() -> None:
        name = f"shard-{len(shards):05d}"
        files = {"images": f"{name}.images.npy", "labels": f"{name}.labels.npy", "boxes": f"{name}.boxes.npy"}
        for kind, array in (("images", images), ("labels", labels), ("boxes", boxes)):
            write_npy(out_dir / files[kind], array[:filled])
        if mean:
            pixel_sum[...] += images[:filled].sum(axis=0, dtype=np.float64)
        shards.append({**files, "count": filled})

    bar = tqdm(total=total, desc=f"preprocess {out_dir.name}", unit="img", disable=None if progress else True)
    results = _prepared(iter(samples), size, max_pixels, workers, shard_size)
    with bar, closing(results), atomic_file(out_dir / "index.csv", "w") as index_fh, \
            atomic_file(out_dir / "skipped.csv", "w") as skipped_fh:
        index, skips = csv.writer(index_fh), csv.writer(skipped_fh)
        index.writerow(["shard", "offset", "label", "path"])
        skips.writerow(["path", "reason"])
        for sample, (crop, box, reason) in results:  # closing(results) stops the pool on any exit
            found += 1
            bar.update()
            if not 0 <= sample.label < len(classes):
                raise ValueError(f"{sample.path}: label {sample.label} outside 0..{len(classes) - 1}")
            rel = os.path.relpath(os.path.abspath(sample.path), root_abs).replace(os.sep, "/")
            if crop is None:
                skipped += 1
                skips.writerow([rel, reason])
                bar.set_postfix(skipped=skipped, refresh=False)
                continue
            images[filled], labels[filled], boxes[filled] = crop, sample.label, box
            index.writerow([len(shards), filled, sample.label, rel])
            filled += 1
            if filled == shard_size:
                flush()
                filled = 0
        if filled:
            flush()
    return _finish(out_dir, size, classes, shards, found, skipped, pixel_sum if mean else None)


def _finish(out_dir: Path, size: int, classes: Sequence[tuple[str, str]], shards: list[dict], found: int,
            skipped: int, pixel_sum: np.ndarray | None) -> dict:
    """Check the split's counts, write ``mean.npy`` (given the training split's ``pixel_sum``) and,
    last, ``manifest.json``; return the manifest."""
    count = sum(shard["count"] for shard in shards)
    if count == 0:
        raise ShardError(f"{out_dir}: none of the {found} images found could be decoded (see skipped.csv)")
    if found != count + skipped:
        raise ShardError(f"{out_dir}: found {found} != written {count} + skipped {skipped}")
    if pixel_sum is not None:
        write_npy(out_dir / "mean.npy", (pixel_sum / count).astype(np.float32))
    manifest = {
        "format": FORMAT,
        "split": out_dir.name,
        "size": size,
        "count": count,
        "found": found,
        "skipped": skipped,
        "classes": [wnid for wnid, _ in classes],
        "class_names": [name for _, name in classes],
        "shards": shards,
        "mean": "mean.npy" if pixel_sum is not None else None,
    }
    write_json(out_dir / "manifest.json", manifest, sort_keys=False)
    return manifest


def shard_bytes(images: int, size: int) -> int:
    """Bytes that ``images`` images take in shards at side ``size``: 3 x S x S uint8 pixels, an int64
    label and 4 float32 box coordinates each, plus the float32 mean (``index.csv`` aside)."""
    return images * (3 * size * size + 8 + 16) + 3 * size * size * 4


def preprocess(
    root: str | Path, out: str | Path, size: int, shard_size: int, workers: int, progress: bool = True
) -> dict:
    """Preprocess the ImageNet-layout dataset at ``root`` into ``out/train`` and ``out/val``.

    The training split also gets ``mean.npy``. Returns ``{"train": manifest, "val": manifest}``.
    Refuses to start (:class:`zfnet.io.DiskFullError`) when the disk of ``out`` has less free
    space than the shards need (:func:`shard_bytes`; files in ``out`` it replaces count as free).
    """
    root, out = Path(root), Path(out)
    classes = read_classes(root)
    counts = {split: count_split(root, split) for split in SPLITS}
    replaced = sum(f.stat().st_size for f in out.rglob("*") if f.is_file() and f.stat().st_nlink == 1)
    check_free_space(out, shard_bytes(sum(counts.values()), size) - replaced,
                     f"the shards of {sum(counts.values()):,} images of 3 x {size} x {size} bytes")
    return {
        split: preprocess_split(
            iter_split(root, split), root, out / split, size, shard_size, workers, classes,
            total=counts[split], progress=progress, mean=split == "train",
        )
        for split in SPLITS
    }
