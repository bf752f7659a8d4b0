"""Tables 2, 3 and Fig. 6: retrain each architecture variant with one budget.

- :func:`train_variant` trains one variant (:mod:`zfnet.experiments.variants`) from scratch with
  :func:`zfnet.train.loop.fit` at the ablation scale and budget (:func:`ablation_config`: images
  shrunk to ``ablation.size``, ``ablation.epochs`` epochs on the profile's schedule, optionally a
  seeded subset of ``ablation.train_per_class`` training images per class; everything else is the
  profile's recipe), and returns its errors.
- :func:`train_seeds` trains it once per seed (:func:`ablation_seeds`); :func:`aggregate` gives the
  mean and sd over the seeds.

Tables 2, 3 and Fig. 6 from the trained variants: :mod:`zfnet.experiments.ablation_report`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from zfnet.config import Config
from zfnet.experiments.variants import apply, variant_config


def ablation_config(cfg: Config, name: str, seed: int | None = None) -> Config:
    """Variant ``name`` of ``cfg`` at the ablation scale and budget (``seed``: that training's seed).

    The ablation scale: images of side ``ablation.size`` (0: ``preprocess.size``) with
    ``ablation.crop`` crops (0: ``train.crop``); the budget: ``ablation.epochs`` epochs on the
    profile's schedule, no milestones, validation only after the last epoch (after every epoch on
    the paper's plateau schedule, which anneals on it).
    """
    a = cfg.ablation
    scale = {"preprocess.size": a.size or cfg.preprocess.size, "train.crop": a.crop or cfg.train.crop,
             "train.epochs": a.epochs, "train.milestones": [],
             "train.val_every": 1 if cfg.train.schedule == "plateau" else 0,
             "seed": cfg.seed if seed is None else seed}
    scaled = apply(cfg, scale, f"ablation variant {name}")
    return variant_config(scaled, name)


class Resized:
    """A dataset with ``get_batch`` whose images are shrunk to ``size`` x ``size`` (area filter), held
    in memory; the ablation scale (``ablation.size``). ``mean``: the resized per-pixel mean."""

    def __init__(self, dataset, size: int, mean: torch.Tensor):
        import torch.nn.functional as F

        self.classes, self.class_names, self.num_classes = dataset.classes, dataset.class_names, dataset.num_classes
        self.size = size
        images, labels = dataset.get_batch(np.arange(len(dataset)))
        shrink = lambda x: F.interpolate(x.float(), size=(size, size), mode="area")  # noqa: E731
        self.images = torch.cat([shrink(images[i : i + 512]).round_().to(torch.uint8) for i in range(0, len(images), 512)])
        self._labels, self.mean = labels, shrink(mean.float()[None])[0]

    def __len__(self) -> int:
        return len(self._labels)

    def get_batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return self.images[idx], self._labels[idx]

    def labels(self) -> np.ndarray:
        return self._labels.numpy()


def dominance(weight: torch.Tensor) -> float:
    """How much the strongest layer-1 filter dominates (Fig. 6): max / median filter RMS of conv
    weights ``(C_out, C_in, k, k)``."""
    from zfnet.models.filters import filter_rms

    rms = filter_rms(weight)
    return float(rms.max() / rms.median())


def per_class_subset(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Sorted indices of ``per_class`` images of each class (all of a class that has fewer), drawn with ``seed``.

    ``labels``: int ``(N,)``; ``per_class`` 0 means all images. Returns int64 ``(M,)``.
    """
    if per_class <= 0:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in np.unique(labels)]
    return np.sort(np.concatenate(chosen))


