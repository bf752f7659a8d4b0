"""Tables 2, 3 and Fig. 6: retrain each architecture variant with one budget and compare with the paper.

- :func:`train_variant` trains one variant (:mod:`zfnet.experiments.variants`) from scratch with
  :func:`zfnet.train.loop.fit` under the ablation budget (``ablation.epochs`` epochs on a seeded
  subset of ``ablation.train_per_class`` training images per class; everything else is the profile's
  recipe), and returns its errors.
- :func:`table3` / :func:`table2` put our errors beside the paper's, row by row;
  :func:`findings` tests the paper's conclusions on our numbers, with the sampling noise of the
  validation set (two binomial standard errors of a difference) as the bar for "significant".
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


def ablation_config(cfg: Config, name: str) -> Config:
    """Variant ``name`` of ``cfg`` under the ablation budget: ``ablation.epochs`` epochs, no milestones."""
    return apply(variant_config(cfg, name), {"train.epochs": cfg.ablation.epochs, "train.milestones": []},
                 f"ablation variant {name}")


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
    on_epoch: Callable[[dict], None] | None = None,
    progress: bool = True,
) -> dict:
    """Train variant ``name`` from scratch under the ablation budget; write ``out_dir/model.pt``.

    Args:
        cfg: the validated profile; its ``ablation`` section sets the budget.
        prepared: the prepared shards (``data/prepared``).
        out_dir: receives ``model.pt`` (the DVC out).
        state_dir: resume state (a killed run continues after its last finished epoch).
        on_epoch: called with each epoch's record (errors in %).

    Returns ``{"history": [...], "metrics": {...}}``; metrics: ``train_top1_error`` (last epoch's
    augmented mini-batches), ``val_top1_error`` / ``val_top5_error`` (``train.eval_crops`` crops),
    ``val_top1_error_center_crop``, ``val_images``, ``train_images``, ``epochs``, ``crop``,
    ``parameters``, ``train_seconds``. Errors in %.
    """
    from zfnet.data.shards import ShardDataset, data_id, load_mean
    from zfnet.train.loop import fit

    vcfg = ablation_config(cfg, name)
    prepared = Path(prepared)
    full = ShardDataset(prepared / "train")
    train_set = Subset(full, per_class_subset(full.labels(), cfg.ablation.train_per_class, cfg.seed))
    val_set = ShardDataset(prepared / "val")
    meta = {"classes": full.classes, "class_names": full.class_names, "data_id": data_id(prepared),
            "variant": name}
    result = fit(vcfg, train_set, val_set, load_mean(prepared), state_dir, out_dir, meta, on_epoch, progress)
    final, crops = result["final"], f"_{vcfg.train.eval_crops}crop" if vcfg.train.eval_crops > 1 else ""
    metrics = {
        "train_top1_error": final["train_top1_error"],
        "val_top1_error": final[f"val_top1_error{crops}"],
        "val_top5_error": final[f"val_top5_error{crops}"],
        "val_top1_error_center_crop": final["val_top1_error"],
        "val_images": len(val_set),
        "train_images": len(train_set),
        "epochs": final["epoch"],
        "crop": vcfg.train.crop,
        "parameters": sum(p.numel() for p in result["model"].parameters()),
        "train_seconds": sum(r["epoch_seconds"] for r in result["history"]),
    }
    return {"history": result["history"], "metrics": {k: round(v, 3) if isinstance(v, float) else v
                                                      for k, v in metrics.items()}}


def table3(results: Mapping[str, Mapping]) -> pd.DataFrame:
    """Table 3 with the paper's errors beside ours, one row per variant run (in ``results``' order).

    ``results``: ``{variant: metrics of train_variant}``. Columns: variant, change, paper row,
    paper base, paper/ours train top-1, val top-1, val top-5 (%), ours minus the baseline's val top-1.
    """
    base = results.get("zfnet", {}).get("val_top1_error", math.nan)
    rows = []
    for name, m in results.items():
        v = VARIANTS[name]
        paper = v.paper or (math.nan,) * 3
        row = {"variant": name, "change": v.change, "paper row": v.paper_row or "-",
               "paper base": v.paper_base if v.paper_row else "-"}
        for key, label, p in zip(ERRORS, ("train top-1", "val top-1", "val top-5"), paper):
            row[f"paper {label}"] = p
            row[f"ours {label}"] = m[key]
        row["ours val top-1 vs zfnet"] = m["val_top1_error"] - base
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
    """Table 2's single-net rows: the paper's val top-1 / top-5 error beside ours (NaN where not run here)."""
    rows = []
    for row, (top1, top5), name in TABLE2:
        m = results.get(name, {}) if name else {}
        rows.append({"model": row, "variant": name or "-", "paper val top-1": top1,
                     "ours val top-1": m.get("val_top1_error", math.nan), "paper val top-5": top5,
                     "ours val top-5": m.get("val_top5_error", math.nan)})
    return pd.DataFrame(rows)


def noise(p1: float, p2: float, n: int) -> float:
    """Two standard errors of the difference of two error rates ``p1``, ``p2`` (%) measured on ``n`` images each.

    Binomial: se = sqrt(p (1 - p) / n) with p at least 1/n (a 0% error still has sampling noise). In %.
    """
    var = sum(max(p / 100, 1 / n) * (1 - max(p / 100, 1 / n)) / n for p in (p1, p2))
    return 200 * math.sqrt(var)


def findings(results: Mapping[str, Mapping], filters: Mapping[str, Mapping] | None = None) -> list[dict]:
    """The paper's conclusions from Table 3 and Fig. 6, tested on our numbers.

    Each item: ``finding``, ``paper`` (what the paper measured), ``ours`` (what we measured),
    ``difference`` (the tested quantity, % points or a ratio), ``noise`` (two standard errors, where
    it applies), ``holds`` (the sign agrees with the paper), ``significant`` (beyond the noise).
    Findings whose variants were not run are left out.
    """
    r, f = results, filters or {}
    out = []

    def add(finding: str, paper: str, ours: str, diff: float, bar: float, holds: bool) -> None:
        out.append({"finding": finding, "paper": paper, "ours": ours, "difference": round(diff, 3),
                    "noise": round(bar, 3), "holds": bool(holds), "significant": bool(holds and abs(diff) > bar)})

    def val(name: str) -> float:
        return r[name]["val_top1_error"]

    def pair(a: str, b: str) -> tuple[float, float]:
        return val(a) - val(b), noise(val(a), val(b), int(r[a]["val_images"]))

    if {"zfnet", "no_conv3_conv4_fc6_fc7"} <= set(r):
        d, bar = pair("no_conv3_conv4_fc6_fc7", "zfnet")
        add("depth matters: removing layers 3,4,6,7 is much worse", "71.3 vs 38.4 (+32.9)",
            f"{val('no_conv3_conv4_fc6_fc7'):.1f} vs {val('zfnet'):.1f}", d, bar, d > 0)
        singles = [n for n in ("no_fc7", "no_fc6_fc7", "no_conv3_conv4") if n in r]
        if singles:
            worst = max(singles, key=val)
            d, bar = pair("no_conv3_conv4_fc6_fc7", worst)
            add("few layers matter alone: each single removal costs less than removing 3,4,6,7",
                "worst single removal 45.4 vs 71.3", f"worst single ({worst}) {val(worst):.1f} vs "
                f"{val('no_conv3_conv4_fc6_fc7'):.1f}", d, bar, d > 0)
    if {"zfnet", "conv_wide"} <= set(r):
        d, bar = pair("zfnet", "conv_wide")
        add("wider middle conv layers (3-5) help", "37.5 vs 38.4 (-0.9)",
            f"{val('conv_wide'):.1f} vs {val('zfnet'):.1f}", d, bar, d > 0)
    if {"zfnet", "fc_wide"} <= set(r):
        gap = {n: val(n) - r[n]["train_top1_error"] for n in ("zfnet", "fc_wide")}
        d = gap["fc_wide"] - gap["zfnet"]
        add("wider fc layers overfit: larger val - train gap than the baseline", "gap 16.8 vs 5.3",
            f"gap {gap['fc_wide']:.1f} vs {gap['zfnet']:.1f}", d, noise(val("fc_wide"), val("zfnet"),
                                                                          int(r["zfnet"]["val_images"])), d > 0)
    if {"zfnet", "krizhevsky"} <= set(r):
        d, bar = pair("krizhevsky", "zfnet")
        add("ZFNet's 7x7/2 layer 1 beats the 11x11/4 replica", "38.4 vs 40.5 (-2.1)",
            f"{val('zfnet'):.1f} vs {val('krizhevsky'):.1f}", d, bar, d > 0)
    if {"zfnet", "krizhevsky"} <= set(f):
        d = f["zfnet"]["band_energy"]["mid"] - f["krizhevsky"]["band_energy"]["mid"]
        add("11x11/4 filters cover mid frequencies less (Fig. 6b vs 6d)", "qualitative",
            f"mid-band share {f['krizhevsky']['band_energy']['mid']:.2f} vs {f['zfnet']['band_energy']['mid']:.2f}",
            d, math.nan, d > 0)
        d = f["krizhevsky"]["dead_fraction"] - f["zfnet"]["dead_fraction"]
        add("11x11/4 has more dead layer-1 filters (Fig. 6b)", "qualitative",
            f"dead {f['krizhevsky']['dead_fraction']:.2f} vs {f['zfnet']['dead_fraction']:.2f}", d, math.nan, d > 0)
    if {"zfnet", "no_renorm"} <= set(f):
        d = f["no_renorm"]["dominance"] - f["zfnet"]["dominance"]
        add("without renormalisation a few layer-1 filters dominate (Fig. 6a)", "qualitative",
            f"max / median filter RMS {f['no_renorm']['dominance']:.2f} vs {f['zfnet']['dominance']:.2f}",
            d, math.nan, d > 0)
    return out


def filter_comparison(models: Mapping[str, torch.nn.Module], out_dir: str | Path, dead_ratio: float = 0.1) -> dict:
    """Fig. 6 (a, b, d): each model's layer-1 filters (``<out_dir>/<name>/filters_conv1.png``) and a bar chart
    of their numbers (``<out_dir>/filters_conv1.png``).

    Returns ``{name: filter_stats + {"dominance": max / median filter RMS, "figure": path}}``.
    """
    from zfnet.viz.filters import BANDS, filters

    out_dir = Path(out_dir)
    stats = {}
    for name, model in models.items():
        weight = model.layer("conv1").conv.weight.detach()
        rms = weight.flatten(1).pow(2).mean(1).sqrt()
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
    projected by the deconvnet beside their patches (``<out_dir>/<name>/top9_conv2.png``). Returns ``{name: path}``."""
    from zfnet.data.shards import ShardDataset
    from zfnet.train.checkpoint import load_model
    from zfnet.viz.top9 import ShardImages, top9, top9_figures

    paths = {}
    for name, path in checkpoints.items():
        model, ckpt = load_model(path)
        data = ShardImages(ShardDataset(Path(prepared) / "val"), ckpt["mean"], ckpt.get("input_scale", 1.0),
                           ckpt["input_size"], batch_size, max_images)
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
    ax1.bar(x - 0.2, table["ours train top-1"], 0.4, label="train top-1")
    ax1.bar(x + 0.2, table["ours val top-1"], 0.4, label="val top-1")
    ax1.set(title="ours (ablation budget)", ylabel="error (%)")
    ax2.bar(x - 0.2, table["paper train top-1"], 0.4, label="train top-1")
    ax2.bar(x + 0.2, table["paper val top-1"], 0.4, label="val top-1")
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
