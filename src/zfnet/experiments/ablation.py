"""Tables 2, 3 and Fig. 6: retrain each architecture variant with one budget and compare with the paper.

- :func:`train_variant` trains one variant (:mod:`zfnet.experiments.variants`) from scratch with
  :func:`zfnet.train.loop.fit` at the ablation scale and budget (:func:`ablation_config`: images
  shrunk to ``ablation.size``, ``ablation.epochs`` epochs on the profile's schedule, optionally a
  seeded subset of ``ablation.train_per_class`` training images per class; everything else is the
  profile's recipe), and returns its errors.
- :func:`train_seeds` trains it once per seed (:func:`ablation_seeds`); :func:`aggregate` gives the
  mean and sd over the seeds;
- :func:`table3` / :func:`table2` put our errors beside the paper's, row by row (whether the
  paper's conclusions hold is judged by :mod:`zfnet.findings`).
- :func:`filter_comparison` and :func:`conv2_views` draw Fig. 6: layer-1 filters of ZFNet, ZFNet
  without renormalisation and the 11x11/4 replica (dead fraction, frequency bands, dominance), and
  the conv2 top-9 of the replica beside ZFNet's (the paper sees aliasing from stride 4 there).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from zfnet.config import Config
from zfnet.experiments.variants import VARIANTS, apply, variant_config

ERRORS = ("train_top1_error", "val_top1_error", "val_top5_error")


def ablation_config(cfg: Config, name: str, seed: int | None = None) -> Config:
    """Variant ``name`` of ``cfg`` at the ablation scale and budget (``seed``: that training's seed).

    The ablation scale: images of side ``ablation.size`` (0: ``preprocess.size``) with
    ``ablation.crop`` crops (0: ``train.crop``); the budget: ``ablation.epochs`` epochs on the
    profile's schedule, no milestones, validation only after the last epoch.
    """
    a = cfg.ablation
    scale = {"preprocess.size": a.size or cfg.preprocess.size, "train.crop": a.crop or cfg.train.crop,
             "train.epochs": a.epochs, "train.milestones": [], "train.val_every": 0,
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
    from zfnet.models.filters import filter_rms
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
    rms = filter_rms(result["model"].layer("conv1").conv.weight)
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
        "dominance": float(rms.max() / rms.median()),
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
    import os

    seeds = ablation_seeds(cfg)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = min(cfg.ablation.workers or cores, len(seeds))
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


def table3(results: Mapping[str, Mapping]) -> pd.DataFrame:
    """Table 3: our errors (mean and sd over the seeds) beside the paper's, one row per variant run.

    ``results``: ``{variant: metrics of the ablate stage}`` (:func:`aggregate`'s keys). Columns:
    ``variant``, ``change``, ``paper row``, ``paper base``, ``seeds``, then for train top-1, val top-1
    and val top-5: ``paper_<error>``, ``<error>_mean``, ``<error>_sd`` (%), and
    ``val_top1_error_vs_zfnet`` (our mean minus the baseline's).
    """
    base = results.get("zfnet", {}).get("val_top1_error_mean", math.nan)
    rows = []
    for name, m in results.items():
        v = VARIANTS[name]
        paper = v.paper or (math.nan,) * 3
        row = {"variant": name, "change": v.change, "paper row": v.paper_row or "-",
               "paper base": v.paper_base if v.paper_row else "-", "seeds": len(m["seeds"])}
        for key, p in zip(ERRORS, paper):
            row[f"paper_{key}"] = p
            row[f"{key}_mean"], row[f"{key}_sd"] = m[f"{key}_mean"], m[f"{key}_sd"]
        row["val_top1_error_vs_zfnet"] = m["val_top1_error_mean"] - base
        rows.append(row)
    return pd.DataFrame(rows)


# Table 2 (val top-1 / top-5 error %, single nets): rows and the variant that reproduces each (None: not run).
TABLE2 = (
    ("Krizhevsky et al. 2012, 1 convnet", (40.7, 18.2), None),
    ("Our replication of Krizhevsky et al., 1 convnet", (40.5, 18.1), "krizhevsky"),
    ("ZFNet (Fig. 3), 1 convnet", (38.4, 16.5), "zfnet"),
    ("ZFNet, layers 3,4,5: 512,1024,512 maps, 1 convnet", (37.5, 16.0), "conv_wide"),
)


def table2(results: Mapping[str, Mapping]) -> pd.DataFrame:
    """Table 2's single-net rows: the paper's val top-1 / top-5 error beside our mean and sd over
    the seeds (NaN where not run here)."""
    rows = []
    for row, (top1, top5), name in TABLE2:
        m = results.get(name, {}) if name else {}
        rows.append({"model": row, "variant": name or "-", "paper_val_top1_error": top1,
                     "val_top1_error_mean": m.get("val_top1_error_mean", math.nan),
                     "val_top1_error_sd": m.get("val_top1_error_sd", math.nan), "paper_val_top5_error": top5,
                     "val_top5_error_mean": m.get("val_top5_error_mean", math.nan),
                     "val_top5_error_sd": m.get("val_top5_error_sd", math.nan)})
    return pd.DataFrame(rows)


def filter_comparison(models: Mapping[str, torch.nn.Module], out_dir: str | Path, dead_ratio: float = 0.1) -> dict:
    """Fig. 6 (a, b, d): each model's layer-1 filters (``<out_dir>/<name>/filters_conv1.png``) and a bar chart
    of their numbers (``<out_dir>/filters_conv1.png``).

    Returns ``{name: filter_stats + {"dominance": max / median filter RMS, "figure": path}}``.
    """
    from zfnet.models.filters import filter_rms
    from zfnet.viz.filters import BANDS, filters

    out_dir = Path(out_dir)
    stats = {}
    for name, model in models.items():
        weight = model.layer("conv1").conv.weight.detach()
        rms = filter_rms(weight)
        k = weight.shape[-1]
        stats[name] = filters(model, out_dir / name / "filters_conv1.png", dead_ratio,
                              title=f"{name}: conv1 {k}x{k}/{model.layer('conv1').conv.stride[0]}")
        stats[name]["dominance"] = float(rms.max() / rms.median())
    if stats:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(12, 3.4), width_ratios=(2, 1, 1))
        names, x = list(stats), np.arange(len(stats))
        for i, band in enumerate(BANDS):
            ax1.bar(x + (i - 1) * 0.27, [stats[n]["band_energy"][band] for n in names], 0.27, label=band)
        ax1.set(xticks=x, xticklabels=names, ylabel="share of filter power", title="layer-1 frequency bands")
        ax1.legend(title="band")
        ax2.bar(x, [stats[n]["dead_fraction"] for n in names])
        ax2.set(xticks=x, xticklabels=names, title="dead filters (fraction)")
        ax3.bar(x, [stats[n]["dominance"] for n in names])
        ax3.set(xticks=x, xticklabels=names, title="max / median filter RMS")
        fig.tight_layout()
        out_dir.mkdir(parents=True, exist_ok=True)
        fig.savefig(out_dir / "filters_conv1.png", dpi=110)
        plt.close(fig)
    return stats


def conv2_views(checkpoints: Mapping[str, str | Path], prepared: str | Path, out_dir: str | Path, maps: int = 8,
                max_images: int | None = None, batch_size: int = 128) -> dict[str, str]:
    """Fig. 6 (c, e): the top-9 of the ``maps`` strongest conv2 maps over the validation set, per checkpoint,
    projected by the deconvnet beside their patches (``<out_dir>/<name>/top9_conv2.png``), on the
    validation images at the checkpoint's own scale (:class:`Resized`). Returns ``{name: path}``."""
    from zfnet.data.shards import ShardDataset, load_mean
    from zfnet.train.checkpoint import load_model
    from zfnet.viz.top9 import ShardImages, top9, top9_figures

    paths, val = {}, ShardDataset(Path(prepared) / "val")
    for name, path in checkpoints.items():
        model, ckpt = load_model(path)
        size = ckpt["mean"].shape[-1]
        images = val if size == val.size else Resized(val, size, load_mean(prepared))
        data = ShardImages(images, ckpt["mean"], ckpt.get("input_scale", 1.0), ckpt["input_size"], batch_size,
                           max_images)
        tops = top9(model, data, ["conv2"])
        paths[name] = str(top9_figures(model, tops, data.fetch, Path(out_dir) / name, maps, data.pixels)["conv2"])
    return paths


def error_figure(table: pd.DataFrame, path: str | Path) -> Path:
    """Bar chart of Table 3: val top-1 error per variant, ours beside the paper's, and our train top-1 error."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.arange(len(table))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4))
    ax1.bar(x - 0.2, table["train_top1_error_mean"], 0.4, yerr=table["train_top1_error_sd"], label="train top-1")
    ax1.bar(x + 0.2, table["val_top1_error_mean"], 0.4, yerr=table["val_top1_error_sd"], label="val top-1")
    ax1.set(title="ours (ablation scale and budget; mean and sd over seeds)", ylabel="error (%)")
    ax2.bar(x - 0.2, table["paper_train_top1_error"], 0.4, label="train top-1")
    ax2.bar(x + 0.2, table["paper_val_top1_error"], 0.4, label="val top-1")
    ax2.set(title="paper (ImageNet, Table 3)")
    for ax in (ax1, ax2):
        ax.set_xticks(x, table["variant"], rotation=45, ha="right", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_table(table: pd.DataFrame, stem: str | Path) -> tuple[Path, str]:
    """``<stem>.csv`` and the table as Markdown (returned, with NaN shown as ``-``). Numbers to 2 decimals."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(stem.with_suffix(".csv"), index=False, float_format="%.3f")
    shown = table.astype(object).where(table.notna(), None)  # tabulate writes missingval for None only
    return stem.with_suffix(".csv"), shown.to_markdown(index=False, floatfmt=".2f", missingval="-")