class Subset:
    """The images at ``indices`` of a dataset that has ``get_batch`` (e.g. :class:`~zfnet.data.shards.ShardDataset`)."""

    def __init__(self, dataset, indices: np.ndarray):
        self.dataset, self.indices = dataset, np.asarray(indices, dtype=np.int64)
        self.classes, self.class_names = dataset.classes, dataset.class_names

    @property
    def num_classes(self) -> int:
        return self.dataset.num_classes

    def __len__(self) -> int:
        return len(self.indices)

    def get_batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 ``(B, 3, S, S)`` images and int64 ``(B,)`` labels of subset positions ``indices``."""
        return self.dataset.get_batch(self.indices[np.asarray(indices, dtype=np.int64)])

    def labels(self) -> np.ndarray:
        return self.dataset.labels()[self.indices]


def train_variant(
    cfg: Config,
    name: str,
    prepared: str | Path,
    out_dir: str | Path,
    state_dir: str | Path,
    seed: int,
    on_epoch: Callable[[dict], None] | None = None,
    progress: bool = True,
) -> dict:
    """Train variant ``name`` from scratch with ``seed`` at the ablation scale and budget
    (:func:`ablation_config`); write ``out_dir/model.pt``.

    Args:
        cfg: the validated profile; its ``ablation`` section sets the scale and budget.
        prepared: the prepared shards (``data/prepared``).
        out_dir: receives ``model.pt`` (the DVC out).
        state_dir: resume state (a killed run continues after its last finished epoch).
        on_epoch: called with each epoch's record (errors in %).

    Returns ``{"history": [...], "metrics": {...}}``; metrics: ``train_top1_error`` (last epoch's
    augmented mini-batches), ``val_top1_error`` / ``val_top5_error`` (``train.eval_crops`` crops),
    ``val_top1_error_center_crop``, ``val_images``, ``train_images``, ``epochs``, ``size``, ``crop``,
    ``seed``, ``parameters``, ``train_seconds``, and the layer-1 filters' ``dominance`` (max / median
    RMS) and ``conv1_autocorrelation``. Errors in %.
    """
    from zfnet.data.shards import ShardDataset, data_id, load_mean
    from zfnet.train.loop import fit

    vcfg = ablation_config(cfg, name, seed)
    prepared = Path(prepared)
    full, val_set, mean = ShardDataset(prepared / "train"), ShardDataset(prepared / "val"), load_mean(prepared)
    if vcfg.preprocess.size != full.size:
        full, val_set = Resized(full, vcfg.preprocess.size, mean), Resized(val_set, vcfg.preprocess.size, mean)
        mean = full.mean
    train_set = Subset(full, per_class_subset(full.labels(), cfg.ablation.train_per_class, seed))
    meta = {"classes": full.classes, "class_names": full.class_names, "data_id": data_id(prepared),
            "variant": name}
    result = fit(vcfg, train_set, val_set, mean, state_dir, out_dir, meta, on_epoch, progress)
    final, crops = result["final"], f"_{vcfg.train.eval_crops}crop" if vcfg.train.eval_crops > 1 else ""
    metrics = {
        "train_top1_error": final["train_top1_error"],
        "val_top1_error": final[f"val_top1_error{crops}"],
        "val_top5_error": final[f"val_top5_error{crops}"],
        "val_top1_error_center_crop": final["val_top1_error"],
        "val_images": len(val_set),
        "train_images": len(train_set),
        "epochs": final["epoch"],
        "size": vcfg.preprocess.size,
        "crop": vcfg.train.crop,
        "seed": seed,
        "parameters": sum(p.numel() for p in result["model"].parameters()),
        "train_seconds": sum(r["epoch_seconds"] for r in result["history"]),
        "dominance": dominance(result["model"].layer("conv1").conv.weight),
        "conv1_autocorrelation": final["conv1_autocorrelation"],
        "filters_at_radius": max(r["filters_at_radius"] for r in result["history"]),
    }
    return {"history": result["history"], "metrics": {k: round(v, 4) if isinstance(v, float) else v
                                                      for k, v in metrics.items()}}


def ablation_seeds(cfg: Config) -> list[int]:
    """The seeds of a variant's ``ablation.seeds`` trainings: ``seed * 1000 + k``, so pipelines run
    with different ``seed`` train disjoint sets of seeds."""
    return [cfg.seed * 1000 + k for k in range(cfg.ablation.seeds)]


def _train_seed(job: tuple) -> dict:
    """One seed of :func:`train_seeds` in a worker process with ``threads`` CPU threads."""
    cfg, name, prepared, out_dir, state_dir, seed, threads = job
    torch.set_num_threads(threads)
    return train_variant(cfg, name, prepared, out_dir, state_dir, seed, progress=False)


def train_seeds(cfg: Config, name: str, prepared: str | Path, out_dir: str | Path, state_dir: str | Path) -> list[dict]:
    """Train variant ``name`` once per seed of :func:`ablation_seeds` into ``out_dir/seed-<s>/model.pt``.

    ``ablation.workers`` seeds train at once, each in its own process with an equal share of the
    CPU's threads (0: one process per core, at most one per seed): small nets use two
    one-thread processes better than one two-thread process (1.2x here). Each keeps its resume
    state in ``state_dir/seed-<s>``. Returns :func:`train_variant`'s result per seed, in order.
    """
    import multiprocessing as mp

    from zfnet.train.runtime import available_cores

    seeds = ablation_seeds(cfg)
    workers = min(cfg.ablation.workers or available_cores(), len(seeds))
    jobs = [(cfg, name, prepared, Path(out_dir) / f"seed-{s}", Path(state_dir) / f"seed-{s}", s,
             max(1, (cfg.train.threads or torch.get_num_threads()) // workers)) for s in seeds]
    if workers == 1:
        return [_train_seed(job) for job in jobs]
    with mp.get_context("spawn").Pool(workers) as pool:
        return pool.map(_train_seed, jobs, chunksize=1)


def aggregate(per_seed: Sequence[Mapping]) -> dict:
    """Mean and sample standard deviation over seeds of every number in the per-seed metrics.

    ``{"seeds": [s, ...], "<key>_mean": ..., "<key>_sd": ...}`` (sd 0 for one seed) for every
    float; integer counts that are the same for every seed (``val_images``, ``epochs``, ...) are
    kept as they are.
    """
    out: dict = {"seeds": [int(m["seed"]) for m in per_seed]}
    for key in per_seed[0]:
        if key == "seed":
            continue
        values = np.array([float(m[key]) for m in per_seed])
        if all(isinstance(m[key], int) for m in per_seed) and len(set(values.tolist())) == 1:
            out[key] = per_seed[0][key]
            continue
        out[f"{key}_mean"] = round(float(values.mean()), 4)
        out[f"{key}_sd"] = round(float(values.std(ddof=1)) if len(values) > 1 else 0.0, 4)
    return out
