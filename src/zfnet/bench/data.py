"""The data path: preprocessing against decoding alone, a training epoch against pure compute, and
the loader alone at the paper's 224.

All run on a small dataset drawn by the real generator (:func:`zfnet.data.synthetic.write_imagenet`)
and prepared by the real preprocessing (:func:`zfnet.data.preprocess.preprocess`) in a temporary
folder (:class:`Scratch`), with the pipeline's ``preprocess`` and ``train`` settings.

- **preprocess**: the training split's JPEGs through :func:`preprocess_split` (decode, resize,
  centre crop, shards, mean) with 1 and with ``preprocess.workers`` processes, against
  :func:`load_rgb` alone on the same files in one process (decode-only); on the pipeline's small
  images and, in the full run, on ImageNet-sized ones (short side about 375, stored at 256).
- **loader, default**: one epoch of :func:`zfnet.train.loop.fit` (its ``train_seconds``: shard reads
  through :class:`ShardDataset`, in line or in reader threads as
  :func:`zfnet.train.runtime.reader_workers` decides, crops and normalisation on the device, and
  the steps) against the same number of steps of the same model on batches already cropped and
  normalised in memory. The ratio is the loader's overhead: 1.0 means the data path is hidden.
- **loader, 224**: the same images stored at 256 (the paper's shards: 196 KB each), read in
  batches of ``train.batch_size`` random images, and cut to one of the 10 crops at 224 and
  normalised (:func:`~zfnet.data.transforms.crop_normalize`): images/s per core of reading and of
  cropping (one thread each), of one reader thread (what a GPU host runs per core), and of the
  loop's whole data path on ``device``; judged against what the model step consumes at 224
  (:data:`H100_TRAIN_IMAGES_PER_S` projected for a 16-core H100 host, docs/cost.md; on a GPU the
  step measured by the ``train`` section).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import replace
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterator

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
from zfnet.data.transforms import WINDOWS, crop_normalize, ten_windows
from zfnet.train.loop import batches_of, fit
from zfnet.train.runtime import read_batches, reader_workers


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

    def prepared(self, size: int | None = None) -> Path:
        """:attr:`raw` preprocessed into shards of ``size x size`` images (None: ``preprocess.size``),
        made on first use."""
        p = self.cfg.preprocess
        out = self.dir / f"prepared-{size or p.size}"
        if not out.exists():
            preprocess(self.raw, out, size or p.size, p.shard_size, p.workers, progress=False)
        return out


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


def _data_batches(train_set, t, mean: torch.Tensor, seed: int, device: torch.device,
                  parts: dict[str, float]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The loop's data path for one epoch of ``train_set`` (shard reads in line, ``t.crops``
    windows cut and normalised with ``mean`` on ``device``), adding the seconds of each part to ``parts``."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(train_set), generator=gen).tolist()
    for indices in batches_of(order, t.batch_size):
        t0 = time.perf_counter()
        images, labels = train_set.get_batch(indices)
        t1 = time.perf_counter()
        windows = WINDOWS[t.crops](len(indices), images.shape[-1], t.crop, gen)
        x = crop_normalize(images.to(device), mean, windows, t.crop, t.input_scale)
        sync(device)
        t2 = time.perf_counter()
        for part, seconds in (("read_s", t1 - t0), ("crop_normalize_s", t2 - t1)):
            parts[part] = parts.get(part, 0.0) + seconds
        yield x, labels.to(device)


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

    Rounds alternate one :func:`fit` epoch (its ``train_seconds``), one in-memory epoch (the same
    number of steps of the same model) and the data path alone (``data``: reads, windows, crops and
    normalisation on ``device``, split into its parts); after ``rounds.warmup`` untimed rounds, the
    best of the timed ones is kept for each.

    Args:
        scratch: the dataset (its shards are made if needed).
        device: where both train.
        rounds: how many rounds.
        batch_size: overrides ``train.batch_size`` (small datasets in ``--quick``).

    Returns the result (``images``, ``steps``, ``rounds``, ``epoch_s``, ``compute_s``, ``overhead``
    = epoch / compute, ``images_per_s`` of both, ``data_s`` and its parts ``data_read_s``,
    ``data_crop_normalize_s``) and the target check (overhead <= 1.15).
    """
    cfg = scratch.cfg
    t = replace(cfg.train, epochs=1, milestones=[], eval_crops=1, device=device.type,
                batch_size=batch_size or cfg.train.batch_size)
    run_cfg = replace(cfg, train=t)
    prepared = scratch.prepared()
    train_set, val_set = ShardDataset(prepared / "train"), ShardDataset(prepared / "val")
    mean = load_mean(prepared)
    meta = {"classes": train_set.classes, "class_names": train_set.class_names}
    batches = list(_data_batches(train_set, t, mean, cfg.seed, device, {}))

    def fit_epoch() -> float:
        with tempfile.TemporaryDirectory(dir=scratch.dir) as d:
            record = fit(run_cfg, train_set, val_set, mean, Path(d) / "state", Path(d) / "out", meta, progress=False)
        return record["final"]["train_seconds"]

    data_parts: list[dict[str, float]] = []

    def data_only() -> float:
        parts: dict[str, float] = {}
        for _ in _data_batches(train_set, t, mean, cfg.seed, device, parts):
            pass
        data_parts.append(parts)
        return sum(parts.values())

    with loop_settings(t, device):
        trainer = Trainer(make_model(cfg.model, train_set.num_classes, t.crop, t, device, cfg.seed), t,
                          loop_variant(t, device))

        def compute() -> float:
            t0 = time.perf_counter()
            for x, y in batches:
                trainer.step(x, y)
            sync(device)
            return time.perf_counter() - t0

        seconds = _alternate({"epoch": fit_epoch, "compute": compute, "data": data_only}, rounds)
    best = {name: min(values) for name, values in seconds.items()}
    epoch, n = best["epoch"], len(train_set)
    result = {
        "images": n,
        "batch": t.batch_size,
        "steps": len(batches),
        "rounds": len(seconds["epoch"]),
        "reads": _reads(reader_workers(device, t.workers)),
        "epoch_s": epoch,
        "compute_s": best["compute"],
        "epoch_images_per_s": n / epoch,
        "compute_images_per_s": n / best["compute"],
        "overhead": epoch / best["compute"],
        "data_s": best["data"],
        **{f"data_{part}": min(p[part] for p in data_parts) for part in data_parts[0]},
    }
    return result, [target("loader: epoch time / pure compute time", result["overhead"], "<=", 1.15)]


