"""Tables 4-6 and Fig. 9 (docs/paper.md): the transfer results (:mod:`zfnet.experiments.transfer`)
beside the paper's numbers, as tables, figures and the stage's metrics."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

# docs/paper.md "Transfer (Tables 4-6)": (dataset, training images per class) -> {model: (mean %, std %)}.
PAPER = {
    ("caltech101", 15): {"pretrained": (83.8, 0.5), "scratch": (22.8, 1.5)},
    ("caltech101", 30): {"pretrained": (86.5, 0.5), "scratch": (46.5, 1.7)},
    ("caltech256", 15): {"pretrained": (65.7, None), "scratch": (9.0, None)},
    ("caltech256", 30): {"pretrained": (70.6, None), "scratch": (22.5, None)},
    ("caltech256", 45): {"pretrained": (72.7, None), "scratch": (31.2, None)},
    ("caltech256", 60): {"pretrained": (74.2, None), "scratch": (38.8, None)},
    ("voc2012", None): {"pretrained": (79.0, None)},
}


def caltech_table(dataset: str, rows: list[dict]) -> pd.DataFrame:
    """Table 4 / 5: one row per (training images per class, model) with the paper's number beside ours."""
    out = []
    for r in rows:
        paper = PAPER.get((dataset, r["train_per_class"]), {}).get(r["model"], (None, None))
        out.append({"dataset": dataset, "train_per_class": r["train_per_class"], "model": r["model"],
                    "accuracy": r["accuracy"], "accuracy_std": r["accuracy_std"], "runs": r["runs"],
                    "paper_accuracy": paper[0], "paper_accuracy_std": paper[1]})
    return pd.DataFrame(out)


def voc_table(results: dict) -> pd.DataFrame:
    """Table 6: mean AP per model with the paper's number beside ours, then AP per class (the paper's
    per-class numbers are not in docs/paper.md: ``-``)."""
    out = []
    for model, r in results.items():
        paper = PAPER[("voc2012", None)].get(model, (None, None))[0]
        out.append({"dataset": "voc2012", "class": "mean (mAP)", "model": model, "ap": r["map"], "paper_ap": paper})
        out += [{"dataset": "voc2012", "class": c, "model": model, "ap": v, "paper_ap": None} for c, v in r["ap"].items()]
    return pd.DataFrame(out)


def caltech_runs(dataset: str, rows: list[dict]) -> dict[str, dict]:
    """One MLflow run's metrics per training-set size, ``{"<dataset>-<n>": {"train_per_class", "pretrained_accuracy",
    "pretrained_accuracy_std", "pretrained_runs", "scratch_...", "test_images"}}`` (accuracies in %, 3 decimals)."""
    runs: dict[str, dict] = {}
    for r in rows:
        run = runs.setdefault(f"{dataset}-{r['train_per_class']}", {"train_per_class": r["train_per_class"]})
        run.update({f"{r['model']}_accuracy": round(r["accuracy"], 3), f"{r['model']}_accuracy_std": round(r["accuracy_std"], 3),
                    f"{r['model']}_runs": r["runs"], "test_images": r["test_images"]})
    return runs


def voc_metrics(results: dict) -> dict:
    """``metrics/transfer_voc2012.json``: ``pretrained_map``, ``scratch_map`` and ``map_minus_scratch_se`` (points)."""
    metrics = {f"{model}_map": round(r["map"], 3) for model, r in results.items()}
    if "map_minus_scratch_se" in results["pretrained"]:
        metrics["map_minus_scratch_se"] = round(results["pretrained"]["map_minus_scratch_se"], 3)
    return metrics


def fig9(rows: list[dict], dataset: str, path: str | Path) -> Path:
    """Fig. 9: mean per-class accuracy against training images per class, pretrained and from
    scratch, ours (error bars: std over splits) and the paper's (dashed)."""
    from zfnet.plotting import plt, save

    fig, ax = plt.subplots(figsize=(5.2, 3.8), dpi=110)
    for model, colour in (("pretrained", "tab:blue"), ("scratch", "tab:red")):
        ours = [r for r in rows if r["model"] == model]
        if ours:
            ax.errorbar([r["train_per_class"] for r in ours], [r["accuracy"] for r in ours],
                        yerr=[r["accuracy_std"] for r in ours], marker="o", color=colour, capsize=3,
                        label=f"ours, {model}")
        paper = sorted((n, v[model][0]) for (d, n), v in PAPER.items() if d == dataset and model in v)
        if paper:
            ax.plot(*zip(*paper), "--", marker="s", mfc="none", color=colour, alpha=0.7, label=f"paper, {model}")
    ax.set(xlabel="training images per class", ylabel="mean per-class accuracy (%)", ylim=(0, 100),
           title=f"Fig. 9: {dataset}, pretrained vs from scratch")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return save(fig, path)


def ap_figure(results: dict, path: str | Path) -> Path:
    """Table 6 as a figure: average precision per VOC class, pretrained and from scratch, with the mAPs."""
    from zfnet.plotting import plt, save

    classes = list(next(iter(results.values()))["ap"])
    fig, ax = plt.subplots(figsize=(6.4, 5.2), dpi=110)
    height = 0.8 / len(results)
    for k, (model, r) in enumerate(results.items()):
        ax.barh([i + k * height for i in range(len(classes))], [r["ap"][c] for c in classes], height,
                label=f"{model} (mAP {r['map']:.1f}%)")
    paper = PAPER[("voc2012", None)]["pretrained"][0]
    ax.axvline(paper, color="k", ls="--", lw=1, label=f"paper mAP, pretrained ({paper}%)")
    ax.set_yticks([i + 0.4 - height / 2 for i in range(len(classes))], classes, fontsize=8)
    ax.invert_yaxis()
    ax.set(xlabel="average precision (%)", xlim=(0, 100), title="Table 6: VOC 2012 classification, AP per class")
    ax.legend(fontsize=8, loc="lower right")
    return save(fig, path)
