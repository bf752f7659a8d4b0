"""Tables 2, 3 and Fig. 6 from the trained ablation variants (:mod:`zfnet.experiments.ablation`),
beside the paper's numbers.

- :func:`table3` / :func:`table2` put our errors beside the paper's, row by row (whether the
  paper's conclusions hold is judged by :mod:`zfnet.findings`).
- :func:`filter_comparison`, :func:`filter_numbers` and :func:`conv2_views` give Fig. 6: layer-1
  filters of ZFNet, ZFNet without renormalisation and the 11x11/4 replica (dead fraction,
  frequency bands, dominance), and the conv2 top-9 of the replica beside ZFNet's (the paper sees
  aliasing from stride 4 there); :func:`error_figure` the bars of Table 3, :func:`markdown` the
  ``results/ablation.md`` page.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
import torch

from zfnet.experiments.ablation import Resized, dominance
from zfnet.experiments.variants import VARIANTS

ERRORS = ("train_top1_error", "val_top1_error", "val_top5_error")


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
    from zfnet.viz.filters import BANDS, filters

    out_dir = Path(out_dir)
    stats = {}
    for name, model in models.items():
        weight = model.layer("conv1").conv.weight.detach()
        k = weight.shape[-1]
        stats[name] = filters(model, out_dir / name / "filters_conv1.png", dead_ratio,
                              title=f"{name}: conv1 {k}x{k}/{model.layer('conv1').conv.stride[0]}")
        stats[name]["dominance"] = dominance(weight)
    if stats:
        from zfnet.plotting import plt, save

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
        save(fig, out_dir / "filters_conv1.png", dpi=110)
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
    from zfnet.plotting import plt, save

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
    return save(fig, path, dpi=110)


def filter_numbers(path: str | Path, dead_ratio: float) -> dict:
    """Fig. 6's numbers of one checkpoint's layer-1 filters: dead fraction, frequency-band shares, dominance."""
    from zfnet.train.checkpoint import load_model
    from zfnet.viz.filters import filter_stats

    weight = load_model(path)[0].layer("conv1").conv.weight
    stats = filter_stats(weight, dead_ratio)
    return {"dead_fraction": stats["dead_fraction"], "dominance": dominance(weight),
            **{f"{band}_share": share for band, share in stats["band_energy"].items()}}


def markdown(table3: str, table2: str, filters: dict, budget: str) -> str:
    """``results/ablation.md``: Tables 3 and 2 (as Markdown), the Fig. 6 filter numbers per variant
    (:func:`filter_numbers` aggregated over the seeds) and the training ``budget`` in words."""
    fig6 = [{"variant": v, **{k: s[k] for k in s if k != "seeds"}} for v, s in filters.items()]
    lines = [
        "# Ablations (docs/paper.md Tables 2, 3, Fig. 6)", "",
        f"Every variant retrained from scratch with one budget: {budget}. Errors in %, mean and sd over "
        "the seeds; the paper's are ImageNet 2012 (1.3M images, 1000 classes, 70 epochs), so compare the "
        "differences between rows, not the levels. The paper removes layers from its Krizhevsky replica "
        "(column 'paper base'); here every change applies to ZFNet. Which of the paper's findings hold: "
        "`metrics/findings.json` and the report.", "",
        "## Table 3", "", table3, "",
        "## Table 2 (single nets, val error)", "", table2, "",
        "## Fig. 6: layer-1 filters (mean and sd over the seeds)", "",
        pd.DataFrame(fig6).to_markdown(index=False, floatfmt=".3f") if fig6 else "(no zfnet/no_renorm/krizhevsky run)",
        "", "Figures (first seed): `figures/ablation/<variant>/filters_conv1.png`, `figures/ablation/filters_conv1.png`, "
        "`figures/ablation/<variant>/top9_conv2.png` (conv2 aliasing view), `figures/ablation/errors.png`.", "",
    ]
    return "\n".join(lines)