def _reads(workers: int) -> str:
    """How the loop reads its batches with ``workers`` reader threads."""
    return f"{workers} reader threads" if workers else "in line"


GPU_HOST_CORES = 16  # the GPU host docs/cost.md sizes: 16 cores per GPU
# What the paper model's step consumes on one H100 (docs/cost.md): 40% of its 989 TFLOPS dense bf16
# peak / 7.01 GFLOP per image per step.
H100_TRAIN_IMAGES_PER_S = 0.4 * 989e12 / 7.01e9


def bench_loader_224(scratch: Scratch, device: torch.device, rounds: Rounds, batch: int, steps: int,
                     step_images_per_s: float | None = None) -> tuple[dict, list[dict]]:
    """The loader alone at the paper's size: ``steps`` batches of ``batch`` random images from shards
    of 256x256 images (:meth:`Scratch.prepared`), cut to one of the 10 crops at 224 and normalised.

    Contenders, alternated in rounds (:func:`_alternate`), each timed in its steady state (from its
    first batch on): ``read`` (:meth:`ShardDataset.get_batch` in line) and ``crop``
    (:func:`crop_normalize` of batches already read, on ``device``), each on one CPU thread (per
    core); ``reader`` (:func:`read_batches` in one reader thread, into pinned memory on a GPU: a GPU
    host's reading per core); ``loader`` (the loop's data path: reader threads as
    :func:`reader_workers` decides, pinned memory and an asynchronous copy on a GPU, crops there).

    ``step_images_per_s``: what the training step consumes at 224 on ``device`` (the ``train``
    section's loop variant), judged against where given. Returns the result (seconds and images/s
    of each, ``per_core_images_per_s`` = read + crop on one core, ``host_images_per_s`` = reading
    on a 16-core GPU host, ``headroom_h100`` and, with ``step_images_per_s``, ``headroom``) and the
    target checks (each headroom >= 3).
    """
    prepared = scratch.prepared(256)
    data, mean = ShardDataset(prepared / "train"), load_mean(prepared).to(device)
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, len(data), (batch,), generator=gen).tolist() for _ in range(steps)]
    windows = [ten_windows(batch, 256, 224, gen) for _ in range(steps)]
    read = [data.get_batch(b)[0].to(device) for b in batches[:4]]
    workers = reader_workers(device, 0)

    def steady(items: Callable[[], Iterator], one_thread: bool = False) -> Callable[[], float]:
        """A contender: the seconds ``items()`` takes from its first item to its last."""
        def run() -> float:
            threads = torch.get_num_threads()
            torch.set_num_threads(1 if one_thread else threads)
            try:
                it = iter(items())
                next(it)
                t0 = time.perf_counter()
                for _ in it:
                    pass
                sync(device)
                return time.perf_counter() - t0
            finally:
                torch.set_num_threads(threads)

        return run

    def loader(readers: int, crop: bool) -> Iterator:
        for (images, _), w in zip(read_batches(data, batches, readers, device.type == "cuda"), windows):
            images = images.to(device, non_blocking=True)
            yield crop_normalize(images, mean, w, 224, 1.0) if crop else images

    seconds = _alternate({
        "read": steady(lambda: (data.get_batch(b) for b in batches), one_thread=True),
        "crop": steady(lambda: (crop_normalize(read[i % len(read)], mean, w, 224, 1.0)
                                for i, w in enumerate(windows)), one_thread=True),
        "reader": steady(lambda: loader(1, crop=False)),
        "loader": steady(lambda: loader(workers, crop=True)),
    }, rounds)
    return _loader_224_result({name: min(v) for name, v in seconds.items()}, batch * (steps - 1), workers,
                              device, step_images_per_s)


