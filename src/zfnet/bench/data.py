"""The data path: preprocessing against decoding alone, and a training epoch against pure compute.

Both run on a small dataset drawn by the real generator (:func:`zfnet.data.synthetic.write_imagenet`)
and prepared by the real preprocessing (:func:`zfnet.data.preprocess.preprocess`) in a temporary
folder (:class:`Scratch`), with the pipeline's ``preprocess`` and ``train`` settings.

- **preprocess**: the training split's JPEGs through :func:`preprocess_split` (decode, resize,
  centre crop, shards, mean) with 1 and with ``preprocess.workers`` processes, against
  :func:`load_rgb` alone on the same files in one process (decode-only); on the pipeline's small
  images and, in the full run, on ImageNet-sized ones (short side about 375, stored at 256).
- **loader**: one epoch of :func:`zfnet.train.loop.fit` (its ``train_seconds``: shard reads through
  :class:`ShardDataset`, random crops, normalisation, in line or behind the prefetch thread as
  :func:`zfnet.train.loop.prefetch_depth` decides, and the steps) against
  the same number of steps of the same model on batches already cropped and normalised in memory.
  The ratio is the loader's overhead: 1.0 means the data path is completely hidden.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import replace
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch
from PIL import Image

from zfnet.bench.timing import Rounds, race, sync, target
from zfnet.bench.train import Trainer, loop_settings, loop_variant, make_model
from zfnet.config import Config
from zfnet.data.imagenet import iter_split, read_classes
from zfnet.data.images import load_rgb
from zfnet.data.preprocess import preprocess, preprocess_split
from zfnet.data.shards import ShardDataset, load_mean
from zfnet.data.synthetic import write_imagenet
from zfnet.data.transforms import center_crop, normalize, random_crops
from zfnet.train.loop import fit
from zfnet.train.runtime import prefetch


class Scratch:
    """A temporary folder with one synthetic dataset (``raw``) and its shards (``prepared``), each made
    on first use with ``cfg``'s generator and preprocessing settings; removed on exit."""

    def __init__(self, cfg: Config, classes: int, train_per_class: int, val_per_class: int):
        self.cfg = cfg
        self.synthetic = replace(cfg.data.synthetic, classes=classes, train_per_class=train_per_class,
                                 val_per_class=val_per_class)
        self.dir = Path(tempfile.mkdtemp(prefix="zfnet-bench-"))

    def __enter__(self) -> "Scratch":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Remove the folder and everything in it."""
        shutil.rmtree(self.dir, ignore_errors=True)

    @cached_property
    def raw(self) -> Path:
        """The dataset drawn with the pipeline's generator settings (and this scratch's counts)."""
        return self.draw("raw")

    def draw(self, name: str, **overrides) -> Path:
        """Draw a dataset into ``<dir>/<name>`` with :attr:`synthetic` changed by ``overrides``
        (e.g. ``min_side``, ``max_side``, ``train_per_class``)."""
        root = self.dir / name
        write_imagenet(root, replace(self.synthetic, **overrides), progress=False, workers=self.cfg.preprocess.workers)
        return root

    @cached_property
    def prepared(self) -> Path:
        p = self.cfg.preprocess
        preprocess(self.raw, self.dir / "prepared", p.size, p.shard_size, p.workers, progress=False)
        return self.dir / "prepared"


def bench_preprocess(scratch: Scratch, root: Path, size: int, rounds: Rounds) -> dict:
    """Images/s of decode-only and of the full preprocessing (1 and ``preprocess.workers`` processes)
    of the training JPEGs of the dataset at ``root``, into ``size x size`` crops.

    Returns ``images``, ``jpeg_side`` (mean of the source images' sides), ``size``, ``workers``,
    ``decode_images_per_s``, ``preprocess_images_per_s`` (1 process),
    ``preprocess_workers_images_per_s``, ``decode_share`` (decode time / preprocess time, 1 process)
    and ``workers_speedup``.
    """
    p = scratch.cfg.preprocess
    samples, classes = list(iter_split(root, "train")), read_classes(root)
    out = scratch.dir / f"preprocess-bench-{root.name}"

    def decode() -> None:
        for s in samples:
            load_rgb(s.path)

    def run(workers: int):
        return lambda: preprocess_split(samples, root, out / f"workers-{workers}", size, p.shard_size, workers,
                                        classes, progress=False, mean=True)

    contenders = {"decode": decode, "preprocess": run(1)}
    if p.workers > 1:
        contenders["preprocess_workers"] = run(p.workers)
    seconds = race(contenders, torch.device("cpu"), rounds)
    seconds.setdefault("preprocess_workers", seconds["preprocess"])
    n = len(samples)
    return {
        "images": n,
        "jpeg_side": sum(sum(Image.open(s.path).size) / 2 for s in samples) / n,
        "size": size,
        "workers": p.workers,
        "decode_images_per_s": n / seconds["decode"],
        "preprocess_images_per_s": n / seconds["preprocess"],
        "preprocess_workers_images_per_s": n / seconds["preprocess_workers"],
        "decode_share": seconds["decode"] / seconds["preprocess"],
        "workers_speedup": seconds["preprocess"] / seconds["preprocess_workers"],
    }


def _data_batches(train_set, t, crop_mean: torch.Tensor, seed: int, device: torch.device,
                  parts: dict[str, float]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The loop's data path for one epoch of ``train_set`` (shard reads, random ``t.crop`` crops,
    normalisation with ``crop_mean``), adding the seconds of each part to ``parts``."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(train_set), generator=gen).tolist()
    for i in range(0, len(order), t.batch_size):
        t0 = time.perf_counter()
        images, labels = train_set.get_batch(order[i : i + t.batch_size])
        t1 = time.perf_counter()
        crops = random_crops(images, t.crop, gen)
        t2 = time.perf_counter()
        x = normalize(crops, crop_mean, t.input_scale)
        t3 = time.perf_counter()
        for part, seconds in (("read_s", t1 - t0), ("crop_s", t2 - t1), ("normalize_s", t3 - t2)):
            parts[part] = parts.get(part, 0.0) + seconds
        yield x.to(device), labels.to(device)


def _alternate(contenders: dict[str, Callable[[], float]], rounds: Rounds) -> dict[str, list[float]]:
    """Run the ``contenders`` (each returns its seconds) in turn, ``rounds.warmup`` untimed rounds then
    timed ones while ``rounds.more`` says so; ``{name: [seconds per timed round]}``."""
    for _ in range(rounds.warmup):
        for fn in contenders.values():
            fn()
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    start = time.perf_counter()
    first = next(iter(contenders))
    while rounds.more(len(seconds[first]), time.perf_counter() - start):
        for name, fn in contenders.items():
            seconds[name].append(fn())
    return seconds


def bench_loader(scratch: Scratch, device: torch.device, rounds: Rounds,
                 batch_size: int | None = None) -> tuple[dict, list[dict]]:
    """A training epoch of the real loop against the same steps on tensors already in memory.

    Rounds alternate one :func:`fit` epoch (its ``train_seconds``) and one in-memory epoch (the same
    number of steps of the same model); after ``rounds.warmup`` untimed rounds, the best of the
    timed ones is kept for each.

    Args:
        scratch: the dataset (its ``prepared`` shards are made if needed).
        device: where both train.
        rounds: how many rounds.
        batch_size: overrides ``train.batch_size`` (small datasets in ``--quick``).

    Three more epochs in the same rounds say where an overhead comes from: the data path alone
    (``data``: read, crop, normalise, what the loop's prefetch thread does), the steps with the data
    path run in line (``inline``: no thread) and behind the loop's own :func:`prefetch` thread
    outside :func:`fit` (``prefetch``). On a CPU whose cores all run the training's threads, the
    prefetch thread competes with them rather than hiding the data path.

    Returns the result (``images``, ``steps``, ``rounds``, ``epoch_s``, ``compute_s``, ``overhead``
    = epoch / compute, ``images_per_s`` of both, ``inline_s``, ``prefetch_s`` and their overheads,
    ``data_s`` and its parts ``data_read_s``, ``data_crop_s``, ``data_normalize_s``) and the target
    check (overhead <= 1.15).
    """
    cfg = scratch.cfg
    t = replace(cfg.train, epochs=1, milestones=[], eval_crops=1, device=device.type,
                batch_size=batch_size or cfg.train.batch_size)
    run_cfg = replace(cfg, train=t)
    prepared = scratch.prepared
    train_set, val_set = ShardDataset(prepared / "train"), ShardDataset(prepared / "val")
    mean = load_mean(prepared)
    meta = {"classes": train_set.classes, "class_names": train_set.class_names}

    crop_mean = center_crop(mean, t.crop)

    def data_batches(parts: dict[str, float]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return _data_batches(train_set, t, crop_mean, cfg.seed, device, parts)

    batches = list(data_batches({}))

    def fit_epoch() -> float:
        with tempfile.TemporaryDirectory(dir=scratch.dir) as d:
            record = fit(run_cfg, train_set, val_set, mean, Path(d) / "state", Path(d) / "out", meta, progress=False)
        return record["final"]["train_seconds"]

    with loop_settings(t, device):
        trainer = Trainer(make_model(cfg.model, train_set.num_classes, t.crop, t, device, cfg.seed), t,
                          loop_variant(t, device))

        def train_on(source: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> Callable[[], float]:
            def epoch() -> float:
                t0 = time.perf_counter()
                for x, y in source if isinstance(source, list) else source():
                    trainer.step(x, y)
                sync(device)
                return time.perf_counter() - t0

            return epoch

        data_parts: list[dict[str, float]] = []

        def data_only() -> float:
            parts: dict[str, float] = {}
            for _ in data_batches(parts):
                pass
            data_parts.append(parts)
            return sum(parts.values())

        seconds = _alternate({"epoch": fit_epoch, "compute": train_on(batches),
                              "inline": train_on(lambda: data_batches({})),
                              "prefetch": train_on(lambda: prefetch(data_batches({}))), "data": data_only}, rounds)
    best = {name: min(values) for name, values in seconds.items()}
    epoch, compute = best["epoch"], best["compute"]
    n = len(train_set)
    result = {
        "images": n,
        "batch": t.batch_size,
        "steps": len(batches),
        "rounds": len(seconds["epoch"]),
        "epoch_s": epoch,
        "compute_s": compute,
        "epoch_images_per_s": n / epoch,
        "compute_images_per_s": n / compute,
        "overhead": epoch / compute,
        "inline_s": best["inline"],
        "prefetch_s": best["prefetch"],
        "inline_overhead": best["inline"] / compute,
        "prefetch_overhead": best["prefetch"] / compute,
        "data_s": best["data"],
        **{f"data_{part}": min(p[part] for p in data_parts) for part in data_parts[0]},
    }
    return result, [target("loader: epoch time / pure compute time", epoch / compute, "<=", 1.15)]