def _loader_224_result(seconds: dict[str, float], images: int, workers: int, device: torch.device,
                       step_images_per_s: float | None) -> tuple[dict, list[dict]]:
    """:func:`bench_loader_224`'s result and target checks from the best ``seconds`` of each contender."""
    rate = {name: images / s for name, s in seconds.items()}
    host_readers = GPU_HOST_CORES - 2  # zfnet.train.runtime.reader_workers on such a host
    result = {
        "images": images,
        "reads": _reads(workers),
        **{f"{name}_s": s for name, s in seconds.items()},
        **{f"{name}_images_per_s": r for name, r in rate.items()},
        "per_core_images_per_s": images / (seconds["read"] + seconds["crop"]),
        "host_images_per_s": host_readers * rate["reader"],
        "h100_step_images_per_s": H100_TRAIN_IMAGES_PER_S,
        "headroom_h100": host_readers * rate["reader"] / H100_TRAIN_IMAGES_PER_S,
    }
    checks = [target(f"loader 224: {host_readers} reader threads (a {GPU_HOST_CORES}-core GPU host) / an H100's "
                     "training images/s (docs/cost.md)", result["headroom_h100"], ">=", 3.0)]
    if step_images_per_s:
        result["step_images_per_s"] = step_images_per_s
        result["headroom"] = rate["loader"] / step_images_per_s
        checks.append(target(f"loader 224: the loop's data path on {device.type} / its training images/s",
                             result["headroom"], ">=", 3.0))
    return result, checks
